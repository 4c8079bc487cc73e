"""Readers of real datasets' original files and of the user's own tables -> :mod:`cmap.data.store`.

Each reader returns a :class:`Converted` (series, band names, class names, time axis); the
``cmap convert`` command writes it as a store. The original files are read in place.
"""

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cmap.data.contract import RawValues
from cmap.data.series import PixelSeries
from cmap.data.store import write_store
from cmap.data.time_axis import TimeAxis, resolve_time_axis
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
        raise FileNotFoundError(f"{path}: no such file")
    return pd.read_csv(path, **kwargs)


def _date_major(path: Path, table: pd.DataFrame, num_dates: int, num_bands: int) -> np.ndarray:
    values = table.to_numpy(np.float32)
    if values.shape[1] != num_dates * num_bands:
        raise ValueError(
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
            raise ValueError(f"{path}: column {column!r} is missing")
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
        raise FileNotFoundError(f"{path}: no such file")
    with warnings.catch_warnings():  # rdata warns about R classes it has no constructor for
        warnings.simplefilter("ignore")
        content = rdata.read_rda(str(path))
    if name not in content:
        raise ValueError(f"{path}: no object {name!r} (found {list(content)})")
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
        raise ValueError(f"{path}: bands {missing} missing from time_series (has {list(table['time_series'].iloc[0])})")
    lengths = {len(series) for series in table["time_series"]}
    if len(lengths) != 1:
        raise ValueError(f"{path}: time_series have different numbers of dates {sorted(lengths)}")
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


#: Band cells read as a missing date (a cloud, a gap) unless ``missing_values`` says otherwise; any
#: other cell that is not a number is an error.
MISSING_VALUES = ("", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None")
#: Without ``time_axis``, dates spanning more days than this (more than one season) are an error.
ONE_SEASON_DAYS = 366


class _Cells:
    """Errors naming a table's cell: ``<file>: column 'B4' row 3: <problem> (line 5 of the file)``.

    Rows count from 0 after the header; in a CSV, line = row + 2 (the header is line 1).
    """

    def __init__(self, path: Path, csv: bool) -> None:
        self.path, self.csv = path, csv

    def error(self, column: str, row: int, problem: str) -> InputError:
        line = f" (line {row + 2} of the file)" if self.csv else ""
        return InputError(f"{self.path}: column {column!r} row {row}: {problem}{line}")


def _read_long_table(
    path: Path, encoding: str, delimiter: str, columns: Sequence[str] | None = None
) -> tuple[pd.DataFrame, bool]:
    """The table as read (CSV: every cell as text, nothing read as missing; Parquet: as typed), and
    whether it is a CSV. Rows keep their position in the file as index; blank CSV lines (blank in
    ``columns``) are dropped. ``columns``: read only these (those the file has), not a wide table's
    other columns (coordinates, geometries, notes), which would cost memory and time for nothing."""
    if not path.is_file():
        raise MissingInput(f"{path}: no such file")
    wanted = None if columns is None else set(columns)
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            if wanted is not None:
                import pyarrow.parquet

                names = pyarrow.parquet.read_schema(path).names
                return pd.read_parquet(path, columns=[name for name in names if name in wanted]), False
            return pd.read_parquet(path), False
        except Exception as error:  # pyarrow raises several types for a file that is not Parquet
            raise InputError(f"{path}: not a readable Parquet file ({error})") from error
    try:
        table = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False, encoding=encoding,
            sep=delimiter, usecols=None if wanted is None else (lambda name: name in wanted),
        )  # fmt: skip
    except UnicodeDecodeError as error:
        raise InputError(
            f"{path}: not readable as {encoding} text ({error}); give the file's encoding with --encoding "
            "(e.g. latin-1, cp1252)"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"{path}: not a readable CSV table ({error})") from None
    return table[~(table == "").all(axis=1)], True


def _text(column: pd.Series) -> pd.Series:
    """Cells as text: CSV cells are already; Parquet nulls become empty text, other values ``str``.

    A whole number in a float column is written as an integer: a Parquet column of integer codes
    becomes float when it holds a null (pandas), and its ``7.0`` is the code ``7``."""
    if pd.api.types.is_string_dtype(column) and not column.isna().any():  # every cell a string (fast check)
        return column
    return pd.Series([_cell_text(value) for value in column], index=column.index, dtype=object)


def _cell_text(value: object) -> str:
    if _is_null(value):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT or value is pd.NA


def _parse_dates(cells: _Cells, column: str, values: pd.Series, date_format: str | None) -> np.ndarray:
    """datetime64[D] of each row: ``date_format`` (strftime codes) if given; otherwise ISO 8601
    (``YYYY-MM-DD``, ``YYYYMMDD``, ``YYYY/MM/DD``, with or without a time), or any other layout
    that reads the same day-first and month-first (``13/01/2020``, ``1 March 2020``). A date that
    reads differently either way (``03/01/2020``) is an error asking for ``date_format``."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):  # a typed Parquet column
        dates = values.dt.tz_localize(None) if values.dt.tz is not None else values
        if dates.isna().any():
            row = int(values.index[np.flatnonzero(dates.isna().to_numpy())[0]])
            raise cells.error(column, row, "empty date")
        return dates.to_numpy().astype("datetime64[D]")
    text = _text(values).str.strip()
    unique, inverse = np.unique(text.to_numpy(dtype=str), return_inverse=True)

    def fail(position: int, problem: str) -> InputError:
        row = int(values.index[np.flatnonzero(inverse == position)[0]])
        return cells.error(column, row, problem)

    with warnings.catch_warnings():  # pandas warns when a layout is guessed; we check the guesses ourselves
        warnings.simplefilter("ignore")
        if date_format is not None:
            parsed = pd.to_datetime(pd.Index(unique), format=date_format, errors="coerce")
            if parsed.isna().any():
                position = int(np.flatnonzero(parsed.isna())[0])
                raise fail(position, f"date {str(unique[position])!r} does not match --date_format {date_format!r}")
        else:
            parsed = pd.to_datetime(pd.Index(unique), format="ISO8601", errors="coerce")
            if parsed.tz is not None:
                parsed = parsed.tz_localize(None)
            parsed = parsed.to_numpy().astype("datetime64[s]")
            for position in np.flatnonzero(np.isnat(parsed) | np.array([_too_short(d) for d in unique], dtype=bool)):
                value = str(unique[position])
                if _too_short(value):
                    raise fail(position, f"unparsable date {value!r}: not a full date (day, month and year)")
                if value[:4].isdigit():  # year first: ISO 8601 only (2021-13-45 is no date, not 13 January)
                    raise fail(position, f"unparsable date {value!r} (expected YYYY-MM-DD or --date_format)")
                month_first, day_first = (
                    pd.to_datetime(pd.Index([value]), format="mixed", dayfirst=first, errors="coerce")[0]
                    for first in (False, True)
                )
                if pd.isna(month_first) or pd.isna(day_first):
                    raise fail(position, f"unparsable date {value!r} (expected YYYY-MM-DD or --date_format)")
                if month_first != day_first:
                    raise fail(
                        position,
                        f"ambiguous date {value!r}: {month_first.date()} read month first, {day_first.date()} day "
                        "first; give the layout with --date_format (e.g. %d/%m/%Y or %m/%d/%Y)",
                    )
                parsed[position] = np.datetime64(month_first.tz_localize(None) if month_first.tz else month_first, "s")
            return parsed.astype("datetime64[D]")[inverse]
    if parsed.tz is not None:
        parsed = parsed.tz_localize(None)
    return parsed.to_numpy().astype("datetime64[D]")[inverse]


def _too_short(value: str) -> bool:
    """A date needs a day, a month and a year: ``2020`` or ``2020-03`` are not dates (pandas reads them as the 1st)."""
    return not (len(re.findall(r"\d+|[^\W\d_]+", value)) >= 3 or (len(value) == 8 and value.isdigit()))


#: Values that data sources write for "no data" (GDAL / ENVI / int16 / uint16 / float32 fill values):
#: in a band column, outside the range of the column's other values and not declared in
#: ``missing_values``, they are an error rather than reflectances (-9999 would skew the statistics).
NODATA_SENTINELS = (
    -9999.0,
    -999.0,
    -32768.0,
    -32767.0,
    32767.0,
    65535.0,
    -3.4028234663852886e38,
    3.4028234663852886e38,
)


def _numeric_markers(missing_values: Sequence[str], decimal: str) -> np.ndarray:
    """The markers that are numbers (``-9999``): a cell of that value is missing however it is
    written (``-9999.0``, ``-9999,0``, or a number in a Parquet column)."""
    numbers = pd.to_numeric(
        pd.Series([str(v).strip().replace(decimal, ".") for v in missing_values], dtype=object), errors="coerce"
    )
    return np.unique(numbers.dropna().to_numpy(np.float64))


def _parse_numbers(
    cells: _Cells, column: str, values: pd.Series, missing_values: Sequence[str], decimal: str
) -> np.ndarray:
    """float32 of each row; ``missing_values`` markers (after stripping blanks; numeric markers by
    value) are NaN (a missing date). An undeclared nodata value (:data:`NODATA_SENTINELS`) outside
    the column's other values is an error."""
    markers = _numeric_markers(missing_values, decimal)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        parsed = values.to_numpy(np.float64, na_value=np.nan, copy=True)
    else:
        text = _text(values).str.strip()
        missing = text.isin(list(missing_values)).to_numpy()
        numbers = text.str.replace(decimal, ".", regex=False) if decimal != "." else text
        parsed = pd.to_numeric(numbers.where(~missing, "nan"), errors="coerce").to_numpy(np.float64, copy=True)
        bad = np.isnan(parsed) & ~missing
        if bad.any():
            row = int(values.index[np.flatnonzero(bad)[0]])
            raise cells.error(
                column,
                row,
                f"{text.loc[row]!r} is not a number (decimal {decimal!r}) nor a missing-value marker "
                f"{list(missing_values)}; mark missing values with --missing_values, decimal commas with --decimal ,",
            )
    parsed[np.isin(parsed, markers)] = np.nan
    _check_sentinels(cells, column, values.index, parsed, missing_values)
    return parsed.astype(np.float32)


def _check_sentinels(cells: _Cells, column: str, rows: pd.Index, parsed: np.ndarray, missing_values) -> None:
    """Raise on a nodata value (:data:`NODATA_SENTINELS`) that is not declared and lies outside the range
    of the column's other values: a missing-value marker read as a reflectance."""
    found = np.isin(parsed, NODATA_SENTINELS)
    if not found.any():
        return
    for sentinel in np.unique(parsed[found]):
        others = parsed[np.isfinite(parsed) & (parsed != sentinel)]
        if others.size and others.min() <= sentinel <= others.max():
            continue  # a value among others: data, not a marker
        where = np.flatnonzero(parsed == sentinel)
        within = (
            f"the column's other values lie in [{others.min():g}, {others.max():g}]" if others.size else "every value"
        )
        raise cells.error(
            column,
            int(rows[where[0]]),
            f"{sentinel:g} looks like a missing-value (nodata) marker ({len(where)} rows; {within}); declare it "
            f"so those dates count as missing: --missing_values {' '.join(repr(v) for v in missing_values)} "
            f"'{sentinel:g}'",
        )


def _one_per_sample(cells: _Cells, column: str, values: np.ndarray, codes: np.ndarray, ids: np.ndarray, rows):
    """The value of ``column`` of each sample (every row of a sample must agree), in sample order."""
    first_row = np.unique(codes, return_index=True)[1]  # the first row of each sample (codes 0..len(ids)-1)
    first = values[first_row]
    differ = np.flatnonzero(values != first[codes])
    if len(differ):
        i = differ[0]
        sample = codes[i]
        raise InputError(
            f"{cells.path}: sample {str(ids[sample])!r} has {column} {first[sample]!r} (row {rows[first_row[sample]]}) "
            f"and {values[i]!r} (row {rows[i]}): one sample is one field in one season, with one {column}"
        )
    return first, first_row


def _check_band_gaps(path: Path, bands: Sequence[str], missing: np.ndarray) -> None:
    """A date counts only when every band has a value, so one band's gaps mask whole dates: a band
    column without any value is an error; a band that alone masks more than 10 % of the rows (20 at least) is a
    warning naming it (e.g. a band of another resolution, missing from some products)."""
    empty = [band for band, column in zip(bands, missing.T, strict=True) if column.all()]
    if empty:
        raise InputError(
            f"{path}: band columns {empty} have no value in any row: every date would be missing; leave them out "
            "of --bands"
        )
    for b, band in enumerate(bands if len(bands) > 1 else []):
        alone = missing[:, b] & ~np.delete(missing, b, axis=1).any(axis=1)
        if alone.mean() > 0.1 and alone.sum() >= 20:  # not a few cells of a small table
            warnings.warn(
                f"{path}: band {band!r} alone is missing on {alone.mean():.0%} of the rows ({int(alone.sum())}), where "
                "every other band has a value: a date counts only when every band has one, so these dates are "
                f"missing; leave {band!r} out of --bands to keep them",
                stacklevel=3,
            )


def _check_zero_rows(cells: _Cells, date_column: str, rows: np.ndarray, bands: Sequence[str], values) -> None:
    """Warn about rows whose every band is exactly 0 (two bands or more): no surface reflects
    nothing in every band; it is the fill value of Sentinel-2 L2A and many exports, read here as a
    valid date of zeros unless declared missing."""
    if len(bands) < 2:
        return
    zeros = np.flatnonzero((values == 0).all(axis=1))
    if len(zeros):
        problem = (
            f"every band is 0 on {len(zeros)} rows, first here: a nodata fill value? They count as valid dates of "
            "zeros; if 0 means no data, declare it: --missing_values '' 0"
        )
        warnings.warn(str(cells.error(date_column, int(rows[zeros[0]]), problem)), stacklevel=3)


def class_order(labels) -> list[str]:
    """Class names in label order: by number when every label is an integer (``2`` before ``10``, as
    a table of crop codes means), sorted text otherwise."""
    labels = list(labels)
    if labels and all(re.fullmatch(r"[+-]?\d+", label.strip()) for label in labels):
        return sorted(labels, key=lambda label: (int(label), label))
    return sorted(labels)


def read_table(
    path: str | Path,
    bands: Sequence[str],
    sample_column: str = "sample_id",
    date_column: str = "date",
    label_column: str | None = "label",
    group_column: str | None = None,
    class_names: Sequence[str] | None = None,
    reference_date: str | None = None,
    time_axis: TimeAxis | str | None = None,
    season_start: str | None = None,
    date_format: str | None = None,
    encoding: str = "utf-8-sig",
    missing_values: Sequence[str] = MISSING_VALUES,
    delimiter: str = ",",
    decimal: str = ".",
    allow_unlabelled: bool = False,
) -> Converted:
    """The user's own long table, one row per (sample, date): CSV or Parquet.

    Columns: ``sample_column`` (any text: the id is kept in the store and written beside each
    prediction), ``date_column``, one column per band, optionally ``label_column`` (class names)
    and ``group_column`` (parcel / polygon id). Samples keep the order of their first rows; dates
    are sorted within each sample; samples have any number of dates (padded with missing dates).

    Parsing is explicit. CSV cells are read as text: a label or id is never a missing value
    (``NA`` or ``None`` are class names like any other). Dates: ``date_format`` (strftime codes,
    e.g. ``%d/%m/%Y``) or else ISO 8601, or a layout that reads the same day-first and
    month-first; an ambiguous date (``03/01/2020``) is an error. A band cell is a number
    (``decimal`` point) or one of ``missing_values`` (a clouded date); anything else is an error.
    Every error names the file, column, row (from 0, after the header; ``line`` in a CSV) and value.

    Checks: a sample id may not be empty; a sample's label and group are the same on all its
    rows; an empty label is an unlabelled sample (label -1, for pretraining stores) with
    ``allow_unlabelled``, an error otherwise; two rows of one sample on one date are an error.

    Time axis (:class:`~cmap.data.contract.TimeAxis`, recorded in the store and the checkpoints):
    ``time_axis="season_start"`` counts days from the latest ``season_start`` (``MM-DD``; default:
    fitted to the samples' first dates) on or before each sample's first date: samples of many
    years each see the day of their season. ``"series_start"``: from each sample's first date.
    ``"reference_date"``: from ``reference_date`` (default: the table's earliest date). Without
    ``time_axis``: ``season_start`` if given, else ``reference_date``; then dates spanning more
    than one season (366 days) are an error asking for a choice, as the days would run into the
    thousands and the model would see the calendar year.

    ``class_names`` fixes the class order (default: :func:`class_order`).
    """
    path = Path(path)
    required = [sample_column, date_column, *bands] + [c for c in (label_column, group_column) if c]
    table, csv = _read_long_table(path, encoding, delimiter, required)
    cells = _Cells(path, csv)
    missing = [column for column in required if column not in table]
    if missing:
        found = list(_read_long_table(path, encoding, delimiter)[0].columns)
        raise InputError(f"{path}: columns {missing} are missing (found {found})")
    if len(table) == 0:
        raise InputError(f"{path}: no rows")
    rows = table.index.to_numpy()
    ids_text = _text(table[sample_column])
    empty = np.flatnonzero(ids_text.str.strip().to_numpy() == "")
    if len(empty):
        raise cells.error(sample_column, int(rows[empty[0]]), "empty sample id; every row needs its sample's id")
    codes, ids = pd.factorize(ids_text.to_numpy(dtype=object))  # samples in the order of their first rows
    ids = np.asarray(ids, dtype=str)
    dates = _parse_dates(cells, date_column, table[date_column], date_format)
    values = np.stack(
        [_parse_numbers(cells, band, table[band], missing_values, decimal) for band in bands], axis=-1
    ).reshape(len(table), len(bands))
    first_dates = np.full(len(ids), np.datetime64("9999-12-31", "D"))
    np.minimum.at(first_dates, codes, dates)
    explicit = time_axis is not None or reference_date is not None or season_start is not None
    try:
        axis = (
            time_axis
            if isinstance(time_axis, TimeAxis)
            else resolve_time_axis(time_axis, reference_date, season_start, first_dates)
        )
    except ValueError as error:  # a malformed --season_start or --reference_date, or a missing one
        raise InputError(f"{path}: {error}") from None
    if not explicit and (dates.max() - dates.min()).astype(np.int64) >= ONE_SEASON_DAYS:
        suggested = TimeAxis.fit_season(first_dates).season_start
        raise InputError(
            f"{path}: dates span {dates.min()} to {dates.max()}, more than one season: counted from one reference "
            f"date, days would reach {int((dates.max() - dates.min()).astype(np.int64))} and a model would learn the "
            f"calendar year. Choose the time axis: --time_axis season_start --season_start {suggested} (days since "
            "each sample's season start; the fitted one shown), --time_axis series_start (days since each sample's "
            "first date), or --reference_date YYYY-MM-DD to keep one reference date"
        )
    anchors = axis.anchors(first_dates)
    day = (dates - anchors[codes]).astype(np.int64)
    if (day < 0).any():
        i = int(np.flatnonzero(day < 0)[0])
        raise cells.error(
            date_column,
            int(rows[i]),
            f"date {dates[i]} of sample {str(ids[codes[i]])!r} lies before day 0 of the time axis ({axis.describe()})",
        )
    order = np.lexsort((day, codes))
    sorted_codes, sorted_day = codes[order], day[order]
    same = np.flatnonzero((sorted_codes[1:] == sorted_codes[:-1]) & (sorted_day[1:] == sorted_day[:-1]))
    if len(same):
        a, b = order[same[0]], order[same[0] + 1]
        raise InputError(
            f"{path}: sample {str(ids[codes[a]])!r} has two rows for the same date {dates[a]} (rows {rows[min(a, b)]} "
            f"and {rows[max(a, b)]})"
        )
    starts = np.r_[0, np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    num_dates = int(rank.max()) + 1
    series_values = np.full((len(ids), num_dates, len(bands)), np.nan, dtype=np.float32)
    series_values[sorted_codes, rank] = values[order]
    series_days = np.zeros((len(ids), num_dates), dtype=np.int64)
    series_days[sorted_codes, rank] = sorted_day
    _check_band_gaps(path, bands, ~np.isfinite(values))
    _check_zero_rows(cells, date_column, rows, bands, values)
    no_valid = np.flatnonzero(~np.isfinite(series_values).all(axis=-1).any(axis=1))
    if len(no_valid):
        raise InputError(
            f"{path}: {len(no_valid)} series have no valid date (every date has a missing band value), first at "
            f"sample index {int(no_valid[0])} (sample_id {str(ids[no_valid[0]])!r}); remove them"
        )
    labels = groups = None
    names: list[str] = []
    if label_column:
        label_text = np.array(_text(table[label_column]).tolist(), dtype=object)
        unlabelled = np.array([not label.strip() for label in label_text])
        label_text[unlabelled] = ""
        sample_labels, first_row = _one_per_sample(cells, "label", label_text, codes, ids, rows)
        sample_labels = sample_labels.astype(str)
        empty = np.flatnonzero(sample_labels == "")
        if len(empty) and not allow_unlabelled:
            raise cells.error(
                label_column,
                int(rows[first_row[empty[0]]]),
                f"sample {str(ids[empty[0]])!r} has an empty label ({len(empty)} samples have none): give every "
                "sample a class, or pass --allow_unlabelled to keep them unlabelled (label -1: a store for "
                "pretraining, not for supervised training)",
            )
        found = class_order(set(sample_labels.tolist()) - {""})
        names = list(class_names) if class_names is not None else found
        unknown = sorted(set(found) - set(names))
        if unknown:
            raise InputError(f"{path}: column {label_column!r} has labels {unknown} not in the classes {names}")
        index = {name: i for i, name in enumerate(names)}
        labels = np.array([index.get(label, -1) for label in sample_labels], dtype=np.int64)
    if group_column:
        group_text = np.array(_text(table[group_column]).tolist(), dtype=object)
        empty = np.flatnonzero([not group.strip() for group in group_text])
        if len(empty):
            raise cells.error(group_column, int(rows[empty[0]]), "empty group")
        sample_groups, _ = _one_per_sample(cells, "group", group_text, codes, ids, rows)
        groups = pd.factorize(sample_groups)[0].astype(np.int64)
    series = PixelSeries(series_values, series_days, labels, str(path), groups, ids)
    return Converted(series, list(bands), names, axis)
