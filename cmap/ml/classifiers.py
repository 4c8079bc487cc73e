"""Classifier: a crop-type classifier trained from scratch or fine-tuned from a pretrained encoder."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassCohenKappa

from cmap.data.batch import Batch
from cmap.data.contract import InputContract
from cmap.data.perturbations import SeriesMixing
from cmap.ml.base import SITSTask
from cmap.ml.consistency import Consistency, Teacher, concat_batches
from cmap.ml.losses import FocalLoss, resolve_class_weights
from cmap.ml.metrics import ClassScores, DeferredMetrics, DefinedClasswise

#: The checkpoint key of a consistency fit's running state (:meth:`Classifier.on_save_checkpoint`).
CONSISTENCY_KEY = "cmap_consistency_state"


class Classifier(SITSTask):
    """Per-series classification with a focal loss.

    Logged per epoch for train/val/test: loss, overall accuracy, macro F1, Cohen's kappa, and
    precision / recall / F1 of each class, named by class (``val/f1/mais``). A per-class score that
    is 0/0 in the evaluated series is not logged (precision of a class never predicted, recall of a
    class without true series, F1 of a class neither true nor predicted, e.g. a class the test
    set lacks and the model never predicts), and the macro F1 is the mean of the logged F1s: that
    of scikit-learn's ``f1_score(average="macro")`` (:class:`~cmap.ml.metrics.ClassScores`). A class
    with true series that is never predicted has F1 0 and counts. Validation and test steps return
    the predicted classes for the figure callbacks (:mod:`cmap.callbacks`).

    Args:
        encoder: a :class:`~cmap.ml.encoders.SeriesEncoder`.
        decoder: a classification head with ``num_classes`` outputs, e.g.
            :class:`~cmap.ml.decoders.MultiClassClassification`.
        classes_weights: focal-loss alpha per class *name*; every class of the data module must be
            named, and no other (default: equal weights).
        focal_gamma: focal-loss gamma; 0 gives (weighted) cross-entropy.
        label_smoothing: target mass spread uniformly over the classes (0 = none).
        class_names: class names in index order, for a model used without a data module;
            otherwise they come with the data's input contract (and must agree when both are given).
        freeze_encoder_epochs: fine-tuning: train only the decoder for this many epochs (linear
            probing when it is the whole run).
        encoder_lr_factor: fine-tuning: the encoder's learning rates are this fraction of
            ``min_lr`` / ``max_lr``.
        mixing: mixup or CutMix of training series with mixed targets
            (:class:`~cmap.data.perturbations.SeriesMixing`; none by default). Training metrics are
            then scored against each mixed series' larger share.
        consistency: FixMatch-style training on unlabelled series (:class:`~cmap.ml.consistency.Consistency`;
            none by default): training batches are then ``{"labelled": Batch, "unlabelled": Batch}``
            (a data module's ``unlabelled`` series). Not combined with ``mixing``. Its running state
            (teacher, running means) is saved in checkpoints, and a fit resumed from one restores it.
        **kwargs: the optimiser and schedule settings of :class:`~cmap.ml.base.SITSTask`
            (``min_lr``, ``max_lr``, ``warmup_fraction``, ``weight_decay``, ``init_encoder_from``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        classes_weights: Mapping[str, float] | None = None,
        focal_gamma: float = 2.0,
        label_smoothing: float = 0.0,
        class_names: list[str] | None = None,
        freeze_encoder_epochs: int = 0,
        encoder_lr_factor: float = 1.0,
        mixing: SeriesMixing | None = None,
        consistency: Consistency | None = None,
        **kwargs: Any,
    ) -> None:
        if mixing is not None and consistency is not None:
            raise ValueError("Classifier: mixing and consistency are not combined; give one of them")
        if freeze_encoder_epochs < 0 or encoder_lr_factor <= 0:
            raise ValueError(
                f"need freeze_encoder_epochs >= 0 and encoder_lr_factor > 0, got {freeze_encoder_epochs}, "
                f"{encoder_lr_factor}"
            )
        if class_names is not None and getattr(decoder, "num_classes", 0) is None:
            decoder.bind_classes(class_names)  # a decoder that leaves its classes to the data gets these
        super().__init__(encoder, decoder, **kwargs)
        self.mixing = mixing
        self.consistency = consistency
        if class_names is None:
            # The data's input contract names the classes: no second, empty copy in the
            # hyper-parameters (it would also clash with a data module's own class_names argument).
            self.drop_hyperparameters("class_names")

    def lr_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        encoder = list(self.encoder.parameters())
        ids = {id(p) for p in encoder}
        others = [p for p in self.parameters() if id(p) not in ids]
        return [(encoder, self.hparams.encoder_lr_factor), (others, 1.0)]

    def on_train_epoch_start(self) -> None:
        # Frozen parameters get no gradient, so AdamW leaves them (and their decay) alone.
        self.encoder.requires_grad_(self.current_epoch >= self.hparams.freeze_encoder_epochs)

    @property
    def num_classes(self) -> int | None:
        """Output classes (None until the data gives them, when the decoder left them open)."""
        return self.decoder.num_classes

    def bind_to_data(self, contract: InputContract) -> None:
        super().bind_to_data(contract)
        if contract.class_names is not None and hasattr(self.decoder, "bind_classes"):
            self.decoder.bind_classes(contract.class_names)
        if contract.date_grid is not None and hasattr(self.decoder, "bind_date_grid"):
            self.decoder.bind_date_grid(contract.date_grid)

    @property
    def known_class_names(self) -> list[str] | None:
        """The class names of the input contract, else of the arguments, else None."""
        contract = getattr(self, "input_contract", None)
        if contract is not None and contract.class_names is not None:
            return list(contract.class_names)
        given = self.hparams.get("class_names")
        return None if given is None else list(given)

    @property
    def class_names(self) -> list[str]:
        """The class names in output order (indices as strings until the data gives names)."""
        return self.known_class_names or [str(i) for i in range(self.num_classes or 0)]

    def configure_losses(self) -> None:
        # Class weights are given by name, so they wait for the class names (init or setup).
        names, weights = self.known_class_names, self.hparams.classes_weights
        alpha = None
        if names is not None:
            if self.num_classes is not None and len(names) != self.num_classes:
                raise ValueError(
                    f"the decoder has num_classes={self.num_classes} outputs but the data has "
                    f"{len(names)} classes: {list(names)}"
                )
            if weights is not None:
                alpha = resolve_class_weights(weights, names)
        self.criterion = FocalLoss(self.hparams.focal_gamma, alpha, self.hparams.label_smoothing)

    def configure_metrics(self) -> None:
        k, names = self.num_classes, self.class_names
        if k is None:  # the classes come with the data: metrics are made when it binds them
            return
        metrics = DeferredMetrics(
            {
                "overall_accuracy": MulticlassAccuracy(k, average="micro"),
                # Over the classes true or predicted in the evaluated series: a class neither true nor
                # predicted is no F1 of 0, and no per-class score is logged where it is 0/0 (ClassScores).
                "macro_f1": ClassScores(k, "f1", average="macro"),
                "kappa": MulticlassCohenKappa(k),
                **{
                    score: DefinedClasswise(ClassScores(k, score), names, prefix=f"{score}/")
                    for score in ("precision", "recall", "f1")
                },
            },
            # Compute groups share states between metrics and mis-count ClasswiseWrapper updates.
            compute_groups=False,
            # Updated in bulk: per-batch updates would make a GPU step wait for the metrics (cmap.ml.metrics).
        )
        self.set_stage_metrics(metrics)

    def set_input_contract(self, contract: InputContract) -> None:
        given = self.hparams.get("class_names")
        if given is not None and contract.class_names is not None and list(contract.class_names) != list(given):
            raise ValueError(
                f"the model was built for classes {list(given)} but the data has {list(contract.class_names)}"
            )
        super().set_input_contract(contract)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.known_class_names is None:
            raise ValueError("Classifier needs class_names: give them or use a data module that has them")

    # Ensembles: other trained classifiers whose probabilities are averaged with this one's.

    def ensemble_with(self, members: Sequence["Classifier"], sources: Sequence[str]) -> None:
        """From now on, every forward pass averages the class probabilities of this model and of
        ``members`` (trained classifiers, e.g. other seeds; ``sources`` name them in errors).

        Members must have the same input contract (bands, classes, normalisation, time axis): each
        sees the inputs prepared for this model. It is checked here when this model's contract is
        known, else when testing or predicting starts (a checkpoint restored by the trainer brings it).
        Members are not part of this model's weights or checkpoints.
        """
        # A plain list, not a ModuleList: the members' weights stay out of this model's state dict.
        self.__dict__["ensemble_members"] = [
            (member.eval(), str(source)) for member, source in zip(members, sources, strict=True)
        ]
        if self.input_contract is not None:
            self.check_ensemble()

    def check_ensemble(self) -> None:
        for member, source in self.__dict__.get("ensemble_members", []):
            if member.input_contract != self.input_contract:
                mine, theirs = self.input_contract.to_dict(), member.input_contract.to_dict()
                fields = [key for key in mine if mine[key] != theirs[key]]
                raise ValueError(
                    f"{source}: an ensemble member's input contract differs from the model's in {fields}: members "
                    "must share bands, classes, normalisation and time axis (models trained on the same data)"
                )
            member.to(self.device)

    def on_test_start(self) -> None:
        self.check_ensemble()

    def on_predict_start(self) -> None:
        self.check_ensemble()

    def forward(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        """Logits; for an ensemble, the log of the members' mean probabilities (their softmax is that mean)."""
        logits = super().forward(values, days, mask)
        members = self.__dict__.get("ensemble_members")
        if not members:
            return logits
        probabilities = torch.softmax(logits.float(), dim=-1)
        for member, _ in members:
            probabilities = probabilities + torch.softmax(member(values, days, mask).float(), dim=-1)
        return (probabilities / (len(members) + 1)).clamp_min(1e-12).log()

    def _shared_step(
        self, batch: Batch, stage: str, partner: Tensor | None = None, lam: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Loss, metrics and predictions of ``batch``; with ``partner`` and ``lam`` (:class:`SeriesMixing`),
        of mixed series: mixed targets, metrics scored against each series' larger share."""
        logits = self(batch["values"], batch["days"], batch["mask"])
        target = scored = batch["label"]
        if partner is not None:
            one_hot = torch.zeros_like(logits).scatter_(-1, target.unsqueeze(-1), 1.0)  # no host read, unlike F.one_hot
            weight = lam.to(logits.dtype).unsqueeze(1)
            target = weight * one_hot + (1 - weight) * one_hot[partner]
            scored = torch.where(lam >= 0.5, scored, scored[partner])
        loss = self.criterion(logits, target)
        getattr(self, f"{stage}_metrics").update(logits, scored)
        self.log_loss(stage, loss, len(logits))
        return {"loss": loss, "prediction": logits.detach().argmax(dim=-1)}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if "unlabelled" in batch:
            return self._consistency_step(batch["labelled"], batch["unlabelled"])
        if self.consistency is not None:
            raise ValueError(
                "Classifier has `consistency` but its training batches carry no unlabelled series: give the data "
                "module's `unlabelled` store (SeriesStore, StreamingSeriesStore)"
            )
        if self.mixing is None:
            return self._shared_step(batch, "train")["loss"]
        mixed, partner, lam = self.mixing(batch)
        return self._shared_step(mixed, "train", partner, lam)["loss"]

    def _consistency_step(self, labelled: Batch, unlabelled: Batch) -> Tensor:
        """Supervised loss on ``labelled`` plus :class:`~cmap.ml.consistency.Consistency`'s loss on
        ``unlabelled``: the labelled series and the strong views in one forward pass (one set of
        batch-norm statistics), the weak views without gradient."""
        if self.consistency is None:
            raise ValueError("the training batches carry unlabelled series but the Classifier has no `consistency`")
        with torch.no_grad():
            weak = self.consistency.weak(unlabelled)
            weak_logits = self._pseudo_labeller()(weak["values"], weak["days"], weak["mask"])
        both = concat_batches(labelled, self.consistency.strong(unlabelled))
        logits = self(both["values"], both["days"], both["mask"])
        size = len(labelled["label"])
        supervised = self.criterion(logits[:size], labelled["label"])
        unsupervised, kept = self.consistency.loss(weak_logits, logits[size:], labelled["label"])
        self.train_metrics.update(logits[:size], labelled["label"])
        self.log_loss("train", supervised, size)
        logged = {"consistency_loss": unsupervised, "pseudo_label_fraction": kept}
        if self.consistency.adaptive_level is not None:  # the adaptive threshold's level (FreeMatch: its top)
            logged["pseudo_label_threshold"] = self.consistency.adaptive_level
        for name, value in logged.items():
            self.log(f"train/{name}", value, batch_size=size, on_step=False, on_epoch=True, sync_dist=True)
        return supervised + unsupervised

    def _pseudo_labeller(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """The model itself, or its moving-average :class:`~cmap.ml.consistency.Teacher` (made at the
        first step, on the model's device, or restored with a checkpoint; outside the state dict)."""
        if not self.consistency.teacher_decay:
            return self
        teacher = self.__dict__.get("teacher")
        if teacher is None:
            teacher = self.__dict__["teacher"] = Teacher(self.encoder, self.decoder, self.consistency.teacher_decay)
        return teacher

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Beside the input contract, a consistency fit's running state: the teacher's weights and
        the running means, under :data:`CONSISTENCY_KEY` (tensors only, outside the state dict, so
        the weights, ``cmap export`` and ``load_from_checkpoint`` are those of any Classifier)."""
        super().on_save_checkpoint(checkpoint)
        if self.consistency is None:
            return
        state: dict[str, Any] = dict(self.consistency.state_dict())
        teacher = self.__dict__.get("teacher")
        if teacher is not None:
            state["teacher"] = teacher.state_dict()
        checkpoint[CONSISTENCY_KEY] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # A fit resumed from the checkpoint restores it when fitting starts (on_fit_start), once the
        # model is on its device; without this state (no consistency, or a checkpoint written before
        # it was saved) it starts afresh, as does a model loaded to test, predict or train anew.
        fitting = self._trainer is not None and self._trainer.state.fn == TrainerFn.FITTING
        self.__dict__["consistency_checkpoint"] = checkpoint.get(CONSISTENCY_KEY) if fitting else None

    def on_fit_start(self) -> None:
        state = self.__dict__.pop("consistency_checkpoint", None)
        if self.consistency is None or state is None:
            return
        self.consistency.load_state_dict(state, self.device)
        if "teacher" in state and self.consistency.teacher_decay:
            self._pseudo_labeller().load_state_dict(state["teacher"])

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        teacher = self.__dict__.get("teacher")
        if teacher is not None:
            teacher.update(self.encoder, self.decoder)

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        probabilities = torch.softmax(self(batch["values"], batch["days"], batch["mask"]).float(), dim=-1)
        confidence, prediction = probabilities.max(dim=-1)
        return {"prediction": prediction, "confidence": confidence, "probabilities": probabilities}
