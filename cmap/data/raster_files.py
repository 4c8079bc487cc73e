"""Opening raster files: one clear error per unreadable file, and a bounded set of open files.

A season of Sentinel-2 bands is over a thousand files; a process may hold only so many open at once
(``ulimit -n``, often 1,024). :class:`OpenRasters` opens a stack's rasters as they are read and keeps
at most a share of that limit open, so a stack of any number of files is read within it.
"""

import errno
import os
import resource
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import rasterio

from cmap.outputs import InputError

GRID_KEYS = ("crs", "transform", "width", "height")

#: Open files left to everything else in the process (Python, GDAL's own, sockets, DataLoader pipes).
RESERVED_FILES = 64


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def is_url(href: Any) -> bool:
    return "://" in str(href)


def raster_grid(dataset: Any) -> dict[str, Any]:
    """The grid of an open raster: ``crs``, ``transform``, ``width``, ``height`` (a stack's ``profile``)."""
    return {key: getattr(dataset, key) for key in GRID_KEYS}


def open_files_limit() -> int:
    """The process's limit of open files (the soft ``RLIMIT_NOFILE``, ``ulimit -n``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def open_raster(path: Any, context: str = "") -> Any:
    """``rasterio.open(path)``; an unreadable file is an :class:`InputError` naming it (and ``context``),
    and a process out of open files one naming the limit."""
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioError as error:
        if "Too many open files" in str(error) or getattr(error, "errno", None) == errno.EMFILE:
            raise InputError(
                f"{path}: cannot be opened: the process has reached its limit of {open_files_limit()} open files "
                "(ulimit -n); raise it (ulimit -n 4096) or read fewer files at once (fewer --num_workers)"
            ) from error
        raise InputError(f"{path}: not a readable raster{context} ({one_line(error)})") from error


def close_dataset(dataset: Any) -> None:
    """Close a raster, and a warped VRT's own file with it."""
    source = getattr(dataset, "src_dataset", None)
    dataset.close()
    if source is not None:
        source.close()


def open_files_budget() -> int:
    """How many rasters one :class:`OpenRasters` may hold open: half of what the limit leaves free now
    (a raster holds one file; half leaves room for a second reader, a DataLoader worker's files), at least 4."""
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: assume a small process
        in_use = RESERVED_FILES
    return max(4, (open_files_limit() - in_use - RESERVED_FILES) // 2)


class OpenRasters:
    """The rasters of a stack, opened by ``opener(href, resampling)`` when first read and kept open for the
    next windows, at most ``capacity`` at once (default :func:`open_files_budget`).

    A full set closes the raster used last: a stack is read in the same order at every window, so
    the rasters used first stay open and only the last ones are reopened (closing the least recently
    used one would reopen every raster at every window once the stack has more files than ``capacity``).
    """

    def __init__(self, opener: Callable[[str, str], Any], capacity: int | None = None) -> None:
        self.opener = opener
        self.capacity = open_files_budget() if capacity is None else max(1, capacity)
        self._open: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def __getitem__(self, key: tuple[str, str]) -> Any:
        dataset = self._open.get(key)
        if dataset is not None:
            self._open.move_to_end(key)
            return dataset
        if len(self._open) >= self.capacity:
            close_dataset(self._open.popitem(last=True)[1])
        dataset = self._open[key] = self.opener(*key)
        return dataset

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._open)

    def close(self) -> None:
        while self._open:
            close_dataset(self._open.popitem()[1])

    def __enter__(self) -> "OpenRasters":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
