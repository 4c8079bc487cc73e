"""AutoEncoder: self-supervised pretraining by masked reconstruction of the band values."""

import torch
from torch import Tensor, nn
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.wrappers import ClasswiseWrapper

from cmap.data.batch import Batch
from cmap.ml.base import SITSTask


def hide_random_dates(mask: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Choose about ``ratio`` of each series' valid dates to hide, keeping at least one visible.

    Shapes: mask (B, T) bool -> hidden (B, T) bool, a subset of ``mask``.
    """
    hidden = (torch.rand(mask.shape, device=mask.device, generator=generator) < ratio) & mask
    visible = mask & ~hidden
    none_visible = ~visible.any(dim=1)
    if none_visible.any():
        first_valid = mask.to(torch.uint8).argmax(dim=1)
        rows = torch.nonzero(none_visible).squeeze(1)
        hidden[rows, first_valid[rows]] = False
    return hidden


class AutoEncoder(SITSTask):
    """Masked reconstruction: hide random valid dates, reconstruct their band values.

    Hidden dates keep their day (the encoder sees *when* to reconstruct) but their values are
    zeroed and they are excluded as attention keys, so nothing leaks from them; the loss is the
    mean squared error over hidden dates only (padding never counts). Logged per epoch: the loss
    and the mean squared error of each band, named by band (``val/mse/ndvi``).

    Args:
        encoder: a :class:`~cmap.ml.encoders.SeriesEncoder`.
        decoder: a reconstruction head back to the bands, e.g.
            :class:`~cmap.ml.decoders.BandReconstruction`.
        mask_ratio: fraction of valid dates hidden per series.
        min_lr, max_lr, warmup_fraction, weight_decay, init_encoder_from: see :class:`~cmap.ml.base.SITSTask`.
    """

    _band_names: list[str] | None = None  # from the data module, at setup

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        mask_ratio: float = 0.5,
        min_lr: float = 1e-5,
        max_lr: float = 1e-4,
        warmup_fraction: float = 0.1,
        weight_decay: float = 0.01,
        init_encoder_from: str | None = None,
    ) -> None:
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        super().__init__(encoder, decoder, min_lr, max_lr, warmup_fraction, weight_decay, init_encoder_from)

    def reconstruct(self, batch: Batch, hidden: Tensor) -> Tensor:
        """Band values (B, T, C) predicted for every date from the visible dates only."""
        visible = batch["mask"] & ~hidden
        inputs = batch["values"].masked_fill(hidden.unsqueeze(-1), 0.0)
        return self.decoder(self.encoder(inputs, batch["days"], visible), visible)

    def reconstruction_loss(self, batch: Batch, hidden: Tensor) -> Tensor:
        """Mean squared error of the reconstructed band values over the ``hidden`` dates."""
        return self._reconstruction_error(batch, hidden)[0]

    def _reconstruction_error(self, batch: Batch, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, and reconstructed / true values (N hidden dates, C) for the metrics."""
        reconstruction = self.reconstruct(batch, hidden).float()
        squared_error = (reconstruction - batch["values"]).pow(2).mean(dim=-1)
        loss = (squared_error * hidden).sum() / hidden.sum().clamp_min(1)
        return loss, reconstruction[hidden], batch["values"][hidden]

    def configure_metrics(self) -> None:
        band_names = self._band_names or [str(i) for i in range(self.encoder.num_bands)]
        per_band = MeanSquaredError(num_outputs=len(band_names))
        metrics = MetricCollection({"mse": ClasswiseWrapper(per_band, band_names, prefix="mse/")})
        self.set_stage_metrics(metrics)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        band_names = getattr(getattr(self.trainer, "datamodule", None), "band_names", None)
        if band_names is not None and list(band_names) != self._band_names:
            self._band_names = list(band_names)
            self.reconfigure()

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        hidden = hide_random_dates(batch["mask"], self.hparams.mask_ratio)
        loss, reconstructed, target = self._reconstruction_error(batch, hidden)
        getattr(self, f"{stage}_metrics").update(reconstructed.detach(), target)
        self.log(f"{stage}/loss", loss, batch_size=len(hidden), on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")
