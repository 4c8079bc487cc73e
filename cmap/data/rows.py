"""Arrays of a store read row by row on demand: a ``.npy`` file's rows by positioned reads
(:class:`NpyRows`), and labels mapped to another class order as they are read (:class:`RelabelledRows`)."""

import os
from pathlib import Path
from typing import Any

import numpy as np


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


class RelabelledRows:
    """Labels (an array or :class:`NpyRows`) mapped through ``lookup`` as they are read:
    ``rows[index]`` is ``lookup[labels[index]]``, -1 (unlabelled) staying -1 (:func:`~cmap.data.store.relabel`).

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
