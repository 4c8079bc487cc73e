"""ContrastivePretraining: self-supervised pretraining by telling apart two views of each series.

SimCLR (Chen et al. 2020) on pixel series: each series is augmented twice (:class:`SeriesViews`:
a random run of dates, date dropout, band noise), both views are encoded and projected, and the
loss (NT-Xent) asks each view to pick its twin among the other views of the batch. Unlike masked
reconstruction, the objective asks for series-level features that survive clouds and partial
seasons (views: :class:`~cmap.data.perturbations.SeriesViews`). On UCR Crop with 10 labels per
class it did not beat reconstruction (fine-tuned: -0.7 points against training from scratch;
``benchmarks/README.md``, "Pretraining").
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from cmap.data.batch import Batch
from cmap.data.perturbations import SeriesViews
from cmap.ml.base import SITSTask


def nt_xent(first: Tensor, second: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """NT-Xent loss of paired embeddings (B, D), and whether each view's nearest other view is its twin."""
    embeddings = F.normalize(torch.cat([first, second]).float(), dim=1)
    similarity = embeddings @ embeddings.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    size = len(first)
    twins = torch.cat([torch.arange(size, 2 * size), torch.arange(size)]).to(similarity.device)
    return F.cross_entropy(similarity, twins), similarity.argmax(dim=1) == twins


class ContrastivePretraining(SITSTask):
    """Contrastive pretraining of the encoder: two views per series, NT-Xent over the batch.

    The negatives of a view are the other series of its batch (per process under DDP): larger
    batches give harder negatives (SimCLR uses hundreds). Logged per epoch: the loss and
    ``twin_accuracy``, the fraction of views whose most similar other view is their twin.
    Fine-tune with ``Classifier(init_encoder_from=<this checkpoint>)``; the projection head is
    dropped.

    Args:
        encoder: a :class:`~cmap.ml.encoders.SeriesEncoder`.
        decoder: the projection head, e.g. :class:`~cmap.ml.decoders.ProjectionHead`.
        views: the augmentation drawing each view (default ``SeriesViews()``).
        temperature: the softmax temperature of the similarities (SimCLR: 0.1 to 0.5).
        **kwargs: the optimiser and schedule settings of :class:`~cmap.ml.base.SITSTask` (the same
            defaults as every task: ``configs/ucr_crop_contrastive.yaml`` sets ``max_lr``).
    """

    #: Labels are not learnt from: stores with unlabelled series (label -1, or none) pretrain.
    needs_labels = False

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        views: SeriesViews | None = None,
        temperature: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().__init__(encoder, decoder, **kwargs)
        self.views = views if views is not None else SeriesViews()

    def configure_metrics(self) -> None:
        self.set_stage_metrics(MetricCollection({"twin_accuracy": MeanMetric()}))

    def embed_view(self, batch: Batch) -> Tensor:
        """The projected embedding (B, D) of a fresh random view of each series."""
        values, mask = self.views(batch["values"], batch["mask"])
        return self.decoder(self.encoder(values, batch["days"], mask), mask)

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        first, second = self.embed_view(batch), self.embed_view(batch)
        loss, found = nt_xent(first, second, self.hparams.temperature)
        getattr(self, f"{stage}_metrics").update(found.float())
        self.log_loss(stage, loss, len(first))
        return loss
