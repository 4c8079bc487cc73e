"""Decoders: from per-date encoder features to the task's output."""

from collections.abc import Sequence

from torch import Tensor, nn

from cmap.ml.mlp import mlp


def masked_mean(features: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``features`` (B, T, D) over the valid dates of ``mask`` (B, T) -> (B, D)."""
    weights = mask.unsqueeze(-1).to(features.dtype)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class MultiClassClassification(nn.Module):
    """Classification head: mean over valid dates, layer norm, dropout, linear.

    Args:
        hidden: feature width (the encoder's ``d_model``).
        num_classes: number of output classes; must match the data module's class names.
        dropout_p: dropout before the linear layer.

    Shapes: features (B, T, hidden), mask (B, T) -> logits (B, num_classes).
    """

    def __init__(self, hidden: int, num_classes: int, dropout_p: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout_p)
        self.linear = nn.Linear(hidden, num_classes)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.linear(self.dropout(self.norm(masked_mean(features, mask))))


class BandReconstruction(nn.Module):
    """Reconstruction head: an MLP from each date's features back to its band values.

    Args:
        sizes: layer widths, ``sizes[0]`` the encoder's ``d_model`` and ``sizes[-1]`` the number
            of bands (``[256, 9]`` is a single linear layer).

    Shapes: features (B, T, sizes[0]), mask (B, T) -> values (B, T, sizes[-1]).
    """

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.mlp = mlp(self.sizes)

    @property
    def num_bands(self) -> int:
        return self.sizes[-1]

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.mlp(features)


class ProjectionHead(nn.Module):
    """Contrastive projection head: mean over valid dates, then an MLP to the embedding compared across views.

    Args:
        sizes: layer widths, ``sizes[0]`` the encoder's ``d_model`` (``[64, 64, 32]``: SimCLR's
            two-layer head).

    Shapes: features (B, T, sizes[0]), mask (B, T) -> embedding (B, sizes[-1]).
    """

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.mlp = mlp(self.sizes)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.mlp(masked_mean(features, mask))
