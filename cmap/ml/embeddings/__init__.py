"""Per-date embeddings: band values (:mod:`.bands`) and acquisition day (:mod:`.position`)."""

from cmap.ml.embeddings.bands import PixelEncoding
from cmap.ml.embeddings.position import PositionalEncoding

__all__ = ["PixelEncoding", "PositionalEncoding"]
