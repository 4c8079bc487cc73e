"""A plain multi-layer perceptron, shared by the band embedding and the reconstruction head."""

from collections.abc import Sequence

from torch import nn


def mlp(sizes: Sequence[int], dropout_p: float = 0.0) -> nn.Sequential:
    """Linear layers through ``sizes`` with GELU between them (none after the last).

    ``mlp([9, 32, 64])`` maps (..., 9) to (..., 64).
    """
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
            if dropout_p:
                layers.append(nn.Dropout(dropout_p))
    return nn.Sequential(*layers)
