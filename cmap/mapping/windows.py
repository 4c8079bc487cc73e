"""The windows of a raster stack as the items of a map's DataLoader, and which of them this process classifies."""

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset, Sampler

from cmap.data.contract import InputContract
from cmap.data.raster import RasterStack, pixel_series
from cmap.mapping.parts import MapParts


def grown(window: Window, halo: int, shape: tuple[int, int]) -> Window:
    """``window`` with ``halo`` more pixels on each side, within a grid of ``shape`` (height, width)."""
    top, left = max(0, int(window.row_off) - halo), max(0, int(window.col_off) - halo)
    bottom = min(shape[0], int(window.row_off + window.height) + halo)
    right = min(shape[1], int(window.col_off + window.width) + halo)
    return Window(left, top, right - left, bottom - top)


class StackWindows(Dataset):
    """Windows of a raster stack as batches of normalised pixel series (the :class:`~cmap.data.Batch`
    keys, plus ``pixels``: the row-major pixel indices with a valid date of the window read, ``shape``
    its height and width, ``core``: the window itself (row, column, height, width) inside what was
    read, and ``window``: its index). With ``halo``, each window is read with ``halo`` more pixels on
    each side (within the grid), which spatial smoothing needs. Safe in DataLoader worker processes
    (each opens its files)."""

    def __init__(
        self, stack: RasterStack, window_size: int, days: np.ndarray, contract: InputContract, halo: int = 0
    ) -> None:
        self.stack = stack
        self.windows = list(stack.windows(window_size))
        self.days = torch.from_numpy(days)
        self.contract = contract
        self.halo = halo
        self._datasets: Any = None  # opened in the process that reads

    def __len__(self) -> int:
        return len(self.windows)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_datasets": None}  # open files do not cross processes

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._datasets is None:
            self._datasets = self.stack.open()
        window = self.windows[index]
        read = grown(window, self.halo, self.stack.shape)
        series = pixel_series(self.stack.read(read, self._datasets))  # (h * w, T, C)
        values, mask = self.contract.model_inputs(series)
        pixels = np.flatnonzero(mask.any(axis=1))  # pixels with a valid date; the others are nodata
        core = (window.row_off - read.row_off, window.col_off - read.col_off, window.height, window.width)
        return {
            "values": torch.from_numpy(values[pixels]),
            "days": self.days.expand(len(pixels), -1),
            "mask": torch.from_numpy(mask[pixels]),
            "pixels": torch.from_numpy(pixels),
            "shape": torch.tensor([int(read.height), int(read.width)]),
            "core": torch.tensor([int(v) for v in core]),
            "window": torch.tensor(index),
        }


class WindowsToDo(Sampler[int]):
    """The windows this process classifies: every ``world_size``-th one from its rank, less those
    already written by an earlier run (``parts``). Rank and world size are read when the windows are
    first asked for, in the processes Lightning's DDP strategy (or torchrun, SLURM) started."""

    def __init__(self, num_windows: int, parts: MapParts) -> None:
        self.num_windows, self.parts = num_windows, parts
        self._indices: list[int] | None = None

    def indices(self) -> list[int]:
        if self._indices is None:
            rank, world = 0, 1
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            mine = range(rank, self.num_windows, world)
            self._indices = [index for index in mine if not self.parts.done(index)]
            if world > 1 or len(self._indices) < len(mine):  # said when it tells something: shared or resumed
                print(
                    f"cmap map: process {rank} of {world}: {len(self._indices)} windows to classify, "
                    f"{len(mine) - len(self._indices)} already written",
                    file=sys.stderr,
                )
        return self._indices

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())
