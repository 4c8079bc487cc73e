"""Data: the batch contract, data modules and dataset readers.

The names below are imported when first used (PEP 562): a reader or converter (``cmap convert``,
:mod:`cmap.data.table`) imports neither Lightning nor the data modules.
"""

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "Batch": "cmap.data.batch", "PixelSeries": "cmap.data.series", "SITSDataModule": "cmap.data.datamodule",
    "SeriesDataset": "cmap.data.dataset", "SeriesStore": "cmap.data.store_datamodule",
    "StreamingSeriesStore": "cmap.data.streaming", "SyntheticSITS": "cmap.data.synthetic",
    "UCRCrop": "cmap.data.ucr_datamodule",
    "open_store": "cmap.data.store", "write_store": "cmap.data.store",
}  # fmt: skip
__all__ = [
    "Batch", "PixelSeries", "SITSDataModule", "SeriesDataset", "SeriesStore", "StreamingSeriesStore",
    "SyntheticSITS", "UCRCrop", "open_store", "write_store",
]  # fmt: skip

if TYPE_CHECKING:
    from cmap.data.batch import Batch
    from cmap.data.datamodule import SITSDataModule
    from cmap.data.dataset import SeriesDataset
    from cmap.data.series import PixelSeries
    from cmap.data.store import open_store, write_store
    from cmap.data.store_datamodule import SeriesStore
    from cmap.data.streaming import StreamingSeriesStore
    from cmap.data.synthetic import SyntheticSITS
    from cmap.data.ucr_datamodule import UCRCrop


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
