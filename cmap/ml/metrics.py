"""Classification metrics updated in bulk, so that a training step on a GPU never waits for them, and
per-class scores that leave out the classes the evaluated series say nothing about."""

from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassStatScores
from torchmetrics.wrappers import ClasswiseWrapper

#: numerator and denominator of each score from the per-class counts (true and false positives, false negatives).
SCORES = {
    "precision": lambda tp, fp, fn: (tp, tp + fp),
    "recall": lambda tp, fp, fn: (tp, tp + fn),
    "f1": lambda tp, fp, fn: (2 * tp, 2 * tp + fp + fn),
}


class ClassScores(MulticlassStatScores):
    """Precision, recall or F1 of each class, NaN where it is undefined (0/0) in the evaluated series;
    with ``average="macro"``, their mean over the classes where it is defined.

    Undefined: precision of a class never predicted, recall of a class without true series, F1 of a
    class neither true nor predicted (which the series say nothing about). A class with true series
    that is never predicted has F1 0 and counts in the macro average; so does one predicted without
    true series. The macro F1 is scikit-learn's ``f1_score(average="macro")`` (its classes are those
    of the targets and predictions; ``zero_division=np.nan`` gives the same over any class list);
    torchmetrics' per-class scores give 0 where these give NaN.

    Args:
        num_classes: the classes.
        score: ``"precision"``, ``"recall"`` or ``"f1"``.
        average: ``None`` (a score per class) or ``"macro"``.
        **kwargs: as :class:`~torchmetrics.classification.MulticlassStatScores` (``ignore_index``, ...).
    """

    def __init__(
        self,
        num_classes: int,
        score: Literal["precision", "recall", "f1"],
        average: Literal["macro"] | None = None,
        **kwargs: Any,
    ) -> None:
        if score not in SCORES or average not in (None, "macro"):
            raise ValueError(
                f"score must be one of {list(SCORES)} and average None or 'macro', got {score!r}, {average!r}"
            )
        super().__init__(num_classes, average=None, **kwargs)  # counts per class
        self.score, self.macro = score, average == "macro"

    def compute(self) -> Tensor:
        tp, fp, _, fn = self._final_state()
        numerator, denominator = SCORES[self.score](tp, fp, fn)
        scores = numerator / denominator  # 0 / 0 = NaN
        return scores.nanmean() if self.macro else scores


class DefinedClasswise(ClasswiseWrapper):
    """A :class:`~torchmetrics.wrappers.ClasswiseWrapper` whose ``compute`` leaves out the classes
    whose score is NaN (:class:`ClassScores`: undefined in the evaluated series), so that nothing is
    logged for them: a 0.0 would read as a class always missed. Nothing rather than NaN: a NaN would
    reach the logs, ``trainer.test``'s results and callbacks (a mean over classes, a comparison of two
    runs' metrics, early stopping's finiteness check) as a number. A class left out in one epoch
    leaves a gap in its TensorBoard curve (Lightning's ``callback_metrics`` keeps its last value)."""

    def compute(self) -> dict[str, Tensor]:
        scores = self.metric.compute()
        named, defined = self._convert_output(scores), (~scores.isnan()).tolist()
        return {name: value for (name, value), keep in zip(named.items(), defined, strict=True) if keep}


class DeferredMetrics(MetricCollection):
    """A :class:`~torchmetrics.MetricCollection` of classification metrics whose updates are gathered
    on the device and applied every ``flush_every`` batches, and before every ``compute``.

    torchmetrics' per-class counts (``torch.bincount``) read their input's maximum back on the host:
    on a GPU each update makes the host wait for every queued kernel, so it can no longer prepare the
    next steps while the device runs. Here ``update`` only keeps each batch's predicted classes and
    targets (16 bytes per series, on the device); the wrapped metrics see them in one update per
    ``flush_every`` batches. The results are those of per-batch updates: every metric of the
    collection must take predicted class indices as it takes logits (multiclass accuracy, precision,
    recall, F1, Cohen's kappa do: they take the arg max of logits first).

    Args:
        metrics, prefix, postfix, compute_groups: as :class:`~torchmetrics.MetricCollection`.
        flush_every: batches gathered before the metrics are updated (1: every batch, as plain
            torchmetrics).
    """

    def __init__(self, *args: Any, flush_every: int = 64, **kwargs: Any) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        super().__init__(*args, **kwargs)
        self.flush_every = flush_every
        self._pending: list[tuple[Tensor, Tensor]] = []

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        """Keep ``preds`` (logits (B, K) or class indices (B,)) and ``target`` (B,) for the next flush."""
        classes = preds.detach().argmax(dim=-1) if preds.is_floating_point() else preds.detach()
        self._pending.append((classes, target.detach()))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Update the metrics with every batch gathered so far."""
        if self._pending:
            classes, targets = (torch.cat(parts) for parts in zip(*self._pending, strict=True))
            self._pending = []
            super().update(classes, targets)

    def compute(self) -> dict[str, Any]:
        self.flush()
        return super().compute()

    def reset(self) -> None:
        self._pending = []
        super().reset()
