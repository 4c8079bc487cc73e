"""The shared LightningDataModule: splits, normalisation, masks and loaders."""

from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cmap.data.augment import Augmentation
from cmap.data.batch import Batch


@dataclass
class PixelSeries:
    """N series of T dates with C bands, in memory.

    Attributes:
        values: float32 (N, T, C); NaN marks a missing date (cloud, gap or padding).
        days: int64 (N, T), day offset of each date from the reference date.
        labels: int64 (N,) class indices, or None when unlabelled.
        source: where the series came from, for error messages (a file path).
    """

    values: np.ndarray
    days: np.ndarray
    labels: np.ndarray | None
    source: str

    def __post_init__(self) -> None:
        if self.values.ndim != 3:
            raise ValueError(f"{self.source}: values must be (samples, dates, bands), got shape {self.values.shape}")
        if self.days.shape != self.values.shape[:2]:
            raise ValueError(
                f"{self.source}: days has shape {self.days.shape}, expected (samples, dates) = {self.values.shape[:2]}"
            )
        if self.labels is not None and self.labels.shape != (len(self.values),):
            raise ValueError(f"{self.source}: labels has shape {self.labels.shape}, expected ({len(self.values)},)")
        empty = ~self.valid_dates.any(axis=1)
        if empty.any():
            raise ValueError(
                f"{self.source}: {int(empty.sum())} series have no valid date (all values NaN), "
                f"first at sample index {int(np.flatnonzero(empty)[0])}; remove them"
            )

    def __len__(self) -> int:
        return len(self.values)

    @property
    def valid_dates(self) -> np.ndarray:
        """bool (N, T): dates whose every band value is finite."""
        return np.isfinite(self.values).all(axis=-1)

    def subset(self, index: np.ndarray) -> "PixelSeries":
        labels = None if self.labels is None else self.labels[index]
        return PixelSeries(self.values[index], self.days[index], labels, self.source)


class SeriesDataset(Dataset):
    """Normalised tensors of a :class:`PixelSeries`; items follow the :class:`Batch` contract."""

    def __init__(
        self, series: PixelSeries, mean: np.ndarray, std: np.ndarray, augmentation: Augmentation | None = None
    ) -> None:
        self.augmentation = augmentation if augmentation is not None and augmentation.active else None
        mask = series.valid_dates
        values = (series.values - mean) / std
        values[~mask] = 0.0
        self.values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        self.days = torch.from_numpy(series.days.astype(np.int64))
        self.mask = torch.from_numpy(mask)
        self.labels = None if series.labels is None else torch.from_numpy(series.labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> Batch:
        item = Batch(values=self.values[index], days=self.days[index], mask=self.mask[index])
        if self.labels is not None:
            item["label"] = self.labels[index]
        return self.augmentation(item) if self.augmentation is not None else item


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out) with ``fraction`` of each class held out (at least one per class)."""
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held_out.append(members[: max(1, round(fraction * len(members)))])
    held = np.sort(np.concatenate(held_out))
    return np.setdiff1d(np.arange(len(labels)), held), held


def per_class_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` random members of each class (all members of smaller ones)."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


class SITSDataModule(L.LightningDataModule):
    """Base data module for labelled satellite image time series.

    Subclasses set ``class_names`` and ``band_names`` in ``__init__`` and implement
    :meth:`load_train` and :meth:`load_test`. This class holds out a stratified validation split
    of the training series, computes per-band normalisation statistics on the *training split
    only*, and stores them with the class and band names in the checkpoint (``state_dict``), so a
    trained model carries everything needed to predict.

    Args:
        batch_size: series per batch.
        num_workers: DataLoader worker processes.
        val_fraction: fraction of each training class held out for validation.
        seed: seed of the validation split.
        augmentation: random perturbations of training series (none by default).
        labels_per_class: keep only this many labelled training series per class (drawn with
            ``seed``), for few-label experiments; normalisation statistics still use every
            training series (they need no labels).
    """

    class_names: list[str]
    band_names: list[str]

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        labels_per_class: int | None = None,
    ) -> None:
        super().__init__()
        # Every init argument of the concrete data module (subclasses included) is logged with
        # the model's hyper-parameters.
        self.save_hyperparameters()
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.augmentation = augmentation
        self.labels_per_class = labels_per_class
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.datasets: dict[str, SeriesDataset] = {}

    @property
    def num_bands(self) -> int:
        return len(self.band_names)

    def load_train(self) -> PixelSeries:
        """All labelled training series (validation is split off here)."""
        raise NotImplementedError

    def load_test(self) -> PixelSeries:
        """The test series."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if "train" not in self.datasets:
            train_all = self.load_train()
            self._check_labels(train_all)
            train_index, val_index = stratified_split(train_all.labels, self.val_fraction, self.seed)
            train, val = train_all.subset(train_index), train_all.subset(val_index)
            if self.mean is None:  # statistics restored from a checkpoint win
                self.mean, self.std = normalisation_statistics(train)
            if self.labels_per_class is not None:
                train = train.subset(per_class_subset(train.labels, self.labels_per_class, self.seed))
            self.datasets["train"] = SeriesDataset(train, self.mean, self.std, self.augmentation)
            self.datasets["val"] = SeriesDataset(val, self.mean, self.std)
        if stage in ("test", "predict") and "test" not in self.datasets:
            test = self.load_test()
            self._check_labels(test)
            self.datasets["test"] = SeriesDataset(test, self.mean, self.std)

    def _check_labels(self, series: PixelSeries) -> None:
        if series.labels is None:
            return
        bad = (series.labels < 0) | (series.labels >= len(self.class_names))
        if bad.any():
            raise ValueError(
                f"{series.source}: label index {int(series.labels[bad][0])} is outside the "
                f"{len(self.class_names)} classes {self.class_names}"
            )

    def class_counts(self, split: str) -> np.ndarray:
        """Number of series of each class in ``split`` (train, val or test)."""
        labels = self.datasets[split].labels
        return np.bincount(labels.numpy(), minlength=len(self.class_names))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(self.datasets[split]) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to reproduce the inputs: names and normalisation."""
        return {
            "class_names": list(self.class_names),
            "band_names": list(self.band_names),
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key in ("class_names", "band_names"):
            if state_dict[key] != list(getattr(self, key)):
                raise ValueError(
                    f"checkpoint {key} {state_dict[key]} differ from this data module's {list(getattr(self, key))}"
                )
        if state_dict["mean"] is not None:
            self.mean = np.asarray(state_dict["mean"], dtype=np.float32)
            self.std = np.asarray(state_dict["std"], dtype=np.float32)


def normalisation_statistics(series: PixelSeries) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation over the valid dates of ``series``, float32 (C,)."""
    valid = series.values[series.valid_dates]  # (valid dates, C)
    mean = valid.mean(axis=0)
    std = valid.std(axis=0)
    std[std == 0] = 1.0  # a constant band is only centred
    return mean.astype(np.float32), std.astype(np.float32)
