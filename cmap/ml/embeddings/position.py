"""Date embedding: sinusoidal encoding of each acquisition's day offset."""

import math

import torch
from torch import Tensor, nn


def inverse_frequencies(d_model: int, tau: float) -> Tensor:
    """``tau ** (-2i / d_model)`` for i < d_model / 2, computed in float64, returned in float32."""
    return torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(tau) / d_model)).float()


class PositionalEncoding(nn.Module):
    """Sinusoidal encoding (Vaswani et al. 2017) of the *day* of each date, not its index.

    Dates in satellite series are irregular (clouds remove some, orbits differ), so the encoded
    position is the day offset from the dataset's reference date; two series sharing a date get
    the same encoding for it whatever their other dates.

    Args:
        d_model: embedding width (even).
        tau: base of the geometric progression of wavelengths (10000 in the original paper).
        max_len: largest day offset accepted plus one; larger offsets raise an error (they would
            alias onto encodings the model never saw).

    Shapes: days (B, T) int or float -> (B, T, d_model).
    """

    inv_freq: Tensor

    def __init__(self, d_model: int, tau: float = 10000.0, max_len: int = 10000) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"PositionalEncoding d_model must be even, got {d_model}")
        self.d_model = d_model
        self.tau = tau
        self.max_len = max_len
        self.register_buffer("inv_freq", inverse_frequencies(d_model, tau), persistent=False)

    def check_days(self, days: Tensor) -> None:
        """Raise a ValueError naming the range when a day offset lies outside [0, max_len)."""
        if not days.numel():
            return
        low, high = days.min().item(), days.max().item()
        if low < 0 or high >= self.max_len:
            raise ValueError(
                f"day offsets must lie in [0, max_len={self.max_len}), got [{low}, {high}]: "
                "raise PositionalEncoding.max_len or move the dataset's reference date; for samples of "
                "several seasons (years), count days within each sample's season instead: convert the table "
                "with cmap convert table ... --time_axis season_start --season_start MM-DD (or --time_axis "
                "series_start), so the model sees the day of the season, not the calendar year"
            )

    def forward(self, days: Tensor) -> Tensor:
        # Checked here on the CPU only: on a GPU, reading the range back would make the host wait for
        # the device at every call. cmap's tasks check their batches before they move to the device
        # (SITSTask.on_before_batch_transfer), so GPU runs are checked too.
        if not torch.compiler.is_compiling() and days.device.type == "cpu":
            self.check_days(days)
        # Angles reach max_len radians, far beyond what bf16 resolves (8-bit mantissa): in a model cast
        # to bf16 (Lightning's "bf16-true" precision) they are still computed in float32, from
        # frequencies recomputed rather than rounded, and only the encoding is returned in bf16.
        inv_freq = self.inv_freq
        if inv_freq.dtype not in (torch.float32, torch.float64):
            inv_freq = inverse_frequencies(self.d_model, self.tau).to(days.device)
        angles = days.to(inv_freq.dtype).unsqueeze(-1) * inv_freq
        return torch.cat([angles.sin(), angles.cos()], dim=-1).to(self.inv_freq.dtype)
