"""Classifier: a crop-type classifier trained from scratch or fine-tuned from a pretrained encoder."""

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCohenKappa,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper

from cmap.data.batch import Batch
from cmap.ml.base import SITSTask
from cmap.ml.losses import FocalLoss, resolve_class_weights


class Classifier(SITSTask):
    """Per-series classification with a focal loss.

    Logged per epoch for train/val/test: loss, overall accuracy, macro F1, Cohen's kappa, and
    precision / recall / F1 of each class, named by class (``val/f1/mais``). Validation and test
    steps return the predicted classes for the figure callbacks (:mod:`cmap.callbacks`).

    Args:
        encoder: a :class:`~cmap.ml.encoders.SeriesEncoder`.
        decoder: a classification head with ``num_classes`` outputs, e.g.
            :class:`~cmap.ml.decoders.MultiClassClassification`.
        min_lr, max_lr, warmup_fraction, weight_decay, init_encoder_from: see :class:`~cmap.ml.base.SITSTask`.
        classes_weights: focal-loss alpha per class *name*; every class of the data module must be
            named, and no other (default: equal weights).
        focal_gamma: focal-loss gamma; 0 gives (weighted) cross-entropy.
        label_smoothing: target mass spread uniformly over the classes (0 = none).
        class_names: class names in index order; taken from the data module when omitted and
            then saved in the hyper-parameters, so checkpoints always carry them.
        freeze_encoder_epochs: fine-tuning: train only the decoder for this many epochs (linear
            probing when it is the whole run).
        encoder_lr_factor: fine-tuning: the encoder's learning rates are this fraction of
            ``min_lr`` / ``max_lr``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        min_lr: float = 1e-5,
        max_lr: float = 1e-4,
        warmup_fraction: float = 0.1,
        weight_decay: float = 0.01,
        init_encoder_from: str | None = None,
        classes_weights: Mapping[str, float] | None = None,
        focal_gamma: float = 2.0,
        label_smoothing: float = 0.0,
        class_names: list[str] | None = None,
        freeze_encoder_epochs: int = 0,
        encoder_lr_factor: float = 1.0,
    ) -> None:
        if freeze_encoder_epochs < 0 or encoder_lr_factor <= 0:
            raise ValueError(
                f"need freeze_encoder_epochs >= 0 and encoder_lr_factor > 0, got {freeze_encoder_epochs}, "
                f"{encoder_lr_factor}"
            )
        super().__init__(encoder, decoder, min_lr, max_lr, warmup_fraction, weight_decay, init_encoder_from)

    def lr_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        encoder = list(self.encoder.parameters())
        ids = {id(p) for p in encoder}
        others = [p for p in self.parameters() if id(p) not in ids]
        return [(encoder, self.hparams.encoder_lr_factor), (others, 1.0)]

    def on_train_epoch_start(self) -> None:
        # Frozen parameters get no gradient, so AdamW leaves them (and their decay) alone.
        self.encoder.requires_grad_(self.current_epoch >= self.hparams.freeze_encoder_epochs)

    @property
    def num_classes(self) -> int:
        return self.decoder.num_classes

    @property
    def class_names(self) -> list[str]:
        """The class names in output order (indices as strings until the data gives names)."""
        return self.hparams.class_names or [str(i) for i in range(self.num_classes)]

    def configure_losses(self) -> None:
        # Class weights are given by name, so they wait for the class names (init or setup).
        names, weights = self.hparams.class_names, self.hparams.classes_weights
        alpha = None
        if names is not None:
            if len(names) != self.num_classes:
                raise ValueError(
                    f"the decoder has num_classes={self.num_classes} outputs but the data has "
                    f"{len(names)} classes: {list(names)}"
                )
            if weights is not None:
                alpha = resolve_class_weights(weights, names)
        self.criterion = FocalLoss(self.hparams.focal_gamma, alpha, self.hparams.label_smoothing)

    def configure_metrics(self) -> None:
        k, names = self.num_classes, self.class_names
        metrics = MetricCollection(
            {
                "overall_accuracy": MulticlassAccuracy(k, average="micro"),
                "macro_f1": MulticlassF1Score(k, average="macro"),
                "kappa": MulticlassCohenKappa(k),
                "precision": ClasswiseWrapper(MulticlassPrecision(k, average=None), names, prefix="precision/"),
                "recall": ClasswiseWrapper(MulticlassRecall(k, average=None), names, prefix="recall/"),
                "f1": ClasswiseWrapper(MulticlassF1Score(k, average=None), names, prefix="f1/"),
            },
            # Compute groups share states between metrics and mis-count ClasswiseWrapper updates.
            compute_groups=False,
        )
        self.set_stage_metrics(metrics)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data_names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None)
        if self.hparams.class_names is None:
            if data_names is None:
                raise ValueError("Classifier needs class_names: give them or use a data module that has them")
            self.save_hyperparameters({"class_names": list(data_names)})
            self.reconfigure()
        elif data_names is not None and list(data_names) != list(self.hparams.class_names):
            raise ValueError(
                f"the model was built for classes {self.hparams.class_names} but the data module has {list(data_names)}"
            )

    def _shared_step(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        logits = self(batch["values"], batch["days"], batch["mask"])
        loss = self.criterion(logits, batch["label"])
        getattr(self, f"{stage}_metrics").update(logits, batch["label"])
        self.log_loss(stage, loss, len(logits))
        return {"loss": loss, "prediction": logits.detach().argmax(dim=-1)}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")["loss"]

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        probabilities = torch.softmax(self(batch["values"], batch["days"], batch["mask"]).float(), dim=-1)
        confidence, prediction = probabilities.max(dim=-1)
        return {"prediction": prediction, "confidence": confidence, "probabilities": probabilities}
