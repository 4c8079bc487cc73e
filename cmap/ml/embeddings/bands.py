"""Band embedding: the spectral values of one date mapped to a ``d_model`` vector."""

from collections.abc import Sequence

from torch import Tensor, nn

from cmap.ml.mlp import mlp


class PixelEncoding(nn.Module):
    """MLP applied to each date's band values independently.

    Args:
        sizes: layer widths; ``sizes[0]`` is the number of input bands and ``sizes[-1]`` the
            model width ``d_model`` (the seed uses ``[9, 32, 64, 128, 256]``). ``sizes[0]`` may be
            ``null``: the band count of the data's input contract, set when the task meets its data
            (:meth:`bind_bands`), so a config need not know it.

    Shapes: (B, T, C) -> (B, T, sizes[-1]).
    """

    def __init__(self, sizes: Sequence[int | None]) -> None:
        super().__init__()
        if len(sizes) < 2 or any(size is None for size in sizes[1:]):
            raise ValueError(f"sizes must list the band count (or null) and at least one width, got {list(sizes)}")
        self.sizes = list(sizes)
        self.mlp = None if self.sizes[0] is None else mlp(self.sizes)

    @property
    def num_bands(self) -> int | None:
        """Band values per date (None until bound to the data)."""
        return self.sizes[0]

    @property
    def d_model(self) -> int:
        return self.sizes[-1]

    def bind_bands(self, num_bands: int) -> None:
        """Build the first layer for ``num_bands`` bands when ``sizes[0]`` was left to the data; else check it."""
        if self.sizes[0] is None:
            self.sizes[0] = num_bands
            self.mlp = mlp(self.sizes)
        elif self.sizes[0] != num_bands:
            raise ValueError(
                f"the encoder expects {self.sizes[0]} bands per date (bands_encoder sizes[0]) but the data has "
                f"{num_bands}: leave sizes[0] null to take the data's band count, or make them equal"
            )

    def forward(self, values: Tensor) -> Tensor:
        if self.mlp is None:
            raise RuntimeError("PixelEncoding: the band count is not known yet (sizes[0] null): bind it to the data")
        return self.mlp(values)
