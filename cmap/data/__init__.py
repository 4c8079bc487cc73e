"""Data: the batch contract, data modules and dataset readers."""

from cmap.data.batch import Batch
from cmap.data.datamodule import SITSDataModule
from cmap.data.series import PixelSeries, SeriesDataset
from cmap.data.store import open_store, write_store
from cmap.data.store_datamodule import SeriesStore
from cmap.data.streaming import StreamingSeriesStore
from cmap.data.synthetic import SyntheticSITS
from cmap.data.ucr import UCRCrop

__all__ = [
    "Batch", "PixelSeries", "SITSDataModule", "SeriesDataset", "SeriesStore", "StreamingSeriesStore",
    "SyntheticSITS", "UCRCrop", "open_store", "write_store",
]  # fmt: skip
