"""AutoEncoder: self-supervised pretraining by masked reconstruction of the band values."""

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from cmap.data.batch import Batch
from cmap.data.perturbations import Corruption, MaskingStrategy, RandomDates
from cmap.ml.base import SITSTask


class BandMeanSquaredError(Metric):
    """Mean squared error of each band over the scored elements only -> ``{"mse/<band>": value}``."""

    def __init__(self, band_names: list[str]) -> None:
        super().__init__()
        self.band_names = list(band_names)
        num_bands = len(self.band_names)
        self.add_state("squared_error", torch.zeros(num_bands, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(num_bands, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, reconstruction: Tensor, values: Tensor, target: Tensor) -> None:
        weight = target.to(torch.float64)
        self.squared_error += ((reconstruction.double() - values.double()).pow(2) * weight).flatten(0, -2).sum(0)
        self.count += weight.flatten(0, -2).sum(0)

    def compute(self) -> dict[str, Tensor]:
        mse = (self.squared_error / self.count.clamp_min(1)).float()
        return {f"mse/{name}": value for name, value in zip(self.band_names, mse, strict=True)}


class AutoEncoder(SITSTask):
    """Masked reconstruction: corrupt each series, reconstruct the original band values.

    The ``masking`` strategy (:mod:`cmap.data.perturbations`) chooses what the encoder sees and which
    elements are scored: random dates (default, half of them), contiguous date chunks, band
    groups, or SITS-BERT noise contamination. Hidden dates keep their day (the encoder sees *when*
    to reconstruct) but their values are zeroed and they are not attended to, so nothing leaks from
    them. The loss is the mean squared error over scored elements only: padding and clouded dates
    never count. Logged per epoch: the loss and the mean squared error of each band, named by band
    (``val/mse/ndvi``).

    Args:
        encoder: a :class:`~cmap.ml.encoders.SeriesEncoder`.
        decoder: a reconstruction head back to the bands, e.g.
            :class:`~cmap.ml.decoders.BandReconstruction`.
        masking: the corruption (default ``RandomDates(ratio=0.5)``).
        **kwargs: the optimiser and schedule settings of :class:`~cmap.ml.base.SITSTask`.
    """

    #: Labels are not learnt from: stores with unlabelled series (label -1, or none) pretrain.
    needs_labels = False

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, masking: MaskingStrategy | None = None, **kwargs: Any
    ) -> None:
        super().__init__(encoder, decoder, **kwargs)
        self.masking = masking if masking is not None else RandomDates(0.5)

    def reconstruct(self, corruption: Corruption, days: Tensor) -> Tensor:
        """Band values (B, T, C) predicted for every date from what the corruption leaves visible."""
        features = self.encoder(corruption.values, days, corruption.visible)
        return self.decoder(features, corruption.visible)

    def reconstruction_loss(self, batch: Batch, corruption: Corruption) -> tuple[Tensor, Tensor]:
        """Mean squared error over the corruption's target elements, and the reconstruction."""
        reconstruction = self.reconstruct(corruption, batch["days"]).float()
        weight = corruption.target.to(reconstruction.dtype)
        loss = ((reconstruction - batch["values"]).pow(2) * weight).sum() / weight.sum().clamp_min(1)
        return loss, reconstruction

    def configure_metrics(self) -> None:
        contract = getattr(self, "input_contract", None)  # named by the data's bands once known
        band_names = [str(i) for i in range(self.encoder.num_bands)] if contract is None else contract.band_names
        self.set_stage_metrics(MetricCollection({"mse": BandMeanSquaredError(band_names)}, compute_groups=False))

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        corruption = self.masking(batch["values"], batch["mask"])
        loss, reconstruction = self.reconstruction_loss(batch, corruption)
        getattr(self, f"{stage}_metrics").update(reconstruction.detach(), batch["values"], corruption.target)
        self.log_loss(stage, loss, len(reconstruction))
        return loss
