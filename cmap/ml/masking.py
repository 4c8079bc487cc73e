"""Corruptions for self-supervised pretraining: what the encoder sees, what it must reconstruct.

Each strategy maps a batch's ``values`` (B, T, C) and ``mask`` (B, T) to a :class:`Corruption`.
Padding and cloudy dates (``mask`` False) are never targets and never visible. Strategies follow
Presto (Tseng et al. 2023: random dates, contiguous chunks, channel groups) and SITS-BERT (Yuan &
Lin 2021: noise contamination).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Corruption:
    """values: (B, T, C) encoder input; visible: (B, T) dates the encoder may attend to;
    target: (B, T, C) bool, the elements whose reconstruction is scored."""

    values: Tensor
    visible: Tensor
    target: Tensor


def keep_one_visible(mask: Tensor, hidden: Tensor) -> Tensor:
    """``hidden`` (B, T) minus, in series where it hides every valid date, the first valid date."""
    none_visible = ~(mask & ~hidden).any(dim=1) & mask.any(dim=1)
    if none_visible.any():
        hidden = hidden.clone()
        rows = torch.nonzero(none_visible).squeeze(1)
        hidden[rows, mask[rows].to(torch.uint8).argmax(dim=1)] = False
    return hidden


def hide_dates(values: Tensor, mask: Tensor, hidden: Tensor) -> Corruption:
    """Hidden dates: values zeroed, not attended to, all their bands scored."""
    hidden = keep_one_visible(mask, hidden & mask)
    return Corruption(
        values=values.masked_fill(hidden.unsqueeze(-1), 0.0),
        visible=mask & ~hidden,
        target=hidden.unsqueeze(-1).expand_as(values),
    )


class MaskingStrategy:
    """Base class: ``strategy(values, mask) -> Corruption``."""

    def __call__(self, values: Tensor, mask: Tensor) -> Corruption:
        raise NotImplementedError


class DateRatioStrategy(MaskingStrategy):
    """A strategy hiding a fraction ``ratio`` of the valid dates."""

    def __init__(self, ratio: float = 0.5) -> None:
        if not 0 < ratio < 1:
            raise ValueError(f"{type(self).__name__} ratio must lie in (0, 1), got {ratio}")
        self.ratio = ratio


class RandomDates(DateRatioStrategy):
    """Hide each valid date with probability ``ratio`` (at least one stays visible)."""

    def __call__(self, values: Tensor, mask: Tensor) -> Corruption:
        return hide_dates(values, mask, torch.rand(mask.shape, device=mask.device) < self.ratio)


def random_run(mask: Tensor, fraction: float | Tensor) -> Tensor:
    """(B, T) bool: a run of ``fraction`` of each series' valid dates at a random start.

    ``fraction``: a float, or a (B, 1) tensor (one per series). Runs are contiguous in valid dates
    (ranked within each series), so a cloud gap inside a run does not shorten it; a run holds at
    least one date.
    """
    rank = mask.cumsum(dim=1) - 1
    count = mask.sum(dim=1, keepdim=True)
    length = (count * fraction).round().clamp_min(1)
    start = (torch.rand(count.shape, device=mask.device) * (count - length + 1)).floor()
    return mask & (rank >= start) & (rank < start + length)


class ContiguousDates(DateRatioStrategy):
    """Hide one contiguous run of ``ratio`` of each series' valid dates, at a random start."""

    def __call__(self, values: Tensor, mask: Tensor) -> Corruption:
        return hide_dates(values, mask, random_run(mask, self.ratio))


class BandGroups(MaskingStrategy):
    """Hide whole band groups at every date of a series (each group with probability ``ratio``).

    The dates stay visible through their other bands; hidden bands are zeroed and scored. A series
    keeps at least one group. ``groups`` lists band indices (default: one group per band).
    """

    def __init__(self, groups: Sequence[Sequence[int]] | None = None, ratio: float = 0.5) -> None:
        if not 0 < ratio < 1:
            raise ValueError(f"BandGroups ratio must lie in (0, 1), got {ratio}")
        self.groups = None if groups is None else [list(group) for group in groups]
        self.ratio = ratio

    def __call__(self, values: Tensor, mask: Tensor) -> Corruption:
        num_bands = values.shape[-1]
        groups = self.groups or [[band] for band in range(num_bands)]
        if len(groups) < 2:
            raise ValueError(f"BandGroups needs at least 2 band groups, the data has {num_bands} band(s)")
        hidden_groups = torch.rand(values.shape[0], len(groups), device=values.device) < self.ratio
        all_hidden = hidden_groups.all(dim=1)
        hidden_groups[all_hidden, torch.randint(len(groups), (int(all_hidden.sum()),), device=values.device)] = False
        hidden_bands = torch.zeros(values.shape[0], num_bands, dtype=torch.bool, device=values.device)
        for index, group in enumerate(groups):
            hidden_bands[:, group] |= hidden_groups[:, index : index + 1]
        target = mask.unsqueeze(-1) & hidden_bands.unsqueeze(1)
        return Corruption(values=values.masked_fill(target, 0.0), visible=mask, target=target)


class NoiseContamination(MaskingStrategy):
    """SITS-BERT: add Gaussian noise (``std``, normalised units) to ``ratio`` of the valid dates.

    All dates stay visible; the original values of the contaminated dates are the targets.
    """

    def __init__(self, ratio: float = 0.15, std: float = 1.0) -> None:
        if not 0 < ratio < 1 or std <= 0:
            raise ValueError(f"NoiseContamination needs 0 < ratio < 1 and std > 0, got {ratio}, {std}")
        self.ratio = ratio
        self.std = std

    def __call__(self, values: Tensor, mask: Tensor) -> Corruption:
        noisy = (torch.rand(mask.shape, device=mask.device) < self.ratio) & mask
        target = noisy.unsqueeze(-1).expand_as(values)
        contaminated = values + self.std * torch.randn_like(values) * target
        return Corruption(values=contaminated, visible=mask, target=target)
