"""Decoders: from per-date encoder features to the task's output.

A decoder's input width is the encoder's ``d_model``: the task calls :meth:`Decoder.bind` with it,
which builds a decoder given without a width and rejects one given another width (the error names
both), so a config states the width once, in the encoder.

Heads of classifiers: :class:`MultiClassClassification` (masked mean over the dates), and TempCNN's
flatten + dense head (Pelletier et al. 2019), :class:`FlattenClassification` for data with a fixed
number of dates and :class:`DateGridClassification`, the same head on the training data's grid of
days, for any calendar (irregular dates, clouds, other numbers of dates); both end in one
:class:`DenseTail`. Other tasks' decoders: :class:`BandReconstruction`, :class:`ProjectionHead`.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmap.data.contract import DateGrid
from cmap.ml.layers import BatchNorm1dAnyBatch, zero_masked
from cmap.ml.mlp import mlp


def masked_mean(features: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``features`` (B, T, D) over the valid dates of ``mask`` (B, T) -> (B, D)."""
    weights = mask.unsqueeze(-1).to(features.dtype)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class Decoder(nn.Module):
    """Base of the decoders: ``in_features`` is the encoder's ``d_model`` (see the module docstring)."""

    in_features: int | None = None
    #: True for decoders that place dates by their day: called as ``decoder(features, mask, days)``.
    needs_days: bool = False

    def set_width(self, in_features: int | None) -> None:
        """The input width, when known at construction (layers are built), else left to :meth:`bind`."""
        self.in_features = in_features
        if in_features is not None:
            self.build(in_features)

    def bind(self, d_model: int) -> None:
        """Check (or, when it was not given, set and build) the input width: the encoder's ``d_model``."""
        if self.in_features is None:
            self.in_features = d_model
            self.build(d_model)
        elif self.in_features != d_model:
            raise ValueError(
                f"{type(self).__name__} takes features of width {self.in_features} but the encoder's d_model is "
                f"{d_model}: leave the decoder's width out (it follows the encoder) or make them equal"
            )

    def build(self, in_features: int) -> None:
        """Create the layers for input width ``in_features``."""
        raise NotImplementedError

    def decode(self, features: Tensor, mask: Tensor, days: Tensor) -> Tensor:
        """The decoder's output for an encoder's ``features``: the one call that hands ``days`` to the
        decoders that need them."""
        return self(features, mask, days) if self.needs_days else self(features, mask)


class ClassificationHead(Decoder):
    """A decoder whose output size is the number of classes: ``num_classes`` given, or the data's
    (:meth:`bind_classes`, called when the task meets its data)."""

    num_classes: int | None = None

    def bind_classes(self, class_names: Sequence[str]) -> None:
        """Take the data's class count when ``num_classes`` was not given (and build what it sizes); else check it."""
        if self.num_classes is None:
            self.num_classes = len(class_names)
            self.build_output()
        elif self.num_classes != len(class_names):
            raise ValueError(
                f"the decoder has num_classes={self.num_classes} outputs but the data has {len(class_names)} classes: "
                f"{list(class_names)} (leave num_classes out to take the data's)"
            )

    def build_output(self) -> None:
        """Build the layers sized by ``num_classes`` once it is known (a head given it builds them in :meth:`build`)."""


class MultiClassClassification(ClassificationHead):
    """Classification head: mean over valid dates, layer norm, dropout, linear.

    Args:
        num_classes: number of output classes; default (and it must be) the number of the data's
            classes, set when the task meets its data (:meth:`bind_classes`).
        hidden: feature width; default (and it must be) the encoder's ``d_model``.
        dropout_p: dropout before the linear layer.

    Shapes: features (B, T, hidden), mask (B, T) -> logits (B, num_classes).
    """

    def __init__(self, num_classes: int | None = None, hidden: int | None = None, dropout_p: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.dropout_p = num_classes, dropout_p
        self.linear: nn.Linear | None = None
        self.set_width(hidden)

    def build(self, in_features: int) -> None:
        self.norm = nn.LayerNorm(in_features)
        self.dropout = nn.Dropout(self.dropout_p)
        if self.num_classes is not None:
            self.linear = nn.Linear(in_features, self.num_classes)

    def build_output(self) -> None:
        if self.in_features is not None:
            self.linear = nn.Linear(self.in_features, self.num_classes)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.linear(self.dropout(self.norm(masked_mean(features, mask))))


class MLPDecoder(Decoder):
    """A decoder around an MLP of widths ``sizes``: ``sizes[0]`` is the encoder's ``d_model``."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.set_width(self.sizes[0])

    def build(self, in_features: int) -> None:
        self.mlp = mlp(self.sizes)


class BandReconstruction(MLPDecoder):
    """Reconstruction head: an MLP from each date's features back to its band values.

    Args:
        sizes: layer widths, ``sizes[0]`` the encoder's ``d_model`` and ``sizes[-1]`` the number
            of bands (``[256, 9]`` is a single linear layer).

    Shapes: features (B, T, sizes[0]), mask (B, T) -> values (B, T, sizes[-1]).
    """

    @property
    def num_bands(self) -> int:
        return self.sizes[-1]

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.mlp(features)


class ProjectionHead(MLPDecoder):
    """Contrastive projection head: mean over valid dates, then an MLP to the embedding compared across views.

    Args:
        sizes: layer widths, ``sizes[0]`` the encoder's ``d_model`` (``[64, 64, 32]``: SimCLR's
            two-layer head).

    Shapes: features (B, T, sizes[0]), mask (B, T) -> embedding (B, sizes[-1]).
    """

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.mlp(masked_mean(features, mask))


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
        return self.tail(torch.flatten(self.grid_steps(features, mask, days), start_dim=1))

    def step_of(self, days: Tensor) -> Tensor:
        """The grid step of each day (any shape; steps outside ``[0, num_steps)`` are off the grid)."""
        # floor(days / step + 1/2) in integers: days in a bf16 model would lose precision above 256.
        return torch.div(2 * days.long() + self.date_grid.step, 2 * self.date_grid.step, rounding_mode="floor")

    def grid_steps(self, features: Tensor, mask: Tensor, days: Tensor) -> Tensor:
        """The features on the grid's steps, empty steps filled: (B, num_steps, in_features)."""
        size, num_steps = features.shape[0], self.date_grid.num_steps
        step = self.step_of(days)
        on_grid = mask & (step >= 0) & (step < num_steps)
        step = step.clamp(0, num_steps - 1)
        weights = on_grid.to(features.dtype).unsqueeze(-1)
        binned = features.new_zeros(size, num_steps, features.shape[-1])
        binned.scatter_add_(1, step.unsqueeze(-1).expand_as(features), features * weights)
        count = features.new_zeros(size, num_steps, 1).scatter_add_(1, step.unsqueeze(-1), weights)
        binned = binned / count.clamp_min(1.0)
        if self.empty_steps == "interpolate":
            binned = interpolate_empty_steps(binned, count.squeeze(-1) > 0)
        return binned


def at_steps(steps: Tensor, index: Tensor) -> Tensor:
    """``steps`` (B, S, D) at the step ``index`` (B, S) of each series: (B, S, D)."""
    return steps.gather(1, index.unsqueeze(-1).expand_as(steps))


def interpolate_empty_steps(steps: Tensor, filled: Tensor) -> Tensor:
    """``steps`` (B, S, D) where ``filled`` (B, S) is False replaced by the linear interpolation, along
    S, of the nearest filled steps before and after (the nearest one's value where only one side has
    one; zeros in a series without any). Filled steps are returned unchanged."""
    before_at, after_at, share, any_filled = interpolation_sources(filled)
    share = share.to(steps.dtype).unsqueeze(-1)
    filled_in = torch.lerp(at_steps(steps, before_at), at_steps(steps, after_at), share)
    any_filled = any_filled.unsqueeze(-1)
    return torch.where(filled.unsqueeze(-1), steps, torch.where(any_filled, filled_in, torch.zeros_like(steps)))


def interpolation_sources(filled: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For each step of ``filled`` (B, S): the filled steps it is interpolated from, ``before_at`` and
    ``after_at`` (B, S; a filled step is its own source on both sides), the weight ``share`` of
    ``after_at`` (B, S), and ``any_filled`` (B, S): whether its series has a filled step at all."""
    num_steps = filled.shape[1]
    index = torch.arange(num_steps, device=filled.device).expand_as(filled)
    # Nearest filled step at or before each step (-1: none), and at or after it (num_steps: none).
    before = torch.where(filled, index, -1).cummax(dim=1).values
    after = num_steps - 1 - torch.where(filled, num_steps - 1 - index, -1).flip(1).cummax(dim=1).values.flip(1)
    has_before, has_after = before >= 0, after < num_steps
    before_at = torch.where(has_before, before, torch.where(has_after, after, 0))
    after_at = torch.where(has_after, after, before_at)
    span = (after_at - before_at).clamp_min(1)
    share = ((index - before_at).clamp_min(0) / span).clamp(0, 1)  # weight of 'after'
    return before_at, after_at, share, has_before | has_after
