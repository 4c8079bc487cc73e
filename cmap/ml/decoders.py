"""Decoders: from per-date encoder features to the task's output.

A decoder's input width is the encoder's ``d_model``: the task calls :meth:`Decoder.bind` with it,
which builds a decoder given without a width and rejects one given another width (the error names
both), so a config states the width once, in the encoder.
"""

from collections.abc import Sequence

from torch import Tensor, nn

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
