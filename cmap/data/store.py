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

Why ``.npy`` files: a batch reads B random rows; :class:`NpyRows` reads exactly those rows with
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
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import Sampler

from cmap.data.contract import RawValues
from cmap.data.datamodule import PixelSeries, SeriesDataset, SITSDataModule, batch_loader, kfold_split
from cmap.data.time_axis import TimeAxis, resolve_time_axis, time_axis_arguments
from cmap.outputs import check_outputs, fsync_path, remove_stale_partials

FORMAT = "cmap-series"
VERSION = 1
ARRAYS = {"values": (np.float32, 3), "days": (np.int32, 2), "labels": (np.int64, 1), "groups": (np.int64, 1)}
#: Every file a store may hold: ``overwrite`` replaces a folder of these only.
STORE_FILES = {"metadata.json", "sample_ids.npy", *(f"{name}.npy" for name in ARRAYS)}


def check_replaceable(folder: Path) -> None:
    """Raise unless ``folder`` is a cmap store that ``overwrite`` may replace (not another folder, not a file)."""
    if folder.is_symlink() or not folder.is_dir():
        raise FileExistsError(
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
        raise FileExistsError(
            f"{folder} exists and is not a cmap series store ({found}): overwrite replaces only a store; "
            "remove it yourself or choose another output"
        )


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
) -> Path:
    """Write ``series`` (labels, groups and sample ids included when present) as a store in ``folder``.

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
    if folder.exists() or folder.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{folder} exists: remove it or pass overwrite=True")
        check_replaceable(folder)
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
        raise FileNotFoundError(f"{path}: not found; {folder} is not a cmap series store")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise ValueError(
            f"{path}: format {metadata.get('format')!r} version {metadata.get('version')!r}, "
            f"expected {FORMAT!r} version {VERSION}"
        )
    for key in ("band_names", "class_names", "num_series", "num_dates"):
        if key not in metadata:
            raise ValueError(f"{path}: field {key!r} is missing")
    return metadata


def store_time_axis(metadata: dict[str, Any]) -> TimeAxis:
    """The store's time axis (stores written before it was recorded have ``reference_date`` or nothing)."""
    if "time_axis" in metadata:
        return TimeAxis.from_dict(metadata["time_axis"])
    return resolve_time_axis(reference_date=metadata.get("reference_date"), default=TimeAxis())


def store_raw_values(metadata: dict[str, Any]) -> RawValues | None:
    content = metadata.get("raw_values")
    return None if content is None else RawValues.from_dict(content)


def use_stores(module: Any, path: str, test_path: str | None, fold: int | None, num_folds: int) -> None:
    """Point a data module at a training store and its test store or fold, and take the stores'
    band names, class names, time axis and raw values (shared by the in-memory and the streaming module).
    The test store may hold some of the training classes, in any order: both modules open it with
    :func:`open_test_store`, which reads its labels by name."""
    if test_path is not None and fold is not None:
        raise ValueError("give test_path or fold, not both")
    module.path = Path(path)
    module.test_path = None if test_path is None else Path(test_path)
    module.fold, module.num_folds = fold, num_folds
    metadata = read_store_pair(module.path, module.test_path, class_subset=True)
    module.source_class_names = metadata["class_names"]
    module.band_names = metadata["band_names"]
    module.time_axis = store_time_axis(metadata)
    module.raw_values = store_raw_values(metadata)


def read_store_pair(path: str | Path, test_path: str | Path | None, class_subset: bool = False) -> dict[str, Any]:
    """The metadata of a training store, checked against its test store's: same bands, time axis and
    classes (or, with ``class_subset``, some of the training classes in any order). Errors say how
    to convert the test table to match."""
    metadata = read_metadata(path)
    if test_path is not None:
        test_metadata = read_metadata(test_path)
        if test_metadata["band_names"] != metadata["band_names"]:
            raise ValueError(
                f"{test_path}: band_names {test_metadata['band_names']} differ from {path}'s {metadata['band_names']}"
            )
        names, test_names = metadata["class_names"], test_metadata["class_names"]
        # An unlabelled store (new samples to predict) has no classes.
        if test_names and test_names != names and not (class_subset and set(test_names) <= set(names)):
            unknown = [name for name in test_names if name not in names]
            raise ValueError(
                f"{test_path}: class_names {test_names} differ from {path}'s {names}"
                + (f" (classes {unknown} are not training classes)" if unknown else "")
                + f"; convert the test table with the training classes: --class_names {' '.join(map(repr, names))}"
            )
        axis = store_time_axis(metadata)
        if store_time_axis(test_metadata) != axis:
            raise ValueError(
                f"{test_path}: time axis {store_time_axis(test_metadata).describe()} differs from {path}'s "
                f"{axis.describe()}: convert the test table with the training store's time axis: "
                f"{' '.join(time_axis_arguments(axis))}"
            )
    return metadata


def relabel(series: PixelSeries, names: list[str], class_names: list[str]) -> PixelSeries:
    """``series`` whose labels index ``names`` (a test store's classes), with labels indexing
    ``class_names`` (the training store's, which hold every name) instead; -1 (unlabelled) stays.
    Labels read on demand (:class:`NpyRows`, ``open_store(lazy=True)``) stay so: they are mapped
    as they are read (:class:`RelabelledRows`)."""
    if series.labels is None or not names or list(names) == list(class_names):
        return series
    lookup = np.array([class_names.index(name) for name in names], dtype=np.int64)
    labels = RelabelledRows(series.labels, lookup, f"{series.source}/labels.npy")
    return replace(series, labels=labels if isinstance(series.labels, NpyRows) else labels[:])


class RelabelledRows:
    """Labels (an array or :class:`NpyRows`) mapped through ``lookup`` as they are read:
    ``rows[index]`` is ``lookup[labels[index]]``, -1 (unlabelled) staying -1 (:func:`relabel`).

    A label outside [-1, ``len(lookup)``) is an error naming ``source`` and its row (lazily read
    labels are checked only as they are read).
    """

    def __init__(self, labels: Any, lookup: np.ndarray, source: str) -> None:
        self.labels, self.lookup, self.source = labels, lookup, source
        self.shape, self.ndim, self.dtype = tuple(labels.shape), 1, np.dtype(np.int64)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray | slice | int) -> np.ndarray:
        raw = np.asarray(self.labels[index], dtype=np.int64)
        bad = (raw < -1) | (raw >= len(self.lookup))
        if bad.any():
            first = int(np.flatnonzero(np.atleast_1d(bad))[0])
            rows = range(len(self))[index] if isinstance(index, slice) else np.atleast_1d(index)
            raise ValueError(
                f"{self.source}: row {int(rows[first])} holds label {int(np.atleast_1d(raw)[first])}, expected -1 "
                f"(unlabelled) or a class index in [0, {len(self.lookup)}) of metadata.json's class_names"
            )
        return np.where(raw >= 0, self.lookup[np.maximum(raw, 0)], raw)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every label (reads them all: for small stores and tests)."""
        labels = self[:]
        return labels if dtype is None else labels.astype(dtype)


def open_test_store(folder: str | Path, class_names: list[str], lazy: bool = False) -> PixelSeries:
    """A test store's series (:func:`open_store`), whose classes may be some of ``class_names`` (the
    training store's) in any order, with labels indexing ``class_names``: read by name (:func:`relabel`)."""
    series, metadata = open_store(folder, lazy)
    return relabel(series, metadata["class_names"], class_names)


class NpyRows:
    """Rows of a ``.npy`` array read on demand with positioned reads; ``rows[index]`` -> ndarray.

    Supports what the data module needs of an array: ``shape``, ``ndim``, ``dtype``, ``len`` and
    indexing the first axis by an integer array, a slice or an integer.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as file:
            try:
                major, _ = np.lib.format.read_magic(file)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran_order, dtype = read_header(file)
            except ValueError as error:
                raise ValueError(f"{self.path}: unreadable ({error})") from error
            self.offset = file.tell()
        if fortran_order:
            raise ValueError(f"{self.path}: Fortran-ordered arrays are not supported")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:]))
        expected = self.offset + self.row_bytes * self.shape[0]
        if self.path.stat().st_size < expected:
            raise ValueError(
                f"{self.path}: unreadable (truncated: {self.path.stat().st_size} bytes, expected {expected})"
            )
        self._fd: int | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _descriptor(self) -> int:
        if self._pid != os.getpid():  # DataLoader workers open their own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getitem__(self, index: np.ndarray | slice | int) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        rows = np.arange(self.shape[0])[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"{self.path}: rows outside [0, {self.shape[0]})")
        out = np.empty((len(rows),) + self.shape[1:], dtype=self.dtype)
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        descriptor, size = self._descriptor(), self.row_bytes
        if len(rows) > 1 and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
            # Consecutive rows (chunked scans): one read.
            if os.preadv(descriptor, [buffer], self.offset + int(rows[0]) * size) != len(rows) * size:
                raise ValueError(f"{self.path}: short read at rows {rows[0]}..{rows[-1]}")
            return out
        for i, row in enumerate(rows.tolist()):
            if os.preadv(descriptor, [buffer[i * size : (i + 1) * size]], self.offset + row * size) != size:
                raise ValueError(f"{self.path}: short read at row {row}")
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every row (reads the whole array: for small stores and tests)."""
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": None}


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


class UnlabelledSeries:
    """The ``unlabelled`` option of the store data modules (:class:`SeriesStore` and
    :class:`~cmap.data.streaming.StreamingSeriesStore`): a store of unlabelled series whose batches
    come with every labelled training batch, for a :class:`~cmap.ml.classifiers.Classifier` with
    ``consistency``.

    A mixin, listed before the data module's base class: :meth:`setup` and :meth:`train_dataloader`
    extend the base's (``fit`` opens the store; training steps become ``{"labelled": Batch,
    "unlabelled": Batch}`` of a ``CombinedLoader``). A data module says how the unlabelled series are
    indexed with :meth:`unlabelled_dataset`; :meth:`unlabelled_sampler` draws them, in every process
    of a multi-process fit (DDP) its own share.
    """

    def use_unlabelled(self, unlabelled: str | None, unlabelled_ratio: int) -> None:
        """Take the ``unlabelled`` store (checked against the training store's bands and time axis)."""
        if unlabelled_ratio < 1:
            raise ValueError(f"unlabelled_ratio must be >= 1, got {unlabelled_ratio}")
        self.unlabelled = None if unlabelled is None else Path(unlabelled)
        self.unlabelled_ratio = unlabelled_ratio
        if self.unlabelled is not None:
            metadata = read_metadata(self.unlabelled)
            if metadata["band_names"] != self.band_names or store_time_axis(metadata) != self.time_axis:
                raise ValueError(
                    f"{self.unlabelled}: bands {metadata['band_names']} and time axis "
                    f"{store_time_axis(metadata).describe()} must be those of {self.path}: {self.band_names}, "
                    f"{self.time_axis.describe()}"
                )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.unlabelled is not None and "unlabelled" not in self.datasets:
            series = open_store(self.unlabelled, lazy=True)[0]
            if len(series) == 0:
                raise ValueError(f"{self.unlabelled}: the unlabelled store is empty")
            inputs = PixelSeries(series.values, series.days, None, series.source)  # labels never read
            self.datasets["unlabelled"] = self.unlabelled_dataset(inputs)  # normalised as the labelled series

    def unlabelled_dataset(self, series: PixelSeries) -> SeriesDataset:
        """The unlabelled series as a dataset, with the input contract of the labelled ones."""
        return SeriesDataset(series, np.arange(len(series)), self.input_contract)

    def unlabelled_sampler(self, dataset: SeriesDataset, num_samples: int, num_replicas: int, rank: int) -> Sampler:
        """``num_samples`` of ``dataset``'s series per epoch, this process (``rank`` of ``num_replicas``)
        drawing its share of them (:class:`~cmap.data.streaming.RowStream`: pseudo-random
        permutations of the store one after the other, every series once before any again, across
        epochs and processes; no index or order in memory). The draw is fixed by the data module's
        ``seed``, ``seed_everything``'s (``PL_GLOBAL_SEED``, as Lightning's ``DistributedSampler``)
        and the epoch (``set_epoch``), the same in every process."""
        from cmap.data.streaming import RowStream  # streaming.py imports this module

        seed = (self.seed, int(os.environ.get("PL_GLOBAL_SEED", 0)))
        return RowStream(len(dataset), num_samples, seed, num_replicas, rank)

    def _labelled_shares(self) -> tuple[int, int]:
        """(processes, this one's rank) among which Lightning shares out the labelled training series:
        (1, 0) outside a multi-process fit, or where the fit keeps every series in every process
        (``Trainer(use_distributed_sampler=False)``)."""
        trainer = getattr(self, "trainer", None)
        shares = None if trainer is None else trainer.distributed_sampler_kwargs
        # The Trainer's use_distributed_sampler, as Lightning's data connector reads it.
        if not shares or not getattr(trainer._accelerator_connector, "use_distributed_sampler", True):
            return 1, 0
        return int(shares["num_replicas"]), int(shares["rank"])

    def train_dataloader(self) -> Any:
        """The labelled batches, or, with ``unlabelled``, ``{"labelled": Batch, "unlabelled": Batch}``
        steps: ``unlabelled_ratio`` times as many unlabelled series (:meth:`unlabelled_sampler`), as
        many batches as the labelled loader's.

        Under DDP, Lightning gives each of the ``W`` processes ``ceil(N / W)`` of the ``N`` labelled
        training series (its ``DistributedSampler``); the unlabelled sampler is one already (Lightning
        leaves it as it is) and gives each ``unlabelled_ratio`` times as many, different series in
        each process. (Lightning's replacement of a ``RandomSampler(num_samples=...)`` would give each
        process ``1 / W`` of the whole unlabelled store instead, and the ``CombinedLoader``, which stops
        at its shorter loader, would cut the epoch short where that is the fewer.)"""
        labelled = super().train_dataloader()
        if "unlabelled" not in self.datasets:
            return labelled
        dataset, ratio = self.datasets["unlabelled"], self.unlabelled_ratio
        num_replicas, rank = self._labelled_shares()
        share = -(-len(labelled.sampler) // num_replicas)  # labelled series per process and epoch
        sampler = self.unlabelled_sampler(dataset, ratio * share * num_replicas, num_replicas, rank)
        unlabelled = batch_loader(
            dataset, ratio * self.batch_size, sampler=sampler, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, drop_last=labelled.drop_last,
        )  # fmt: skip
        return CombinedLoader({"labelled": labelled, "unlabelled": unlabelled})


class SeriesStore(UnlabelledSeries, SITSDataModule):
    """Data module over stores written by :func:`write_store` (or ``cmap convert``).

    The test series come from ``test_path`` (a second store with the same bands and time axis, and
    the training classes or some of them, in any order: labels are read by name) or,
    for datasets evaluated by cross-validation, from fold ``fold`` of ``num_folds`` (whole groups
    when the store has groups, stratified by class otherwise); training and validation series are
    the rest.

    Args:
        path: the store with the training series.
        test_path: a store with the test series.
        fold: with ``num_folds``, the cross-validation fold used as the test split.
        num_folds: number of cross-validation folds.
        unlabelled: a store of unlabelled series (same bands and time axis; labels, if any, are never
            read), e.g. every pixel of the area to map: each training batch then comes with
            ``unlabelled_ratio`` times as many of them, as ``{"labelled": Batch, "unlabelled": Batch}``,
            for a :class:`~cmap.ml.classifiers.Classifier` with ``consistency``.
        unlabelled_ratio: unlabelled series per labelled one in a training step (FixMatch's mu).
        **kwargs: the other :class:`~cmap.data.datamodule.SITSDataModule` arguments (batch_size,
            num_workers, val_fraction, seed, augmentation, labels_per_class, class_map).
    """

    def __init__(
        self,
        path: str,
        test_path: str | None = None,
        fold: int | None = None,
        num_folds: int = 5,
        unlabelled: str | None = None,
        unlabelled_ratio: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        use_stores(self, path, test_path, fold, num_folds)
        self.use_unlabelled(unlabelled, unlabelled_ratio)

    @cached_property
    def _series(self) -> PixelSeries:
        return open_store(self.path)[0]

    @cached_property
    def _folds(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices (training, test) of the cross-validation fold."""
        return kfold_split(self._series, self.num_folds, self.fold, self.seed)

    def load_train(self) -> PixelSeries:
        return self._series if self.fold is None else self._series.subset(self._folds[0])

    def load_test(self) -> PixelSeries:
        if self.fold is not None:
            return self._series.subset(self._folds[1])
        if self.test_path is None:
            raise ValueError(f"{self.path}: no test split: give test_path or fold")
        return open_test_store(self.test_path, self.source_class_names)
