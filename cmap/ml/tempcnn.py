"""Former home of TempCNN's layers and heads, kept as aliases so that checkpoints still load.

Checkpoints store their model's class paths in their hyper-parameters (``decoder.class_path:
cmap.ml.tempcnn.DateGridClassification``): those written before the layers moved to
:mod:`cmap.ml.layers` and the heads to :mod:`cmap.ml.decoders` name this module, and load through
these names. New code and configs use the new homes.
"""

from cmap.ml.decoders import DateGridClassification, DenseTail, FlattenClassification
from cmap.ml.layers import BatchNorm1dAnyBatch, MaskedBatchNorm1d, MaskedConvBlock, zero_masked

__all__ = [
    "BatchNorm1dAnyBatch", "DateGridClassification", "DenseTail", "FlattenClassification", "MaskedBatchNorm1d",
    "MaskedConvBlock", "zero_masked",
]  # fmt: skip
