"""Your own table -> a store: one row per (sample, date), CSV or Parquet (``cmap convert table``).

:func:`read_table` reads it explicitly (:mod:`cmap.data.table_cells`: every error names the file,
column, row and value), puts each sample's dates on the time axis (:mod:`cmap.data.time_axis`) and
checks what one sample must agree on (label, group, one row per date).
"""

import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cmap.data.convert import Converted
from cmap.data.series import PixelSeries
from cmap.data.table_cells import MISSING_VALUES, TableCells, as_text, numeric_columns, parse_dates, parse_numbers
from cmap.data.time_axis import TimeAxis, resolve_time_axis
from cmap.outputs import InputError, MissingInput

#: Without ``time_axis``, dates spanning more days than this (more than one season) are an error.
ONE_SEASON_DAYS = 366


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
    except LookupError as error:  # codecs: no such encoding
        raise InputError(f"--encoding {encoding!r}: {error}; e.g. utf-8, latin-1, cp1252") from None
    return table[~(table == "").all(axis=1)], True


def _one_per_sample(cells: TableCells, column: str, values: np.ndarray, codes: np.ndarray, ids: np.ndarray, rows):
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


def _check_zero_rows(cells: TableCells, date_column: str, rows: np.ndarray, bands: Sequence[str], values) -> None:
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


def _check_valid_dates(path: Path, series_values: np.ndarray, ids: np.ndarray) -> None:
    """A series without any date whose every band has a value is an error naming the first one."""
    no_valid = np.flatnonzero(~np.isfinite(series_values).all(axis=-1).any(axis=1))
    if len(no_valid):
        raise InputError(
            f"{path}: {len(no_valid)} series have no valid date (every date has a missing band value), first at "
            f"sample index {int(no_valid[0])} (sample_id {str(ids[no_valid[0]])!r}); remove them"
        )


def class_order(labels) -> list[str]:
    """Class names in label order: by number when every label is an integer (``2`` before ``10``, as
    a table of crop codes means), sorted text otherwise."""
    labels = list(labels)
    if labels and all(re.fullmatch(r"[+-]?\d+", label.strip()) for label in labels):
        return sorted(labels, key=lambda label: (int(label), label))
    return sorted(labels)


def read_table(
    path: str | Path,
    bands: Sequence[str] | None,
    sample_column: str = "sample_id",
    date_column: str = "date",
    label_column: str | None = "label",
    group_column: str | Sequence[str] | None = None,
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
    report: Callable[[str], object] | None = None,
) -> Converted:
    """The user's own long table, one row per (sample, date): CSV or Parquet.

    Columns: ``sample_column`` (any text: the id is kept in the store and written beside each
    prediction), ``date_column``, one column per band, optionally ``label_column`` (class names)
    and ``group_column`` (parcel / polygon id; several columns: one group per distinct combination,
    e.g. ``["longitude", "latitude"]``, one group per location, so a field's seasons stay in one
    split). Samples keep the order of their first rows; dates are sorted within each sample;
    samples have any number of dates (padded with missing dates).

    ``bands=None``: the bands are every numeric column (every cell a number or a missing-value
    marker) other than the id, date, label and group columns, in table order; ``report`` is
    called with the line naming them (and the other columns, left out). No such column is an error.

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
    groups_by = [group_column] if isinstance(group_column, str) else list(group_column or [])
    named = [sample_column, date_column, *([label_column] if label_column else []), *groups_by]
    table, cells = _read_columns(path, named + list(bands or []), encoding, delimiter, every_column=bands is None)
    if bands is None:
        bands = _numeric_bands(path, table, named, missing_values, decimal, report)
    rows = table.index.to_numpy()
    codes, ids = _sample_codes(cells, table[sample_column], sample_column, rows)
    dates = parse_dates(cells, date_column, table[date_column], date_format)
    values = np.stack(
        [parse_numbers(cells, band, table[band], missing_values, decimal) for band in bands], axis=-1
    ).reshape(len(table), len(bands))
    first_dates = np.full(len(ids), np.datetime64("9999-12-31", "D"))
    np.minimum.at(first_dates, codes, dates)
    axis = _table_time_axis(path, dates, first_dates, time_axis, reference_date, season_start)
    series_values, series_days = _series_arrays(cells, date_column, rows, codes, ids, dates, first_dates, values, axis)
    _check_band_gaps(path, bands, ~np.isfinite(values))
    _check_zero_rows(cells, date_column, rows, bands, values)
    _check_valid_dates(path, series_values, ids)
    labels, names = None, []
    if label_column:
        labels, names = _sample_labels(cells, table[label_column], label_column, codes, ids, rows, class_names,
                                       allow_unlabelled)  # fmt: skip
    groups = _sample_groups(cells, table, groups_by, codes, ids, rows) if groups_by else None
    series = PixelSeries(series_values, series_days, labels, str(path), groups, ids)
    return Converted(series, list(bands), names, axis)


def _read_columns(
    path: Path, required: list[str], encoding: str, delimiter: str, every_column: bool = False
) -> tuple[pd.DataFrame, TableCells]:
    """The ``required`` columns of the table (an error naming those missing), or with ``every_column`` all of
    them, and its cells' error namer."""
    table, csv = _read_long_table(path, encoding, delimiter, None if every_column else required)
    missing = [column for column in required if column not in table]
    if missing:
        found = list(_read_long_table(path, encoding, delimiter)[0].columns)
        raise InputError(f"{path}: columns {missing} are missing (found {found})")
    if len(table) == 0:
        raise InputError(f"{path}: no rows")
    return table, TableCells(path, csv)


def _numeric_bands(
    path: Path, table: pd.DataFrame, named: list[str], missing_values: Sequence[str], decimal: str,
    report: Callable[[str], object] | None,
) -> list[str]:  # fmt: skip
    """The band columns of a table given without bands: its numeric columns other than ``named``
    (:func:`~cmap.data.table_cells.numeric_columns`); none is an error naming the columns seen."""
    headerless = [column for column in table.columns if re.fullmatch(r"Unnamed: \d+", str(column))]  # pandas' name
    candidates = [column for column in table.columns if column not in named and column not in headerless]
    bands, others = numeric_columns(table, candidates, missing_values, decimal)
    others.update({column: "no header: a written index?" for column in headerless})
    left_out = ", ".join(f"{column} ({why})" for column, why in others.items())
    if not bands:
        raise InputError(
            f"{path}: no numeric column to read as bands: the columns are {list(table.columns)}, of which "
            f"{named} are the id, date, label or group columns and the others are not numbers"
            f"{f' ({left_out})' if left_out else ''}; name the band columns with --bands"
        )
    if report is not None:
        report(
            f"bands (from the numeric columns): {', '.join(bands)}"
            + (f"; not numbers, left out: {left_out}" if left_out else "")
        )
    return bands


def _sample_codes(cells: TableCells, column: pd.Series, name: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sample index of each row, sample ids): samples in the order of their first rows; an empty id is an error."""
    ids_text = as_text(column)
    empty = np.flatnonzero(ids_text.str.strip().to_numpy() == "")
    if len(empty):
        raise cells.error(name, int(rows[empty[0]]), "empty sample id; every row needs its sample's id")
    codes, ids = pd.factorize(ids_text.to_numpy(dtype=object))
    return codes, np.asarray(ids, dtype=str)


def _table_time_axis(
    path: Path, dates: np.ndarray, first_dates: np.ndarray, time_axis: TimeAxis | str | None,
    reference_date: str | None, season_start: str | None,
) -> TimeAxis:  # fmt: skip
    """The time axis of the options (:func:`~cmap.data.time_axis.resolve_time_axis`); with none given,
    dates spanning more than one season are an error asking for a choice."""
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
            f"calendar year. Choose the time axis: --time_axis season_start (days since each sample's season "
            f"start, fitted to the first dates: {suggested} here; --season_start MM-DD sets another), --time_axis "
            "series_start (days since each sample's first date), or --reference_date YYYY-MM-DD to keep one "
            "reference date"
        )
    return axis


def _series_arrays(
    cells: TableCells, date_column: str, rows: np.ndarray, codes: np.ndarray, ids: np.ndarray, dates: np.ndarray,
    first_dates: np.ndarray, values: np.ndarray, axis: TimeAxis,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(values (N, T, C) with NaN padding, days (N, T)): each sample's rows (``codes``: its sample; samples
    first dated ``first_dates``) sorted by day on ``axis``; a date before day 0 or two rows of one sample
    on one date are errors."""
    path = cells.path
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
    series_values = np.full((len(ids), num_dates, values.shape[1]), np.nan, dtype=np.float32)
    series_values[sorted_codes, rank] = values[order]
    series_days = np.zeros((len(ids), num_dates), dtype=np.int64)
    series_days[sorted_codes, rank] = sorted_day
    return series_values, series_days


def _sample_labels(
    cells: TableCells, column: pd.Series, name: str, codes: np.ndarray, ids: np.ndarray, rows: np.ndarray,
    class_names: Sequence[str] | None, allow_unlabelled: bool,
) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    """(label index of each sample, -1 when empty and ``allow_unlabelled``; the class names in label order)."""
    label_text = np.array(as_text(column).tolist(), dtype=object)
    unlabelled = np.array([not label.strip() for label in label_text])
    label_text[unlabelled] = ""
    sample_labels, first_row = _one_per_sample(cells, "label", label_text, codes, ids, rows)
    sample_labels = sample_labels.astype(str)
    empty = np.flatnonzero(sample_labels == "")
    if len(empty) and not allow_unlabelled:
        raise cells.error(
            name,
            int(rows[first_row[empty[0]]]),
            f"sample {str(ids[empty[0]])!r} has an empty label ({len(empty)} samples have none): give every "
            "sample a class, or pass --allow_unlabelled to keep them unlabelled (label -1: a store for "
            "pretraining, not for supervised training)",
        )
    found = class_order(set(sample_labels.tolist()) - {""})
    names = list(class_names) if class_names is not None else found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise InputError(f"{cells.path}: column {name!r} has labels {unknown} not in the classes {names}")
    index = {label: i for i, label in enumerate(names)}
    return np.array([index.get(label, -1) for label in sample_labels], dtype=np.int64), names


def _sample_groups(
    cells: TableCells, table: pd.DataFrame, names: list[str], codes: np.ndarray, ids: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """The group index of each sample: one group per distinct value of the ``names`` columns (per
    combination, with several), numbered in sample order; every row of a sample has its sample's
    values, and an empty cell is an error."""
    per_column = []
    for name in names:
        group_text = np.array(as_text(table[name]).tolist(), dtype=object)
        empty = np.flatnonzero([not group.strip() for group in group_text])
        if len(empty):
            raise cells.error(name, int(rows[empty[0]]), "empty group")
        what = "group" if len(names) == 1 else f"group column {name!r}"
        per_column.append(_one_per_sample(cells, what, group_text, codes, ids, rows)[0])
    keys = per_column[0] if len(names) == 1 else pd.MultiIndex.from_arrays(per_column)
    return pd.factorize(keys)[0].astype(np.int64)
