"""Band embedding: the spectral values of one date mapped to a ``d_model`` vector."""

from collections.abc import Sequence

from torch import Tensor, nn

from cmap.ml.mlp import mlp


class PixelEncoding(nn.Module):
    """MLP applied to each date's band values independently.

    Args:
        sizes: layer widths; ``sizes[0]`` is the number of input bands and ``sizes[-1]`` the
            model width ``d_model`` (the seed uses ``[9, 32, 64, 128, 256]``).

    Shapes: (B, T, C) -> (B, T, sizes[-1]).
    """

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.mlp = mlp(self.sizes)

    @property
    def num_bands(self) -> int:
        return self.sizes[0]

    @property
    def d_model(self) -> int:
        return self.sizes[-1]

    def forward(self, values: Tensor) -> Tensor:
        return self.mlp(values)
