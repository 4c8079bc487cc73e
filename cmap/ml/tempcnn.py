"""TempCNN parts (Pelletier et al. 2019): masked convolution blocks and the flatten + dense head.

:class:`~cmap.ml.encoders.TempCNNEncoder` stacks :class:`MaskedConvBlock` s over the embedded
dates; :class:`FlattenClassification` is TempCNN's own head, for data with a fixed number of dates;
:class:`DateGridClassification` is the same head on the training data's grid of days, for any
calendar (irregular dates, clouds, other numbers of dates). Both end in one :class:`DenseTail`.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmap.data.contract import DateGrid
from cmap.ml.decoders import ClassificationHead


def zero_masked(features: Tensor, mask: Tensor) -> Tensor:
    """``features`` (B, T, D) with the dates where ``mask`` (B, T) is False set to 0."""
    return features * mask.unsqueeze(-1).to(features.dtype)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """Batch norm of per-date features (B, T, D) whose statistics count the valid dates only.

    In training, the batch mean and variance (and so the running statistics) come from the dates
    where ``mask`` is True; padded and cloudy dates neither move them nor are normalised (they
    come out as 0). A training batch with fewer than two valid dates uses the running statistics.

    On a GPU (and when compiled) the statistics are masked sums, in float32: a boolean selection of
    the valid dates has a data-dependent size, which the host must read back from the GPU at every
    step (a wait that stops it from queueing work ahead) and which CUDA graphs cannot capture. On the
    CPU, where that read costs nothing, the selection and PyTorch's fused batch-norm kernel are faster
    (forward and backward at 128 series x 46 dates x 64 features: 7 ms against 14 ms). Both give the
    same values, gradients and running statistics.
    """

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        if features.device.type == "cpu" and not torch.compiler.is_compiling():
            return self.normalise_selection(features, mask)
        return self.normalise_by_sums(features, mask)

    def normalise_selection(self, features: Tensor, mask: Tensor) -> Tensor:
        """Batch norm of the valid dates picked by a boolean index (the host reads their count)."""
        valid = features[mask]  # (N, D): the valid dates of every series
        training = self.training and valid.shape[0] > 1
        if training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = self.momentum
        if training and momentum is None and self.num_batches_tracked is not None:  # a cumulative average
            momentum = 1.0 / float(self.num_batches_tracked)
        normalised = F.batch_norm(
            valid, self.running_mean, self.running_var, self.weight, self.bias, training, momentum or 0.0, self.eps
        )
        out = features.new_zeros(features.shape[:-1] + normalised.shape[-1:])
        out[mask] = normalised.to(out.dtype)
        return out

    def normalise_by_sums(self, features: Tensor, mask: Tensor) -> Tensor:
        """Batch norm with statistics from sums over the valid dates: no value is read on the host."""
        weights = mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
        x = features.float()
        running_mean = None if self.running_mean is None else self.running_mean.float()
        running_var = None if self.running_var is None else self.running_var.float()
        if self.training or running_mean is None:
            count = weights.sum()
            mean = (x * weights).sum(dim=(0, 1)) / count.clamp_min(1)
            var = ((x - mean).square() * weights).sum(dim=(0, 1)) / count.clamp_min(1)  # biased, as batch norm's
            use_batch = count > 1
            if self.training and running_mean is not None:
                with torch.no_grad():
                    self.num_batches_tracked.add_(use_batch.to(self.num_batches_tracked.dtype))
                    momentum = (
                        1.0 / self.num_batches_tracked.clamp_min(1).float() if self.momentum is None else self.momentum
                    )
                    unbiased = var * count / (count - 1).clamp_min(1)
                    new_mean = torch.lerp(running_mean, mean, momentum)
                    new_var = torch.lerp(running_var, unbiased, momentum)
                    self.running_mean.copy_(torch.where(use_batch, new_mean, running_mean))
                    self.running_var.copy_(torch.where(use_batch, new_var, running_var))
            if running_mean is not None:
                mean = torch.where(use_batch, mean, running_mean)
                var = torch.where(use_batch, var, running_var)
        else:
            mean, var = running_mean, running_var
        normalised = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            normalised = normalised * self.weight.float() + self.bias.float()
        return (normalised * weights).to(features.dtype)


class BatchNorm1dAnyBatch(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that normalises a training batch of one series with the running statistics
    (batch statistics of one sample are undefined; the last batch of an epoch can hold one)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class MaskedConvBlock(nn.Module):
    """Convolution over the date axis ('same' padding), masked batch norm, ReLU, dropout.

    Masked dates are zeroed before the convolution and in its output, so valid dates see their
    neighbours' values, zeros for masked neighbours, and never a masked date's value.

    Shapes: features (B, T, in_features), mask (B, T) -> (B, T, out_features).
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 5, dropout_p: float = 0.2) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd ('same' padding centred on each date), got {kernel_size}")
        # No bias: the batch norm's shift replaces it.
        self.conv = nn.Conv1d(in_features, out_features, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = MaskedBatchNorm1d(out_features)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        x = self.conv(zero_masked(features, mask).transpose(1, 2)).transpose(1, 2)
        return zero_masked(self.dropout(F.relu(self.norm(x, mask))), mask)


class DenseTail(ClassificationHead):
    """TempCNN's dense tail, shared by its heads: flattened features ``-> linear (hidden) -> batch norm
    -> ReLU -> dropout -> linear (num_classes)``, the layers ``dense``, ``norm``, ``dropout`` and
    ``linear`` of the head itself (so its checkpoints' keys are ``decoder.dense.weight``, ...). A head
    sets ``hidden``, ``dropout_p`` and ``num_classes``, calls :meth:`build_tail` with the flattened
    width, and :meth:`tail` on the flattened features."""

    hidden: int
    dropout_p: float

    def build_tail(self, flat_features: int) -> None:
        self.dense = nn.Linear(flat_features, self.hidden, bias=False)  # no bias: the batch norm's shift replaces it
        self.norm = BatchNorm1dAnyBatch(self.hidden)
        self.dropout = nn.Dropout(self.dropout_p)
        self.linear = nn.Linear(self.hidden, self.num_classes)

    def tail(self, x: Tensor) -> Tensor:
        """(B, flat_features) -> logits (B, num_classes)."""
        return self.linear(self.dropout(F.relu(self.norm(self.dense(x)))))


class FlattenClassification(DenseTail):
    """TempCNN's head: the features of all T dates in date order, flattened, then dense layers.

    ``flatten (T * d_model) -> linear (hidden) -> batch norm -> ReLU -> dropout -> linear
    (num_classes)``. Unlike the masked mean of
    :class:`~cmap.ml.decoders.MultiClassClassification`, it keeps *where* in the series each
    feature is, which is what a fixed acquisition calendar offers. Masked dates enter as zeros.

    It applies only when every series has the same ``num_dates`` dates, the i-th date of every
    series at (about) the same time of the season: UCR Crop, the TempCNN example, stores of one
    date grid, and maps of rasters on the training's dates. For irregular series of varying
    length (or a map of other dates) use a pooling decoder; a batch with another number of dates
    is an error.

    Args:
        num_dates: dates per series T.
        num_classes: number of output classes.
        hidden: width of the dense layer (Pelletier et al.: 256).
        dropout_p: dropout after the dense layer.
        in_features: per-date feature width; default (and it must be) the encoder's ``d_model``.

    Shapes: features (B, num_dates, in_features), mask (B, num_dates) -> logits (B, num_classes).
    """

    def __init__(
        self, num_dates: int, num_classes: int, hidden: int = 256, dropout_p: float = 0.2,
        in_features: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_dates, self.num_classes, self.hidden, self.dropout_p = num_dates, num_classes, hidden, dropout_p
        self.set_width(in_features)

    def build(self, in_features: int) -> None:
        self.build_tail(self.num_dates * in_features)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        if features.shape[1] != self.num_dates:
            raise ValueError(
                f"FlattenClassification was built for num_dates={self.num_dates} dates per series, got "
                f"{features.shape[1]}: it needs a fixed date grid (use a pooling decoder otherwise)"
            )
        return self.tail(torch.flatten(zero_masked(features, mask), start_dim=1))


class DateGridClassification(DenseTail):
    """TempCNN's flatten + dense head on a grid of days: for any calendar, built from the data.

    Each date's features go to its step of the training data's :class:`~cmap.data.contract.DateGrid`
    (steps of the median days between dates, from day 0); a step holding several valid dates takes
    their mean; a step holding none takes the features of the nearest steps that hold dates, linearly
    interpolated between them (the nearest one's before the first and after the last): a gap-filled
    series, as SITS practice fills clouds before classifying (``empty_steps="zeros"`` leaves them 0,
    as before 2026-12-01). The steps are flattened in order, then ``linear
    (hidden) -> batch norm -> ReLU -> dropout -> linear (num_classes)``. On data of one date grid
    (one date per step) it is :class:`FlattenClassification`; unlike it, it also takes series of
    irregular or differing dates (dates are placed by their *day*, not their index) and maps of
    rasters with missing or extra dates. Dates beyond the grid's last step are ignored.

    Why empty steps are filled: with zeros, *which* steps are empty is a feature of its own. On
    cloudy, irregular series the dense layer learns each training series' pattern of gaps: Victoria as
    daily NDVI with 40-80 % of the dates kept, 360 training series, gave 1.00 training and 0.70
    validation accuracy with zeros (a random forest on the interpolated series: 0.975). On a full grid
    (every step holding a date: UCR Crop, the TempCNN example) nothing changes.

    Args:
        num_classes: output classes; default (and it must be) the data's, set when the task meets it.
        hidden: width of the dense layer (Pelletier et al.: 256).
        dropout_p: dropout after the dense layer.
        date_grid: ``{step, num_steps}``; default (and it must be) the training data's, from the
            input contract.
        in_features: per-date feature width; default (and it must be) the encoder's ``d_model``.
        empty_steps: ``interpolate`` (steps without a date take their neighbours' features, see above)
            or ``zeros``.

    Shapes: features (B, T, in_features), mask (B, T), days (B, T) -> logits (B, num_classes).
    """

    needs_days = True

    def __init__(
        self, num_classes: int | None = None, hidden: int = 256, dropout_p: float = 0.2,
        date_grid: DateGrid | None = None, in_features: int | None = None, empty_steps: str = "interpolate",
    ) -> None:  # fmt: skip
        super().__init__()
        if empty_steps not in ("interpolate", "zeros"):
            raise ValueError(f"empty_steps must be 'interpolate' or 'zeros', got {empty_steps!r}")
        self.num_classes, self.hidden, self.dropout_p = num_classes, hidden, dropout_p
        self.date_grid, self.empty_steps = date_grid, empty_steps
        self.set_width(in_features)

    def build(self, in_features: int) -> None:
        self.build_output()

    def bind_date_grid(self, date_grid: DateGrid) -> None:
        if self.date_grid is None:
            self.date_grid = date_grid
            self.build_output()
        elif self.date_grid != date_grid:
            raise ValueError(
                f"DateGridClassification was built for {self.date_grid} but the data's dates are on {date_grid} "
                "(leave date_grid out to take the data's)"
            )

    def build_output(self) -> None:
        """The layers, once the feature width, the classes and the grid are all known."""
        if self.in_features is None or self.num_classes is None or self.date_grid is None or hasattr(self, "dense"):
            return
        self.build_tail(self.date_grid.num_steps * self.in_features)

    def forward(self, features: Tensor, mask: Tensor, days: Tensor) -> Tensor:
        if not hasattr(self, "dense"):
            raise RuntimeError(
                "DateGridClassification is built when it meets the data (classes and date grid from the input "
                "contract): train it through a cmap data module, or give num_classes and date_grid"
            )
        size, num_steps = features.shape[0], self.date_grid.num_steps
        # floor(days / step + 1/2) in integers: days in a bf16 model would lose precision above 256.
        step = torch.div(2 * days.long() + self.date_grid.step, 2 * self.date_grid.step, rounding_mode="floor")
        on_grid = mask & (step >= 0) & (step < num_steps)
        step = step.clamp(0, num_steps - 1)
        weights = on_grid.to(features.dtype).unsqueeze(-1)
        binned = features.new_zeros(size, num_steps, features.shape[-1])
        binned.scatter_add_(1, step.unsqueeze(-1).expand_as(features), features * weights)
        count = features.new_zeros(size, num_steps, 1).scatter_add_(1, step.unsqueeze(-1), weights)
        binned = binned / count.clamp_min(1.0)
        if self.empty_steps == "interpolate":
            binned = interpolate_empty_steps(binned, count.squeeze(-1) > 0)
        return self.tail(torch.flatten(binned, start_dim=1))


def at_steps(steps: Tensor, index: Tensor) -> Tensor:
    """``steps`` (B, S, D) at the step ``index`` (B, S) of each series: (B, S, D)."""
    return steps.gather(1, index.unsqueeze(-1).expand_as(steps))


def interpolate_empty_steps(steps: Tensor, filled: Tensor) -> Tensor:
    """``steps`` (B, S, D) where ``filled`` (B, S) is False replaced by the linear interpolation, along
    S, of the nearest filled steps before and after (the nearest one's value where only one side has
    one; zeros in a series without any). Filled steps are returned unchanged."""
    num_steps = steps.shape[1]
    index = torch.arange(num_steps, device=steps.device).expand_as(filled)
    # Nearest filled step at or before each step (-1: none), and at or after it (num_steps: none).
    before = torch.where(filled, index, -1).cummax(dim=1).values
    after = num_steps - 1 - torch.where(filled, num_steps - 1 - index, -1).flip(1).cummax(dim=1).values.flip(1)
    has_before, has_after = before >= 0, after < num_steps
    before_at = torch.where(has_before, before, torch.where(has_after, after, 0))
    after_at = torch.where(has_after, after, before_at)
    span = (after_at - before_at).clamp_min(1)
    share = ((index - before_at).clamp_min(0) / span).clamp(0, 1).to(steps.dtype).unsqueeze(-1)  # weight of 'after'
    filled_in = torch.lerp(at_steps(steps, before_at), at_steps(steps, after_at), share)
    any_filled = (has_before | has_after).unsqueeze(-1)
    return torch.where(filled.unsqueeze(-1), steps, torch.where(any_filled, filled_in, torch.zeros_like(steps)))
