"""Readers of real datasets' original files -> :mod:`cmap.data.store` (your own tables: :mod:`cmap.data.table`).

Each reader returns a :class:`Converted` (series, band names, class names, time axis); the
``cmap convert`` command writes it as a store. The original files are read in place.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cmap.data.contract import RawValues
from cmap.data.series import PixelSeries
from cmap.data.store import write_store
from cmap.data.time_axis import TimeAxis
from cmap.data.ucr import UCR_CROP_CLASSES, read_ucr_crop
from cmap.outputs import InputError, MissingInput

VICTORIA_BANDS = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
#: lc_id 0..7 are the ranks of class_map.txt's values 1, 2, 3, 7, 8, 10, 12, 13 (the data's README).
VICTORIA_CLASSES = ["bare_ground", "canola", "cereals", "legumes", "forest", "grassland", "water", "urban"]
TEMPCNN_BANDS = ["NIR", "R", "G"]
#: CSV labels 0..12 are class_map.txt's values 1..13 minus one (the data's README).
TEMPCNN_CLASSES = [
    "wheat", "barley", "rapeseed", "corn", "soy", "sunflower", "sorghum", "pea", "grassland", "deciduous",
    "conifer", "water", "urban",
]  # fmt: skip
MATO_GROSSO_BANDS = ["BLUE", "RED", "NIR", "MIR", "EVI", "NDVI"]


@dataclass
class Converted:
    series: PixelSeries
    band_names: list[str]
    class_names: list[str]
    time_axis: TimeAxis = TimeAxis()
    raw_values: RawValues | None = None

    def write(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write as a store (:func:`~cmap.data.store.write_store`), time axis and raw values included."""
        return write_store(
            folder, self.series, self.band_names, self.class_names, self.time_axis, self.raw_values, overwrite
        )

    def select(self, bands: Sequence[str] | None = None, date_step: int = 1) -> "Converted":
        """Only ``bands`` (in this order) and every ``date_step``-th date, from the first.

        E.g. ``bands=["NDVI"], date_step=2`` turns the 23 16-day MOD13Q1 composites of the Mato
        Grosso samples into the 12 dates of the Sinop cube (the composites of every other 16 days).
        """
        names = list(self.band_names) if bands is None else list(bands)
        unknown = [band for band in names if band not in self.band_names]
        if unknown:
            raise InputError(f"{self.series.source}: bands {unknown} not in {self.band_names}")
        if date_step < 1:
            raise InputError(f"--date_step must be >= 1, got {date_step}")
        channels = [self.band_names.index(band) for band in names]
        series = self.series
        values = series.values[:, ::date_step][:, :, channels]
        days = series.days[:, ::date_step]
        selected = PixelSeries(values, days, series.labels, series.source, series.groups, series.sample_ids)
        return replace(self, series=selected, band_names=names)


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    if not path.is_file():
        raise MissingInput(f"{path}: no such file")
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable CSV table ({' '.join(str(error).split())})") from None


def _date_major(path: Path, table: pd.DataFrame, num_dates: int, num_bands: int) -> np.ndarray:
    try:
        values = table.to_numpy(np.float32)
    except ValueError as error:  # text where a number belongs
        raise InputError(f"{path}: not a table of numbers after its id columns ({error})") from None
    if values.shape[1] != num_dates * num_bands:
        raise InputError(
            f"{path}: {values.shape[1]} value columns, expected {num_dates} dates x {num_bands} bands = "
            f"{num_dates * num_bands}"
        )
    return values.reshape(len(values), num_dates, num_bands)


def read_victoria(path: str | Path, step_days: int = 5) -> Converted:
    """Sentinel-2 Victoria CSV (lc_id, objectid, 73 dates x 10 bands, date-major; no dates given).

    The 73 steps look like a regular 5-day grid over one year (the data's README): ``step_days``.
    Groups are the polygon ids (``objectid``).
    """
    path = Path(path)
    table = _read_csv(path)
    for column in ("lc_id", "objectid"):
        if column not in table:
            raise InputError(f"{path}: column {column!r} is missing")
    values = _date_major(path, table.iloc[:, 2:], 73, len(VICTORIA_BANDS))
    days = np.broadcast_to(np.arange(73, dtype=np.int64) * step_days, values.shape[:2]).copy()
    series = PixelSeries(
        values, days, table["lc_id"].to_numpy(np.int64), str(path), table["objectid"].to_numpy(np.int64)
    )
    return Converted(series, VICTORIA_BANDS, VICTORIA_CLASSES)


def read_tempcnn(path: str | Path, step_days: int = 2) -> Converted:
    """TempCNN example CSV (no header: class, polygon id, 149 dates x NIR, R, G; no dates given).

    The 149 steps look gap-filled onto a regular grid over the 2006 season: ``step_days`` (2 days,
    nominal). Groups are the polygon ids.
    """
    path = Path(path)
    table = _read_csv(path, header=None)
    values = _date_major(path, table.iloc[:, 2:], 149, len(TEMPCNN_BANDS))
    days = np.broadcast_to(np.arange(149, dtype=np.int64) * step_days, values.shape[:2]).copy()
    series = PixelSeries(values, days, table[0].to_numpy(np.int64), str(path), table[1].to_numpy(np.int64))
    return Converted(series, TEMPCNN_BANDS, TEMPCNN_CLASSES)


def _read_rda_tibble(path: Path, name: str) -> pd.DataFrame:
    try:
        import rdata
    except ModuleNotFoundError:
        raise ModuleNotFoundError("reading R .rda files needs the rdata package: pip install rdata") from None
    if not path.is_file():
        raise MissingInput(f"{path}: no such file")
    with warnings.catch_warnings():  # rdata warns about R classes it has no constructor for
        warnings.simplefilter("ignore")
        try:
            content = rdata.read_rda(str(path))
        except Exception as error:  # rdata raises several types (NotImplementedError, ValueError...) for other files
            raise InputError(f"{path}: not a readable R .rda file ({' '.join(str(error).split())})") from error
    if name not in content:
        raise InputError(f"{path}: no object {name!r} (found {list(content)})")
    return content[name]


def read_sits_samples(path: str | Path, object_name: str, bands: Sequence[str]) -> Converted:
    """An R ``sits`` sample tibble (.rda): one row per sample, a ``time_series`` tibble each.

    Samples come from different years, each one agricultural year: days count from the start of
    each sample's season (:meth:`TimeAxis.fit_season` of the first dates, 09-13 for the MOD13Q1
    samples), so a raster stack of any year maps on the same days. R dates are days since
    1970-01-01. Classes are sorted names.
    """
    path = Path(path)
    table = _read_rda_tibble(path, object_name)
    missing = [band for band in bands if band not in table["time_series"].iloc[0]]
    if missing:
        raise InputError(f"{path}: bands {missing} missing from time_series (has {list(table['time_series'].iloc[0])})")
    lengths = {len(series) for series in table["time_series"]}
    if len(lengths) != 1:
        raise InputError(f"{path}: time_series have different numbers of dates {sorted(lengths)}")
    values = np.stack([series[list(bands)].to_numpy(np.float32) for series in table["time_series"]])
    dates = np.stack([series["Index"].to_numpy(np.float64) for series in table["time_series"]])
    dates = (np.datetime64("1970-01-01", "D") + dates.round().astype(np.int64)).astype("datetime64[D]")
    time_axis = TimeAxis.fit_season(dates[:, 0])
    days = (dates - time_axis.anchors(dates[:, :1])).astype(np.int64)
    labels = table["label"].astype(str).to_numpy()
    class_names = sorted(set(labels))
    index = {name: i for i, name in enumerate(class_names)}
    series = PixelSeries(values, days, np.array([index[label] for label in labels]), str(path))
    return Converted(series, list(bands), class_names, time_axis)


def read_mato_grosso(path: str | Path) -> Converted:
    """Mato Grosso MOD13Q1 samples (1,892 x 23 dates x 6 bands, 9 classes), R ``sits`` .rda."""
    return read_sits_samples(path, "br_mt_1_8K_9classes_6bands", MATO_GROSSO_BANDS)


def read_sinop_samples(path: str | Path) -> Converted:
    """Sinop NDVI samples (1,218 x 12 dates, 4 classes), R ``sits`` .rda (a subset of Mato Grosso)."""
    return read_sits_samples(path, "samples_modis_ndvi", ["NDVI"])


def read_ucr(path: str | Path, step_days: int = 8) -> Converted:
    """One UCR Crop .tsv file (see :mod:`cmap.data.ucr`)."""
    return Converted(read_ucr_crop(path, step_days), ["ndvi"], list(UCR_CROP_CLASSES))
