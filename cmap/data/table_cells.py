"""The cells of a table (:mod:`cmap.data.table`) read explicitly: text, dates and numbers, each error
naming the file, column, row and value (:class:`TableCells`)."""

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cmap.outputs import InputError

#: Band cells read as a missing date (a cloud, a gap) unless ``missing_values`` says otherwise; any
#: other cell that is not a number is an error.
MISSING_VALUES = ("", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None")


class TableCells:
    """Errors naming a table's cell: ``<file>: column 'B4' row 3: <problem> (line 5 of the file)``.

    Rows count from 0 after the header; in a CSV, line = row + 2 (the header is line 1).
    """

    def __init__(self, path: Path, csv: bool) -> None:
        self.path, self.csv = path, csv

    def error(self, column: str, row: int, problem: str) -> InputError:
        line = f" (line {row + 2} of the file)" if self.csv else ""
        return InputError(f"{self.path}: column {column!r} row {row}: {problem}{line}")


def as_text(column: pd.Series) -> pd.Series:
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


def parse_dates(cells: TableCells, column: str, values: pd.Series, date_format: str | None) -> np.ndarray:
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
    text = as_text(values).str.strip()
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


def parse_numbers(
    cells: TableCells, column: str, values: pd.Series, missing_values: Sequence[str], decimal: str
) -> np.ndarray:
    """float32 of each row; ``missing_values`` markers (after stripping blanks; numeric markers by
    value) are NaN (a missing date). An undeclared nodata value (:data:`NODATA_SENTINELS`) outside
    the column's other values is an error."""
    markers = _numeric_markers(missing_values, decimal)
    parsed, bad = _cell_numbers(values, missing_values, decimal)
    if bad.any():
        row = int(values.index[np.flatnonzero(bad)[0]])
        raise cells.error(
            column,
            row,
            f"{as_text(values).loc[row].strip()!r} is not a number (decimal {decimal!r}) nor a missing-value marker "
            f"{list(missing_values)}; mark missing values with --missing_values, decimal commas with --decimal ,",
        )
    parsed[np.isin(parsed, markers)] = np.nan
    _check_sentinels(cells, column, values.index, parsed, missing_values)
    return parsed.astype(np.float32)


def _is_number_column(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype)


def _cell_numbers(values: pd.Series, missing_values: Sequence[str], decimal: str) -> tuple[np.ndarray, np.ndarray]:
    """(float64 of each cell, NaN for a missing-value marker or an empty Parquet cell; True where a cell is
    neither a number nor a marker). Numeric markers (``-9999``) are left as numbers here."""
    if _is_number_column(values):
        parsed = values.to_numpy(np.float64, na_value=np.nan, copy=True)
        return parsed, np.zeros(len(parsed), dtype=bool)
    text = as_text(values).str.strip()
    missing = text.isin(list(missing_values)).to_numpy()
    numbers = text.str.replace(decimal, ".", regex=False) if decimal != "." else text
    parsed = pd.to_numeric(numbers.where(~missing, "nan"), errors="coerce").to_numpy(np.float64, copy=True)
    return parsed, np.isnan(parsed) & ~missing


#: Band detection tries this many cells of a column first: a text column (names, geometries) is
#: then rejected without parsing all of its cells.
_FIRST_CELLS = 1000


def numeric_columns(
    table: pd.DataFrame, candidates: Sequence[str], missing_values: Sequence[str], decimal: str
) -> tuple[list[str], dict[str, str]]:
    """The ``candidates`` whose every cell is a number (``decimal`` mark) or a missing-value marker, with
    one number at least, in table order; and why each other candidate is not (its first cell that is
    not a number, with its row, or "no number")."""
    numeric, others = [], {}
    for column in candidates:
        values = table[column]
        for part in (values.iloc[:_FIRST_CELLS], values):
            parsed, bad = _cell_numbers(part, missing_values, decimal)
            if bad.any():
                row = int(part.index[np.flatnonzero(bad)[0]])
                others[column] = f"{as_text(part).loc[row].strip()[:40]!r} row {row}"
                break
        else:
            if np.isfinite(parsed).any():
                numeric.append(column)
            else:
                others[column] = "no number"
    return numeric, others


def _check_sentinels(cells: TableCells, column: str, rows: pd.Index, parsed: np.ndarray, missing_values) -> None:
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
