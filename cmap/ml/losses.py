"""Losses and the resolution of per-class weights given by class name."""

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017): ``-alpha_y (1 - p_y)^gamma log p_y``.

    The batch loss is the alpha-weighted mean, as in ``F.cross_entropy(weight=alpha)``, so
    ``gamma=0`` is exactly weighted cross-entropy.

    Args:
        gamma: focusing parameter; larger values down-weight well-classified samples.
        alpha: per-class weights (num_classes,), or None for equal weights.

    Shapes: logits (B, K), target (B,) long -> scalar.
    """

    alpha: Tensor | None

    def __init__(self, gamma: float = 2.0, alpha: Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"FocalLoss gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        # Not persistent: the weights come from the hyper-parameters, not from the state dict.
        self.register_buffer("alpha", alpha, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1).gather(1, target.unsqueeze(1)).squeeze(1)
        loss = -log_p if self.gamma == 0 else -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is None:
            return loss.mean()
        weight = self.alpha[target]
        return (weight * loss).sum() / weight.sum()


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
