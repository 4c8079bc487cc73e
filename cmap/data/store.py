"""cmap's on-disk dataset format: a folder of NumPy arrays, read row by row (positioned reads).

::

    my_dataset/
      metadata.json   {"format": "cmap-series", "version": 1, "band_names": [...], "class_names": [...],
                       "time_axis": {"rule": "season_start", "season_start": "09-13", ...},
                       "raw_values": {"scale": 0.0001, "offset": 0, "valid_range": [...]} or null,
                       "num_series": N, "num_dates": T, "source": "..."}
      values.npy      float32 (N, T, C)  band values; NaN = missing date (cloud, gap) or padding
      days.npy        int32   (N, T)     day offset on the time axis (0 on padding)
      labels.npy      int64   (N,)       class index into class_names, -1 = unlabelled  [optional]
      groups.npy      int64   (N,)       parcel / polygon id, for leakage-free splits   [optional]
      sample_ids.npy  str     (N,)       the source's sample ids (fixed-width unicode)  [optional]

Why ``.npy`` files: a batch reads B random rows; :class:`~cmap.data.rows.NpyRows` reads exactly those rows with
one positioned read each (``os.pread``), no decoding, no extra dependency, and the operating
system's page cache as the only cache, so a store larger than memory trains with flat memory. (A
memory map would do too, but each page fault maps up to 64 KiB around an 864-byte row into the
process: resident memory then grows with the store, measured in ``benchmarks/data_throughput.py``.)
Zarr or Parquet would add chunk decoding on every random row read (Parquet is the right tool for the *input* table, see
:mod:`cmap.data.convert`). Variable series lengths are padding (NaN values) up to the longest.

Sample ids (``sample_ids.npy``, written when the source has ids, as the table converter's
``sample_id`` column) are a fixed-width unicode array (``<U{longest id}``): like the other arrays,
row ``i`` is one positioned read at a fixed offset (no pickled objects, no decoding of a whole
JSON or Parquet file to find one id), so ``cmap predict`` joins its predictions back to the
user's table by id at any store size. They are unique, non-empty strings, in row order.

A store is written to a temporary folder and renamed into place: it is complete or absent.
``overwrite`` replaces only a cmap store (a folder of store files with a ``metadata.json``),
never another folder or a file.
"""

import errno
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cmap.data.contract import RawValues
from cmap.data.rows import NpyRows, RelabelledRows
from cmap.data.series import UNSEEN_CLASS, PixelSeries
from cmap.data.time_axis import TimeAxis, resolve_time_axis, time_axis_arguments
from cmap.outputs import ExistingOutput, InputError, MissingInput, check_outputs, fsync_path, remove_stale_partials

FORMAT = "cmap-series"
VERSION = 1
ARRAYS = {"values": (np.float32, 3), "days": (np.int32, 2), "labels": (np.int64, 1), "groups": (np.int64, 1)}
#: Every file a store may hold: ``overwrite`` replaces a folder of these only.
#: Text files written with a store (``write_store``'s ``extra_files``): cmap extract's skipped shapes.
EXTRA_FILES = ("skipped_points.csv",)
STORE_FILES = {"metadata.json", "sample_ids.npy", *(f"{name}.npy" for name in ARRAYS), *EXTRA_FILES}


def check_replaceable(folder: Path) -> None:
    """Raise unless ``folder`` is a cmap store that ``overwrite`` may replace (not another folder, not a file)."""
    if folder.is_symlink() or not folder.is_dir():
        raise ExistingOutput(
            f"{folder} exists and is not a folder: overwrite replaces only a cmap series store; "
            "remove it yourself or choose another output"
        )
    others = sorted(entry.name for entry in folder.iterdir() if entry.name not in STORE_FILES)
    metadata = folder / "metadata.json"
    try:
        store_format = json.loads(metadata.read_text()).get("format") if metadata.is_file() else None
    except (ValueError, AttributeError, OSError):
        store_format = FORMAT  # a damaged store (only store files, see `others`) may be replaced
    if others or not metadata.is_file() or store_format != FORMAT:
        found = f"it holds {others[:5]}{' ...' if len(others) > 5 else ''}" if others else "no cmap metadata.json"
        raise ExistingOutput(
            f"{folder} exists and is not a cmap series store ({found}): overwrite replaces only a store; "
            "remove it yourself or choose another output"
        )


def check_store_output(folder: Path, overwrite: bool) -> None:
    """Raise unless a store may be written to ``folder``: absent, empty, or a store that ``overwrite`` replaces
    (``cmap extract`` asks before its reading, :func:`write_store` again when it writes)."""
    # An empty folder (made ready for the output) holds nothing to lose: the store takes its place.
    empty = folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())
    if (folder.exists() or folder.is_symlink()) and not empty:
        check_replaceable(folder)  # first: advice to overwrite only where overwrite would do it
        if not overwrite:
            raise ExistingOutput(f"{folder}: a cmap series store exists there; pass overwrite=True (--overwrite)")


def check_sample_ids(sample_ids: np.ndarray, source: str) -> np.ndarray:
    """Sample ids as a fixed-width unicode array; empty or repeated ids are an error naming the row."""
    ids = np.asarray(sample_ids)
    if ids.dtype.kind not in "UO":
        raise ValueError(f"{source}: sample ids must be strings, got dtype {ids.dtype}")
    ids = ids.astype(str) if len(ids) else np.zeros(0, dtype="<U1")
    empty = np.flatnonzero(np.char.str_len(np.char.strip(ids)) == 0)
    if len(empty):
        raise ValueError(f"{source}: sample id of row {int(empty[0])} is empty")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        repeated = unique[counts > 1][0]
        raise ValueError(f"{source}: sample id {str(repeated)!r} names {int(counts[counts > 1][0])} series")
    return ids


def write_store(
    folder: str | Path,
    series: PixelSeries,
    band_names: list[str],
    class_names: list[str],
    time_axis: TimeAxis | None = None,
    raw_values: RawValues | None = None,
    overwrite: bool = False,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write ``series`` (labels, groups and sample ids included when present) as a store in ``folder``.

    ``extra_files``: files (names of :data:`EXTRA_FILES`) written into the store with it, published together.

    ``time_axis``: how the series' ``days`` were counted (default: from each series' first date);
    ``raw_values``: the raw-value convention of the rasters the series came from, if any. Both
    travel with the data into checkpoints (:class:`~cmap.data.contract.InputContract`).
    """
    folder = Path(folder)
    if series.values.shape[-1] != len(band_names):
        raise ValueError(
            f"{series.source}: {series.values.shape[-1]} bands per date but {len(band_names)} band names {band_names}"
        )
    bad_names = [name for name in class_names if not isinstance(name, str) or not name.strip()]
    if bad_names:
        raise ValueError(f"{series.source}: class names must be non-empty strings, got {bad_names}")
    if series.labels is not None:
        bad = (series.labels < -1) | (series.labels >= len(class_names))
        if bad.any():
            raise ValueError(
                f"{series.source}: label index {int(series.labels[bad][0])} is not in the "
                f"{len(class_names)} classes {class_names}"
            )
    sample_ids = None if series.sample_ids is None else check_sample_ids(series.sample_ids, series.source)
    check_store_output(folder, overwrite)
    # Never the source itself, nor a folder holding it.
    check_outputs([folder], [series.source] if Path(series.source).exists() else [], lambda _: True, "store")
    remove_stale_partials(folder, (".tmp-", ".old-"))  # left by killed conversions
    temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    arrays = {"values": series.values, "days": series.days, "labels": series.labels, "groups": series.groups}
    try:
        for name, array in arrays.items():
            if array is not None:
                np.save(temporary / f"{name}.npy", np.ascontiguousarray(array, dtype=ARRAYS[name][0]))
        if sample_ids is not None:
            np.save(temporary / "sample_ids.npy", sample_ids)
        for name, data in (extra_files or {}).items():
            if name not in EXTRA_FILES:
                raise ValueError(f"{folder}: {name!r} is not a file of a store ({EXTRA_FILES})")
            (temporary / name).write_bytes(data)
        write_metadata(
            temporary, band_names, class_names, series.values.shape[:2], time_axis or TimeAxis(), raw_values,
            series.source,
        )  # fmt: skip
        open_store(temporary, lazy=True)  # read back: every array's header and size against metadata.json
        for path in temporary.iterdir():
            fsync_path(path)
        fsync_path(temporary, directory=True)
    except BaseException as error:  # a failed or interrupted write (disk full, Ctrl+C) leaves nothing behind
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
            raise OSError(
                error.errno or errno.EIO, f"{folder}: writing the store failed, nothing written ({error})"
            ) from error
        raise
    previous = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():  # set aside: the store is absent between two renames only, never half-deleted
        os.replace(folder, previous)
    os.replace(temporary, folder)
    fsync_path(folder.parent, directory=True)
    shutil.rmtree(previous, ignore_errors=True)
    return folder


def write_metadata(
    folder: Path,
    band_names: list[str],
    class_names: list[str],
    shape: tuple[int, int],
    time_axis: TimeAxis,
    raw_values: RawValues | None,
    source: str,
) -> None:
    """Write ``metadata.json`` for arrays of (num_series, num_dates) = ``shape`` in ``folder``."""
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "band_names": list(band_names),
        "class_names": list(class_names),
        "time_axis": time_axis.to_dict(),
        "raw_values": None if raw_values is None else raw_values.to_dict(),
        "num_series": int(shape[0]),
        "num_dates": int(shape[1]),
        "source": source,
    }
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=1, allow_nan=False))  # NaN is not JSON


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The store's metadata, checked (format, version, required fields)."""
    path = Path(folder) / "metadata.json"
    if not path.is_file():
        raise MissingInput(f"{path}: not found; {folder} is not a cmap series store")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise InputError(
            f"{path}: format {metadata.get('format')!r} version {metadata.get('version')!r}, "
            f"expected {FORMAT!r} version {VERSION}"
        )
    for key in ("band_names", "class_names", "num_series", "num_dates"):
        if key not in metadata:
            raise InputError(f"{path}: field {key!r} is missing")
    return metadata


def store_time_axis(metadata: dict[str, Any]) -> TimeAxis:
    """The store's time axis (stores written before it was recorded have ``reference_date`` or nothing)."""
    if "time_axis" in metadata:
        return TimeAxis.from_dict(metadata["time_axis"])
    return resolve_time_axis(reference_date=metadata.get("reference_date"), default=TimeAxis())


def store_raw_values(metadata: dict[str, Any]) -> RawValues | None:
    content = metadata.get("raw_values")
    return None if content is None else RawValues.from_dict(content)


def read_store_pair(path: str | Path, test_path: str | Path | None) -> dict[str, Any]:
    """The metadata of a training store, checked against its test store's: same bands and time axis
    (errors say how to convert the test table to match). The test store's classes are matched by
    name (:func:`relabel`): in any order, some of the training classes or others besides (their
    series are reported, not scored: :func:`unseen_classes`)."""
    metadata = read_metadata(path)
    if test_path is not None:
        test_metadata = read_metadata(test_path)
        if test_metadata["band_names"] != metadata["band_names"]:
            raise InputError(
                f"{test_path}: band_names {test_metadata['band_names']} differ from {path}'s {metadata['band_names']}"
            )
        axis = store_time_axis(metadata)
        if store_time_axis(test_metadata) != axis:
            raise InputError(
                f"{test_path}: time axis {store_time_axis(test_metadata).describe()} differs from {path}'s "
                f"{axis.describe()}: convert the test table with the training store's time axis: "
                f"{' '.join(time_axis_arguments(axis))}"
            )
    return metadata


def unseen_classes(test_path: str | Path | None, class_names: list[str]) -> list[str]:
    """The classes of the test store ``test_path`` that are not among the training ``class_names``."""
    if test_path is None:
        return []
    return [name for name in read_metadata(test_path)["class_names"] if name not in class_names]


def relabel(series: PixelSeries, names: list[str], class_names: list[str]) -> PixelSeries:
    """``series`` whose labels index ``names`` (a test store's classes), with labels indexing
    ``class_names`` (the training store's) instead; -1 (unlabelled) stays, and a class that
    ``class_names`` lacks becomes :data:`UNSEEN_CLASS`.
    Labels read on demand (:class:`~cmap.data.rows.NpyRows`, ``open_store(lazy=True)``) stay so: they are mapped
    as they are read (:class:`~cmap.data.rows.RelabelledRows`)."""
    if series.labels is None or not names or list(names) == list(class_names):
        return series
    lookup = np.array([class_names.index(name) if name in class_names else UNSEEN_CLASS for name in names])
    labels = RelabelledRows(series.labels, lookup, f"{series.source}/labels.npy")
    return replace(series, labels=labels if isinstance(series.labels, NpyRows) else labels[:])


def open_test_store(folder: str | Path, class_names: list[str], lazy: bool = False) -> PixelSeries:
    """A test store's series (:func:`open_store`), whose classes may be some of ``class_names`` (the
    training store's) in any order, with labels indexing ``class_names``: read by name (:func:`relabel`)."""
    series, metadata = open_store(folder, lazy)
    return relabel(series, metadata["class_names"], class_names)


def open_store(folder: str | Path, lazy: bool = False) -> tuple[PixelSeries, dict[str, Any]]:
    """Open a store: labels and groups are loaded, values and days are read row by row on demand.

    ``lazy``: labels and groups are read on demand too (and not checked here: the reader checks them,
    see :class:`~cmap.data.streaming.StreamingSeriesStore`).
    """
    folder = Path(folder)
    metadata = read_metadata(folder)
    n, t, c = metadata["num_series"], metadata["num_dates"], len(metadata["band_names"])
    expected = {"values": (n, t, c), "days": (n, t), "labels": (n,), "groups": (n,)}
    arrays: dict[str, np.ndarray | None] = {}
    for name, (dtype, _) in ARRAYS.items():
        path = folder / f"{name}.npy"
        if not path.exists():
            if name in ("values", "days"):
                raise FileNotFoundError(f"{path}: missing from the store")
            arrays[name] = None
            continue
        if name in ("values", "days") or lazy:
            array = NpyRows(path)
        else:
            try:
                array = np.load(path)
            except ValueError as error:  # truncated or not a .npy file
                raise ValueError(f"{path}: unreadable ({error})") from error
        if array.shape != expected[name] or array.dtype != dtype:
            raise ValueError(
                f"{path}: shape {array.shape} dtype {array.dtype}, expected {expected[name]} {np.dtype(dtype)} "
                "(from metadata.json)"
            )
        arrays[name] = array
    sample_ids = None
    if (folder / "sample_ids.npy").exists():  # read row by row on demand, like values
        sample_ids = NpyRows(folder / "sample_ids.npy")
        if sample_ids.shape != (n,) or sample_ids.dtype.kind != "U":
            raise ValueError(
                f"{folder / 'sample_ids.npy'}: shape {sample_ids.shape} dtype {sample_ids.dtype}, expected ({n},) "
                "unicode strings (from metadata.json)"
            )
    labels, num_classes = arrays["labels"], len(metadata["class_names"])
    if labels is not None and not lazy and ((labels < -1) | (labels >= num_classes)).any():
        row = int(np.flatnonzero((labels < -1) | (labels >= num_classes))[0])
        raise ValueError(
            f"{folder / 'labels.npy'}: row {row} holds label {int(labels[row])}, expected -1 (unlabelled) or a "
            f"class index in [0, {num_classes}) of metadata.json's class_names"
        )
    series = PixelSeries(arrays["values"], arrays["days"], arrays["labels"], str(folder), arrays["groups"], sample_ids)
    return series, metadata
