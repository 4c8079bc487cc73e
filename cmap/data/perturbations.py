"""Random perturbations of series: training augmentation, contrastive views, pretraining corruptions.

Every perturbation works on a batch's ``values`` (B, T, C) and ``mask`` (B, T; True on valid
dates) and follows one rule set:

- padding and cloudy dates (``mask`` False) never become visible, and are never targets;
- a perturbation that would hide every valid date of a series keeps its first valid date
  (:func:`keep_one_visible`): every series reaches the encoder with at least one date;
- runs of dates are contiguous in *valid* dates (:func:`random_run`), so a cloud gap inside a run
  does not shorten it.

Four uses:

- :class:`Augmentation` (data modules, training split): date dropout, band noise, day shift,
  phenology stretch (:func:`time_stretched`);
- :class:`SeriesMixing` (:class:`~cmap.ml.classifiers.Classifier`): mixup or CutMix of series;
- :class:`SeriesViews` (:class:`~cmap.ml.contrastive.ContrastivePretraining`): two random views per
  series;
- masking strategies (:class:`~cmap.ml.autoencoders.AutoEncoder`): what the encoder sees and what
  it must reconstruct, after Presto (Tseng et al. 2023: random dates, contiguous chunks, channel
  groups) and SITS-BERT (Yuan & Lin 2021: noise contamination).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cmap.data.batch import Batch


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


def time_stretched(values: Tensor, mask: Tensor, days: Tensor, stretch: float) -> tuple[Tensor, Tensor]:
    """Each series resampled by :func:`season_resampled` as if its season ran a factor drawn uniformly in
    [1 - stretch, 1 + stretch] faster or slower (one factor per series). Returns ``(values, mask)``."""
    factor = 1 + stretch * (2 * torch.rand(mask.shape[0], 1, device=mask.device) - 1)
    return season_resampled(values, mask, days, factor)


def season_resampled(values: Tensor, mask: Tensor, days: Tensor, factor: float | Tensor) -> tuple[Tensor, Tensor]:
    """Each series' values resampled along time as if its season ran ``factor`` (a number, or (B, 1): one per
    series) times faster; the days stay where they are.

    A valid date on day ``d`` takes the series' value on day ``pivot + (d - pivot) * factor`` (``pivot``:
    the middle of the series' first and last valid days), linearly interpolated between the two valid
    dates around it: a factor > 1 draws the season's events towards the pivot (a faster season), < 1
    spreads them out. A date whose source day falls outside the series' valid days is masked (and
    zeroed), as are the dates that were not valid; a series keeps at least its first valid date
    (:func:`keep_one_visible`, its value then read at the nearest valid day). Vectorised over series;
    valid dates need not be in day order. Returns ``(values, mask)``.
    """
    day = days.to(torch.float32)  # exact for whole days up to 2**24
    valid_days, order = torch.where(mask, day, torch.inf).sort(dim=1, stable=True)  # valid dates first, in order
    valid_values = values.gather(1, order.unsqueeze(-1).expand_as(values))
    count = mask.sum(dim=1, keepdim=True)
    first, last = valid_days[:, :1], torch.where(mask, day, -torch.inf).amax(dim=1, keepdim=True)
    pivot = ((first + last) / 2).nan_to_num(0.0)  # NaN only for a series without valid dates (all masked)
    source = pivot + (day - pivot) * factor
    hidden = keep_one_visible(mask, mask & ((source < first) | (source > last)))
    source = torch.minimum(torch.maximum(source, first), last).nan_to_num(0.0)  # the kept date's nearest valid day
    # The valid dates on or before (left) and after (right) each source day; equal where it is the last.
    top = (count - 1).clamp_min(0)
    left = torch.minimum((torch.searchsorted(valid_days, source.contiguous(), right=True) - 1).clamp_min(0), top)
    right = torch.minimum(left + 1, top)
    left_day, right_day = valid_days.gather(1, left), valid_days.gather(1, right)
    span = right_day - left_day
    weight = torch.where(span > 0, (source - left_day) / span.clamp_min(1e-6), 0.0).nan_to_num(0.0)
    left_values = valid_values.gather(1, left.unsqueeze(-1).expand_as(values))
    right_values = valid_values.gather(1, right.unsqueeze(-1).expand_as(values))
    resampled = torch.lerp(left_values, right_values, weight.unsqueeze(-1).to(values.dtype))
    mask = mask & ~hidden
    return resampled.masked_fill(~mask.unsqueeze(-1), 0.0), mask


@dataclass
class Augmentation:
    """Random perturbations of training batches; the defaults change nothing.

    Attributes:
        date_dropout: probability of masking each valid date (as if clouded); a series keeps its
            first valid date when every one would be masked.
        band_noise: standard deviation of Gaussian noise added to the normalised band values of
            valid dates.
        day_shift: each series' days move by one whole number of days drawn uniformly in
            [-day_shift, day_shift] (a later or earlier season; days stay >= 0). A shift of days,
            not of date indices: it acts through the date encoding.
        time_stretch: each series' values resampled along time as if its season ran a factor drawn
            uniformly in [1 - time_stretch, 1 + time_stretch] faster or slower around the middle of its
            valid dates, the days staying where they are (:func:`time_stretched`; a phenology that
            moves continuously, where ``day_shift`` moves the calendar). Applied first.

    Each series of a batch (B, T, C) is drawn independently.
    """

    date_dropout: float = 0.0
    band_noise: float = 0.0
    day_shift: int = 0
    time_stretch: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.date_dropout < 1:
            raise ValueError(f"augmentation.date_dropout must lie in [0, 1), got {self.date_dropout}")
        if self.band_noise < 0:
            raise ValueError(f"augmentation.band_noise must be >= 0, got {self.band_noise}")
        if self.day_shift < 0:
            raise ValueError(f"augmentation.day_shift must be >= 0, got {self.day_shift}")
        if not 0 <= self.time_stretch < 1:
            raise ValueError(f"augmentation.time_stretch must lie in [0, 1), got {self.time_stretch}")

    @property
    def active(self) -> bool:
        return self.date_dropout > 0 or self.band_noise > 0 or self.day_shift > 0 or self.time_stretch > 0

    def __call__(self, item: Batch) -> Batch:
        values, mask = item["values"], item["mask"]
        if self.time_stretch:  # first: it reads the series' own valid dates and days
            values, mask = time_stretched(values, mask, item["days"], self.time_stretch)
        if self.date_dropout:
            hidden = keep_one_visible(mask, mask & (torch.rand(mask.shape) < self.date_dropout))
            mask = mask & ~hidden
            values = values * mask.unsqueeze(-1)
        if self.band_noise:
            values = values + self.band_noise * torch.randn_like(values) * mask.unsqueeze(-1)
        days = item["days"]
        if self.day_shift:
            shift = torch.randint(-self.day_shift, self.day_shift + 1, (days.shape[0], 1), dtype=days.dtype)
            days = (days + shift).clamp_min(0)
        return {**item, "values": values, "days": days, "mask": mask}


class SeriesViews:
    """A random view of each series: a run of its valid dates, date dropout, band noise.

    Args:
        min_crop: the run keeps a uniform fraction in [min_crop, 1] of each series' valid dates
            (contiguous in valid dates, so cloud gaps do not shorten it).
        date_dropout: probability of hiding each date of the run (one date always stays).
        band_noise: standard deviation of Gaussian noise added to visible values (normalised units).

    ``views(values, mask) -> (values, mask)``: hidden dates are zeroed and masked; padding and
    cloudy dates never become visible.
    """

    def __init__(self, min_crop: float = 0.5, date_dropout: float = 0.2, band_noise: float = 0.05) -> None:
        if not 0 < min_crop <= 1 or not 0 <= date_dropout < 1 or band_noise < 0:
            raise ValueError(
                "SeriesViews needs 0 < min_crop <= 1, 0 <= date_dropout < 1 and band_noise >= 0, got "
                f"{min_crop}, {date_dropout}, {band_noise}"
            )
        self.min_crop = min_crop
        self.date_dropout = date_dropout
        self.band_noise = band_noise

    def __call__(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        fraction = self.min_crop + (1 - self.min_crop) * torch.rand(mask.shape[0], 1, device=mask.device)
        run = random_run(mask, fraction)
        dropped = torch.rand(mask.shape, device=mask.device) < self.date_dropout
        hidden = keep_one_visible(mask, mask & (~run | dropped))
        visible = mask & ~hidden
        noise = self.band_noise * torch.randn_like(values) if self.band_noise else 0.0
        return (values + noise).masked_fill(~visible.unsqueeze(-1), 0.0), visible


@dataclass
class SeriesMixing:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of training series, with mixed targets.

    Each series is paired with another of its batch (a random permutation) and a weight ``lam``
    drawn from Beta(``alpha``, ``alpha``) per series:

    - ``"mixup"``: values ``lam * a + (1 - lam) * b`` on dates valid in both; a date valid in one
      series only keeps that series' value; the mask is the union;
    - ``"cutmix"``: a contiguous run of about ``1 - lam`` of the dates is taken from ``b`` (values
      and mask), the rest stays ``a``'s; ``lam`` becomes the fraction of dates actually kept.

    Dates are paired by position (the i-th date with the i-th) and the days stay ``a``'s: this
    suits data on one date grid (UCR Crop, the TempCNN example, stores of one acquisition
    calendar). ``mix(batch) -> (batch, partner_index, lam)``; the loss is
    ``lam * loss(a's label) + (1 - lam) * loss(b's label)`` (:class:`~cmap.ml.classifiers.Classifier`).
    """

    mode: str = "mixup"
    alpha: float = 0.2

    def __post_init__(self) -> None:
        if self.mode not in ("mixup", "cutmix"):
            raise ValueError(f"SeriesMixing mode must be 'mixup' or 'cutmix', got {self.mode!r}")
        if self.alpha <= 0:
            raise ValueError(f"SeriesMixing alpha must be > 0, got {self.alpha}")

    def __call__(self, batch: Batch) -> tuple[Batch, Tensor, Tensor]:
        values, mask = batch["values"], batch["mask"]
        size, num_dates = mask.shape
        partner = torch.randperm(size, device=mask.device)
        alpha = torch.tensor(self.alpha, device=values.device)  # drawn on the batch's device: no copy per step
        lam = torch.distributions.Beta(alpha, alpha).sample((size,)).to(values.dtype)
        other_values, other_mask = values[partner], mask[partner]
        if self.mode == "mixup":
            both = (mask & other_mask).unsqueeze(-1)
            weight = lam.view(-1, 1, 1)
            either = torch.where(mask.unsqueeze(-1), values, other_values)
            mixed = torch.where(both, weight * values + (1 - weight) * other_values, either)
            mixed_mask = mask | other_mask
            mixed = mixed.masked_fill(~mixed_mask.unsqueeze(-1), 0.0)
        else:
            length = ((1 - lam) * num_dates).round().long()
            start = (torch.rand(size, device=mask.device) * (num_dates - length + 1)).floor().long()
            position = torch.arange(num_dates, device=mask.device).unsqueeze(0)
            cut = (position >= start.unsqueeze(1)) & (position < (start + length).unsqueeze(1))
            mixed = torch.where(cut.unsqueeze(-1), other_values, values)
            mixed_mask = torch.where(cut, other_mask, mask)
            lam = 1 - length.to(values.dtype) / num_dates
        return {**batch, "values": mixed, "mask": mixed_mask}, partner, lam
