"""The torch dataset of :class:`~cmap.data.series.PixelSeries`: normalised, batched reads for training and prediction.

Kept apart from :mod:`cmap.data.series` so that the readers, converters and the store format (``cmap convert``,
``cmap extract``) import no torch.
"""

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cmap.data.batch import Batch
from cmap.data.contract import InputContract
from cmap.data.perturbations import Augmentation
from cmap.data.series import PixelSeries, check_series, sort_dates


class SeriesDataset(Dataset):
    """The series ``index`` of a :class:`PixelSeries`, normalised on the fly by ``contract``
    (:meth:`~cmap.data.contract.InputContract.model_inputs`); batches follow :class:`Batch`.

    Rows are read only when a batch asks for them (``__getitems__``), so a store (:mod:`cmap.data.store`)
    larger than memory trains with flat memory. Use :func:`batch_loader` (or any DataLoader whose
    ``collate_fn`` passes batches through): each fetch already returns a whole batch.
    """

    def __init__(
        self,
        series: PixelSeries,
        index: np.ndarray,
        contract: InputContract,
        augmentation: Augmentation | None = None,
    ) -> None:
        self.series = series
        self.index = np.asarray(index, dtype=np.int64)
        self.contract = contract
        self.augmentation = augmentation if augmentation is not None and augmentation.active else None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.series.labels is None else self.series.labels[self.index]

    def __getitems__(self, positions: list[int]) -> Batch:
        rows = self.index[np.asarray(positions, dtype=np.int64)]
        order = np.argsort(rows, kind="stable")  # read a store in file order
        values = np.empty((len(rows),) + self.series.values.shape[1:], dtype=np.float32)
        values[order] = self.series.values[rows[order]]
        days = np.empty((len(rows),) + self.series.days.shape[1:], dtype=np.int64)
        days[order] = self.series.days[rows[order]]
        # A date with any NaN or infinite band value is masked, like a cloud.
        values, mask = self.contract.model_inputs(values)
        check_series(mask, self.series.source, rows)  # stores are read here first, not when opened
        values, days, mask = sort_dates(values, days, mask)
        batch = Batch(
            values=torch.from_numpy(values),
            days=torch.from_numpy(days),
            mask=torch.from_numpy(mask),
        )
        if self.series.labels is not None:
            batch["label"] = torch.from_numpy(self.series.labels[rows].astype(np.int64))
        return self.augmentation(batch) if self.augmentation is not None else batch

    def __getitem__(self, position: int) -> Batch:
        return {key: value[0] for key, value in self.__getitems__([position]).items()}


def pass_through(batch: Batch) -> Batch:
    """``collate_fn`` for :class:`SeriesDataset`, whose fetches are already batches."""
    return batch


def batch_loader(dataset: SeriesDataset, batch_size: int, shuffle: bool = False, **kwargs: Any) -> DataLoader:
    """A DataLoader over a :class:`SeriesDataset` (one fetch per batch)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=pass_through, **kwargs)
