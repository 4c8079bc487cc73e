"""Classifier: a crop-type classifier trained from scratch or fine-tuned from a pretrained encoder."""

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCohenKappa, MulticlassF1Score

from cmap.data.batch import Batch
from cmap.ml.base import SITSTask
from cmap.ml.losses import FocalLoss, resolve_class_weights


class Classifier(SITSTask):
    """Per-series classification with a focal loss.

    Args:
        encoder: a :class:`~cmap.ml.encoders.SeriesEncoder`.
        decoder: a classification head with ``num_classes`` outputs, e.g.
            :class:`~cmap.ml.decoders.MultiClassClassification`.
        min_lr, max_lr, warmup_fraction, weight_decay: see :class:`~cmap.ml.base.SITSTask`.
        classes_weights: focal-loss alpha per class *name*; every class of the data module must be
            named, and no other (default: equal weights).
        focal_gamma: focal-loss gamma; 0 gives (weighted) cross-entropy.
        class_names: class names in index order; taken from the data module when omitted and
            then saved in the hyper-parameters, so checkpoints always carry them.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        min_lr: float = 1e-5,
        max_lr: float = 1e-4,
        warmup_fraction: float = 0.1,
        weight_decay: float = 0.01,
        classes_weights: Mapping[str, float] | None = None,
        focal_gamma: float = 2.0,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__(encoder, decoder, min_lr, max_lr, warmup_fraction, weight_decay)

    def configure_losses(self) -> None:
        # Class weights are given by name: with class_names known now, resolve them now (a
        # model loaded from a checkpoint); otherwise in setup(), from the data module.
        self.criterion = FocalLoss(self.hparams.focal_gamma)
        if self.hparams.class_names is not None:
            self._set_class_names(self.hparams.class_names)

    @property
    def num_classes(self) -> int:
        return self.decoder.num_classes

    def configure_metrics(self) -> None:
        k = self.num_classes
        metrics = MetricCollection(
            {
                "overall_accuracy": MulticlassAccuracy(k, average="micro"),
                "macro_f1": MulticlassF1Score(k, average="macro"),
                "kappa": MulticlassCohenKappa(k),
            }
        )
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def _set_class_names(self, class_names: list[str]) -> None:
        if len(class_names) != self.num_classes:
            raise ValueError(
                f"the decoder has num_classes={self.num_classes} outputs but the data has "
                f"{len(class_names)} classes: {list(class_names)}"
            )
        weights = self.hparams.classes_weights
        alpha = None if weights is None else resolve_class_weights(weights, class_names)
        self.criterion = FocalLoss(self.hparams.focal_gamma, alpha).to(self.device)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data_names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None)
        if self.hparams.class_names is None:
            if data_names is None:
                raise ValueError("Classifier needs class_names: give them or use a data module that has them")
            self._set_class_names(list(data_names))
            self.save_hyperparameters({"class_names": list(data_names)})
        elif data_names is not None and list(data_names) != list(self.hparams.class_names):
            raise ValueError(
                f"the model was built for classes {self.hparams.class_names} but the data module has {list(data_names)}"
            )

    def _shared_step(self, batch: Batch, metrics: MetricCollection, stage: str) -> Tensor:
        logits = self(batch["values"], batch["days"], batch["mask"])
        loss = self.criterion(logits, batch["label"])
        metrics.update(logits, batch["label"])
        batch_size = len(logits)
        self.log(f"{stage}/loss", loss, batch_size=batch_size, on_step=False, on_epoch=True, prog_bar=stage != "test")
        self.log_dict(metrics, batch_size=batch_size, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, self.train_metrics, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, self.val_metrics, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, self.test_metrics, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        probabilities = torch.softmax(self(batch["values"], batch["days"], batch["mask"]).float(), dim=-1)
        confidence, prediction = probabilities.max(dim=-1)
        return {"prediction": prediction, "confidence": confidence, "probabilities": probabilities}
