"""Classification metrics updated in bulk, so that a training step on a GPU never waits for them."""

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MetricCollection


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
