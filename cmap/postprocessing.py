"""Per-pixel class probabilities -> smoothed probabilities and uncertainty, as ``cmap map`` applies them.

**Bayesian smoothing** (:func:`bayesian_smoothing`) is the method of R ``sits`` (``sits_smooth``;
Camara, Simoes, Souza, Queiroz, Ferreira, Andrade, Picoli, Maciel, Sanchez, Carvalho and Begotti
(2023), "Bayesian inference for post-processing of remote-sensing image classification", Remote
Sensing / the sits book, chapter "Bayesian smoothing"): for each pixel and class, the logit of the
probability ``x`` is the likelihood's mean; the prior is normal with the mean ``m`` and variance
``s2`` of the highest ``neighbour_fraction`` of the class's logits in the ``window`` x ``window``
neighbourhood; with ``smoothness`` the likelihood's variance, the posterior mean is::

    w = s2 / (s2 + smoothness);   smoothed = w * x + (1 - w) * m

so a pixel in a uniform neighbourhood (small ``s2``) takes its neighbours' value, and one at a
boundary (large ``s2``) keeps its own. Defaults are sits' (window 9, fraction 0.5, smoothness 20).
Two differences, both needed for maps made window by window and maps with nodata: neighbours outside
the grid or without valid dates are left out (sits mirrors the image at its edges and has no
nodata), and smoothed logits are turned back into probabilities that sum to 1 (sigmoid, then
normalised; the most probable class, hence the map, is the same as sits' rule).

**Uncertainty** (:func:`uncertainty_bands`): the entropy of the class probabilities divided by its
maximum ``log(K)`` and the margin uncertainty ``1 - (p1 - p2)`` (``p1``, ``p2`` the two highest
probabilities), as sits' ``sits_uncertainty`` types ``entropy`` and ``margin``: both 0 for a certain
pixel and 1 for the most uncertain one.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPSILON = 1e-4  # probabilities are clipped to [EPSILON, 1 - EPSILON] before their logits are taken


@dataclass(frozen=True)
class BayesianSmoothing:
    """sits' Bayesian smoothing of class probabilities (see the module's docstring).

    Args:
        window: side of the square neighbourhood, in pixels (odd, >= 3).
        neighbour_fraction: share of the neighbourhood's highest logits of each class that make
            its prior (sits' ``neigh_fraction``), in (0, 1].
        smoothness: the likelihood's variance: larger values smooth more.
    """

    window: int = 9
    neighbour_fraction: float = 0.5
    smoothness: float = 20.0

    def __post_init__(self) -> None:
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"smoothing window {self.window}: expected an odd number of pixels >= 3")
        if not 0 < self.neighbour_fraction <= 1:
            raise ValueError(f"smoothing neighbour fraction {self.neighbour_fraction}: expected a number in (0, 1]")
        if self.smoothness <= 0:
            raise ValueError(f"smoothness {self.smoothness}: expected a positive number")

    @property
    def halo(self) -> int:
        """Pixels a window needs on each side so that its own pixels are smoothed as in the whole map."""
        return self.window // 2

    def __call__(self, probabilities: torch.Tensor, valid: torch.Tensor, rows_per_step: int = 256) -> torch.Tensor:
        return bayesian_smoothing(probabilities, valid, self, rows_per_step)


def bayesian_smoothing(
    probabilities: torch.Tensor, valid: torch.Tensor, smoothing: BayesianSmoothing, rows_per_step: int = 256
) -> torch.Tensor:
    """Smoothed class probabilities (K, H, W) of ``probabilities`` (K, H, W) where ``valid`` (H, W).

    Invalid pixels are no neighbours and come back as NaN. Memory: ``window**2`` floats per pixel of
    ``rows_per_step`` rows at a time.
    """
    num_classes, height, width = probabilities.shape
    radius, size = smoothing.halo, smoothing.window**2
    logits = torch.logit(probabilities.float().clamp(EPSILON, 1 - EPSILON))
    logits = torch.where(valid, logits, -torch.inf)
    padded = F.pad(logits, (radius, radius, radius, radius), value=-torch.inf)  # outside the grid: no neighbour
    smoothed = torch.empty_like(logits)
    slots = torch.arange(size, device=logits.device)[:, None]
    for top in range(0, height, rows_per_step):
        rows = min(rows_per_step, height - top)
        strip = padded[:, top : top + rows + 2 * radius]
        # (K, window**2, rows * W): each pixel's neighbourhood, highest logits first (missing ones, -inf, last)
        neighbours = F.unfold(strip[:, None], smoothing.window).sort(dim=1, descending=True).values
        found = torch.isfinite(neighbours).sum(dim=1, keepdim=True)
        taken = torch.ceil(smoothing.neighbour_fraction * found).clamp(min=1)
        used = slots < taken  # (K, window**2, rows * W)
        values = torch.where(used, neighbours, 0.0)
        mean = values.sum(dim=1, keepdim=True) / taken
        variance = torch.where(used, (values - mean) ** 2, 0.0).sum(dim=1, keepdim=True) / (taken - 1).clamp(min=1)
        weight = variance / (variance + smoothing.smoothness)
        own = logits[:, top : top + rows].reshape(num_classes, 1, -1)
        smoothed[:, top : top + rows] = (weight * own + (1 - weight) * mean).reshape(num_classes, rows, width)
    result = torch.sigmoid(smoothed)
    result = result / result.sum(dim=0, keepdim=True)
    return torch.where(valid, result, torch.nan)


def uncertainty_bands(probabilities: torch.Tensor) -> torch.Tensor:
    """(2, ...) normalised entropy and margin uncertainty of class probabilities (K, ...), both in [0, 1]."""
    num_classes = probabilities.shape[0]
    entropy = -torch.special.xlogy(probabilities, probabilities).sum(dim=0) / math.log(max(num_classes, 2))
    highest = probabilities.topk(min(2, num_classes), dim=0).values
    margin = 1 - (highest[0] - highest[1]) if num_classes > 1 else torch.zeros_like(highest[0])
    return torch.stack([entropy.clamp(0, 1), margin])
