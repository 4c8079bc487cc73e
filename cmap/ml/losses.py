"""Losses and the resolution of per-class weights given by class name."""

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017): ``-sum_k q_k alpha_k (1 - p_k)^gamma log p_k``.

    ``q`` is the one-hot target, smoothed to ``(1 - label_smoothing) onehot + label_smoothing / K``
    (without smoothing the sum is the true class's term alone). The batch loss is normalised by
    the targets' alpha, as in ``F.cross_entropy(weight=alpha)``, so ``gamma=0`` is exactly weighted
    cross-entropy, label smoothing included.

    Args:
        gamma: focusing parameter; larger values down-weight well-classified samples.
        alpha: per-class weights (num_classes,), or None for equal weights.
        label_smoothing: mass moved from the true class to a uniform distribution, in [0, 1).

    Shapes: logits (B, K), target (B,) long or (B, K) class probabilities -> scalar.
    """

    alpha: Tensor | None

    def __init__(self, gamma: float = 2.0, alpha: Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"FocalLoss gamma must be >= 0, got {gamma}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        # Not persistent: the weights come from the hyper-parameters, not from the state dict.
        self.register_buffer("alpha", alpha, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1)
        # Class indices (B,), or class probabilities (B, K) such as mixed targets (SeriesMixing).
        # scatter_ rather than F.one_hot: one_hot reads the labels' range back on the host, a wait for
        # the GPU at every step (an out-of-range label still fails, in scatter_).
        if target.dim() == 1:
            hard = torch.zeros_like(log_p).scatter_(-1, target.unsqueeze(-1), 1.0)
        else:
            hard = target.to(log_p.dtype)
        q = hard
        if self.label_smoothing:
            q = q * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[-1]
        focus = 1.0 if self.gamma == 0 else (1 - log_p.exp()) ** self.gamma
        if self.alpha is None:
            return -(q * focus * log_p).sum(dim=-1).mean()
        # As F.cross_entropy: each class term carries its own weight; normalised by the targets'.
        return -(q * self.alpha * focus * log_p).sum() / (hard * self.alpha).sum()


def resolve_class_weights(classes_weights: Mapping[str, float], class_names: Sequence[str]) -> Tensor:
    """Order weights given by class name as the data's class indices.

    Raises:
        ValueError: naming every class of ``classes_weights`` unknown to the data, and every data
            class without a weight.
    """
    unknown = [name for name in classes_weights if name not in class_names]
    missing = [name for name in class_names if name not in classes_weights]
    problems = []
    if unknown:
        problems.append(f"unknown class names {unknown}")
    if missing:
        problems.append(f"no weight for classes {missing}")
    if problems:
        raise ValueError(f"classes_weights: {'; '.join(problems)}. The data module's classes are {list(class_names)}")
    weights = torch.tensor([float(classes_weights[name]) for name in class_names])
    if (weights < 0).any():
        raise ValueError(f"classes_weights must be >= 0, got {dict(classes_weights)}")
    return weights
