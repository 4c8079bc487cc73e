"""Row samplers that store nothing per series: hashes of rows (splits), pseudo-random permutations
computed on the fly (shuffling), and an endless stream of them (unlabelled series, under DDP too).
Used by :class:`~cmap.data.streaming.StreamingSeriesStore` and for the unlabelled series of both store
data modules (:mod:`cmap.data.store_datamodule`)."""

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import DistributedSampler, Sampler

from cmap.data.contract import InputContract
from cmap.data.dataset import SeriesDataset

CHUNK = 1 << 16
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on uint64 (wrapping arithmetic): a good cheap hash."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def unit_hash(keys: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random float64 in [0, 1) for each integer key, fixed by ``seed``."""
    offset = np.uint64((seed + 1) * int(_GOLDEN) % (1 << 64))  # wraps like uint64, without numpy's warning
    mixed = splitmix64(np.asarray(keys).astype(np.uint64) + offset)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class RowPermutation:
    """A pseudo-random permutation of ``[0, n)`` evaluated element-wise, without storing it.

    A 4-round Feistel network on the smallest even number of bits covering ``n`` is a bijection of
    ``[0, 2**bits)``; values that land at or beyond ``n`` are encrypted again ("cycle walking") until
    they fall inside, which keeps it a bijection of ``[0, n)``. ``2**bits < 4 n``, so few walks.
    """

    def __init__(self, n: int, seed: int | Sequence[int], rounds: int = 4) -> None:
        bits = max(2, int(n - 1).bit_length())
        bits += bits % 2
        self.n, self.half = n, np.uint64(bits // 2)
        self.mask = np.uint64((1 << (bits // 2)) - 1)
        self.keys = [np.uint64(k) for k in np.random.default_rng(seed).integers(0, 2**63, rounds)]

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ (splitmix64(right ^ key) & self.mask)
        return (left << self.half) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        x = self._encrypt(np.asarray(positions).astype(np.uint64))
        outside = x >= np.uint64(self.n)
        while outside.any():
            x[outside] = self._encrypt(x[outside])
            outside = x >= np.uint64(self.n)
        return x.astype(np.int64)


class RowSampler(Sampler[int]):
    """The rows of one split, in row order or in a new pseudo-random order each epoch, chunk by chunk.

    The order of epoch ``e`` is fixed by ``seed + e``; each pass counts as the next epoch, and
    Lightning sets the epoch (``set_epoch``) before each one, so a resumed fit draws the same orders.
    """

    def __init__(
        self, num_rows: int, in_split: Callable[[np.ndarray], np.ndarray], length: int, shuffle: bool, seed: int
    ) -> None:
        self.num_rows, self.in_split, self.length = num_rows, in_split, length
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        permutation = RowPermutation(self.num_rows, self.seed + self.epoch) if self.shuffle else None
        self.epoch += 1
        for start in range(0, self.num_rows, CHUNK):
            positions = np.arange(start, min(start + CHUNK, self.num_rows))
            rows = positions if permutation is None else permutation(positions)
            yield from rows[self.in_split(rows)].tolist()


class RowStream(DistributedSampler):
    """``length`` rows of ``[0, num_rows)`` per epoch, from an endless stream: pseudo-random
    permutations of every row, one after the other (pass ``p``'s fixed by ``(seed, p)``), epoch ``e``
    taking positions ``[e * length, (e + 1) * length)`` of it. Each row is drawn once before any is
    drawn again, across epochs too, and nothing is stored; ``set_epoch`` (Lightning's, before each
    epoch) makes a resumed fit draw the same rows.

    With several processes, process ``rank`` of ``num_replicas`` takes the ``rank``-th of
    ``num_replicas`` consecutive shares of the epoch's positions, ``ceil(length / num_replicas)``
    rows (``len(sampler)``; the last share runs on into the stream where ``length`` does not divide):
    different rows in each (none twice within a pass over the store), every row still once before
    any again. A ``DistributedSampler`` (subclass), so Lightning leaves it as it is instead of
    replacing it (a ``RandomSampler``'s ``num_samples`` would be lost) or listing its rows in memory
    (``DistributedSamplerWrapper``).
    """

    def __init__(
        self, num_rows: int, length: int, seed: int | Sequence[int], num_replicas: int = 1, rank: int = 0
    ) -> None:
        if num_rows < 1:
            raise ValueError(f"RowStream needs rows to draw, got num_rows={num_rows}")
        super().__init__(range(num_rows), num_replicas=num_replicas, rank=rank, shuffle=True)  # type: ignore[arg-type]
        self.num_rows, self.length, self.seed = num_rows, length, tuple(np.atleast_1d(seed).tolist())
        self.num_samples = -(-length // num_replicas)  # this process's rows per epoch
        self.total_size = self.num_samples * num_replicas

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        first = self.epoch * self.total_size + self.rank * self.num_samples
        self.epoch += 1  # iterated again without set_epoch (no Lightning): the next rows of the stream
        for start in range(first, first + self.num_samples, CHUNK):
            positions = np.arange(start, min(start + CHUNK, first + self.num_samples))
            passes, offsets = np.divmod(positions, self.num_rows)
            rows = np.empty_like(offsets)
            for number in np.unique(passes):
                inside = passes == number
                rows[inside] = RowPermutation(self.num_rows, (*self.seed, int(number)))(offsets[inside])
            yield from rows.tolist()


class _Rows:
    """``index[positions] == positions``: a :class:`RowSampler` yields store rows directly."""

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        return positions


class RowDataset(SeriesDataset):
    """A :class:`SeriesDataset` fetched by store row (no index array); ``len`` is the split's size."""

    def __init__(self, series: Any, length: int, contract: InputContract, augmentation: Any = None) -> None:
        super().__init__(series, np.empty(0, dtype=np.int64), contract, augmentation)
        self.index, self.length = _Rows(), length

    def __len__(self) -> int:
        return self.length
