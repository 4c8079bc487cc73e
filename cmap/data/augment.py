"""Training-time augmentation of series batches (training split only)."""

from dataclasses import dataclass

import torch

from cmap.data.batch import Batch


@dataclass
class Augmentation:
    """Random perturbations of a training series; the defaults change nothing.

    Attributes:
        date_dropout: probability of masking each valid date (as if clouded); a series keeps
            all its dates when the draw would mask every one.

    Works on one series (T, C) or a batch (B, T, C), each series drawn independently.
        band_noise: standard deviation of Gaussian noise added to the normalised band values of
            valid dates.
    """

    date_dropout: float = 0.0
    band_noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.date_dropout < 1:
            raise ValueError(f"augmentation.date_dropout must lie in [0, 1), got {self.date_dropout}")
        if self.band_noise < 0:
            raise ValueError(f"augmentation.band_noise must be >= 0, got {self.band_noise}")

    @property
    def active(self) -> bool:
        return self.date_dropout > 0 or self.band_noise > 0

    def __call__(self, item: Batch) -> Batch:
        values, mask = item["values"], item["mask"]
        if self.date_dropout:
            kept = mask & (torch.rand(mask.shape) >= self.date_dropout)
            mask = torch.where(kept.any(dim=-1, keepdim=True), kept, mask)
            values = values * mask.unsqueeze(-1)
        if self.band_noise:
            values = values + self.band_noise * torch.randn_like(values) * mask.unsqueeze(-1)
        return {**item, "values": values, "mask": mask}
