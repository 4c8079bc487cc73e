"""Data: the batch contract, data modules and dataset readers."""

from cmap.data.batch import Batch
from cmap.data.datamodule import PixelSeries, SeriesDataset, SITSDataModule
from cmap.data.synthetic import SyntheticSITS
from cmap.data.ucr import UCRCrop

__all__ = ["Batch", "PixelSeries", "SITSDataModule", "SeriesDataset", "SyntheticSITS", "UCRCrop"]
