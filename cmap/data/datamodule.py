"""The shared LightningDataModule (loaders, class counts, the input contract) and the in-memory one
(splits, statistics, class_map, labels_per_class)."""

import warnings
from collections.abc import Sequence
from dataclasses import replace
from functools import cache, cached_property
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from cmap.data.classes import ClassMapping
from cmap.data.contract import (
    InputContract,
    RawValues,
    contract_from_settings,
    raw_value_settings,
    resolve_input_settings,
)  # fmt: skip
from cmap.data.dataset import SeriesDataset, batch_loader
from cmap.data.perturbations import Augmentation
from cmap.data.series import UNSEEN_CLASS, PixelSeries
from cmap.data.splits import holdout_split, per_class_subset
from cmap.data.statistics import normalisation_statistics, training_date_grid, warn_other_scale
from cmap.data.time_axis import TimeAxis
from cmap.outputs import InputError


def no_labels_problem(source: str) -> str:
    """Why a task that learns from labels cannot take the series of ``source``, a store without labels."""
    return (
        f"{source}: the series have no labels (a store converted without a label column): this task needs "
        "labelled series; use the store for pretraining (AutoEncoder, ContrastivePretraining) or to predict"
    )


class SeriesDataModule(L.LightningDataModule):
    """What every cmap data module shares: loaders, class counts and the input contract.

    Subclasses set ``band_names``, ``source_class_names`` (and ``time_axis``, ``raw_values`` when
    they know them) and build ``self.datasets`` (train, val, test) in :meth:`setup`, with the
    contract :meth:`make_contract` returns. The contract (:class:`~cmap.data.contract.InputContract`:
    names, training statistics, time axis) is what the task saves in every checkpoint; a
    checkpoint's contract replaces this module's statistics through :meth:`adopt`, so ``cmap test``
    and ``cmap predict`` normalise exactly as training did.

    Args:
        batch_size: series per batch.
        num_workers: DataLoader worker processes.
        val_fraction: fraction of the training series held out for validation.
        seed: seed of the splits.
        augmentation: random perturbations of training series (none by default).
        balanced_sampling: draw training series with probability inversely proportional to their
            class's count (with replacement, as many per epoch as there are training series), so
            every class is seen about equally often; for imbalanced data, instead of or with
            ``classes_weights``.
    """

    band_names: list[str]
    source_class_names: list[str]
    time_axis: TimeAxis = TimeAxis()
    raw_values: RawValues | None = None
    #: Classes of the test series that training never saw (their series are reported, not scored).
    unseen_test_classes: Sequence[str] = ()
    #: Why this module cannot draw by class weight (None: it can).
    balanced_sampling_problem: str | None = None

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        balanced_sampling: bool = False,
    ) -> None:
        super().__init__()
        # Every init argument of the concrete data module (subclasses included) is logged with
        # the model's hyper-parameters.
        self.save_hyperparameters()
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        if balanced_sampling and self.balanced_sampling_problem is not None:
            raise ValueError(
                f"{type(self).__name__}: balanced_sampling is not supported ({self.balanced_sampling_problem})"
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.augmentation = augmentation
        self.balanced_sampling = balanced_sampling
        self.contract: InputContract | None = None
        self.datasets: dict[str, SeriesDataset] = {}

    @property
    def num_bands(self) -> int:
        return len(self.band_names)

    @property
    def class_names(self) -> list[str]:
        """The classes the model learns, in label order."""
        return list(self.source_class_names)

    @property
    def input_contract(self) -> InputContract:
        """Names, normalisation and time axis of this data's series (known after :meth:`setup`)."""
        if self.contract is None:
            raise RuntimeError(f"{type(self).__name__}: the input contract is known after setup()")
        return self.contract

    def make_contract(self, series: PixelSeries, train_index: np.ndarray) -> InputContract:
        """The contract of this data from its training series ``train_index`` of ``series``: per-band
        statistics and date grid, computed only when no checkpoint's contract was adopted."""
        if self.contract is None:
            statistics = cache(lambda: normalisation_statistics(series, train_index))
            lazy = {
                "mean": lambda: statistics()[0], "std": lambda: statistics()[1],
                "date_grid": lambda: training_date_grid(series, train_index),
            }  # fmt: skip
            self.contract = contract_from_settings(resolve_input_settings(defaults={**self.data_settings(), **lazy}))
        return self.contract

    def data_settings(self) -> dict[str, Any]:
        """The input settings this data states itself (:data:`~cmap.data.contract.INPUT_SETTINGS`)."""
        names = {"band_names": self.band_names, "class_names": self.class_names, "time_axis": self.time_axis}
        return {**names, **raw_value_settings(self.raw_values)}

    def adopt(self, contract: InputContract, source: str) -> None:
        """Use ``contract`` (from the checkpoint ``source``) instead of this data's own statistics: each
        input setting the checkpoint's, else this data's (:func:`~cmap.data.contract.resolve_input_settings`).

        Bands, classes and time axis must agree: a model sees its inputs as it was trained to.
        """
        for name, mine in (("band_names", self.band_names), ("class_names", self.class_names)):
            theirs = getattr(contract, name)
            if theirs is not None and tuple(theirs) != tuple(mine):
                raise InputError(
                    f"{type(self).__name__} (data of {source}): {name} {list(mine)} differ from the model's "
                    f"{list(theirs)}"
                )
        if contract.time_axis != self.time_axis:
            raise InputError(
                f"{source}: the model counts {contract.time_axis.describe()}, but {type(self).__name__}'s days "
                f"are {self.time_axis.describe()}"
            )
        self.contract = contract_from_settings(
            resolve_input_settings(checkpoint=contract, defaults=self.data_settings())
        )
        for dataset in self.datasets.values():
            dataset.contract = self.contract

    def labels_needed(self) -> bool:
        """Whether the task being trained learns from labels (a task says it does not with
        ``needs_labels = False``: the pretraining tasks); True without a trainer."""
        trainer = getattr(self, "trainer", None)
        model = getattr(trainer, "lightning_module", None) if trainer is not None else None
        return bool(getattr(model, "needs_labels", True))

    def class_counts(self, split: str) -> np.ndarray:
        """Number of series of each class in ``split`` (train, val or test); none when unlabelled."""
        labels = self.datasets[split].labels
        if labels is None:
            return np.zeros(len(self.class_names), dtype=np.int64)
        return np.bincount(labels[labels >= 0], minlength=len(self.class_names))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        sampler = None
        if shuffle and self.balanced_sampling:
            sampler = self.balanced_sampler(dataset)
        return batch_loader(
            dataset,
            self.batch_size,
            shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) > self.batch_size,
        )

    def balanced_sampler(self, dataset: SeriesDataset) -> WeightedRandomSampler:
        """Series drawn with probability 1 / (their class's count): classes equally likely."""
        labels = dataset.labels
        if labels is None or (labels < 0).any():
            raise ValueError(f"{type(self).__name__}: balanced_sampling needs every training series labelled")
        counts = np.bincount(labels, minlength=len(self.class_names))
        weights = torch.from_numpy(1.0 / counts[labels])
        generator = torch.Generator().manual_seed(self.seed)
        return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class SITSDataModule(SeriesDataModule):
    """Base data module for labelled series held in memory (or read row by row from a store).

    Subclasses set ``source_class_names`` and ``band_names`` in ``__init__`` and implement
    :meth:`load_train` and :meth:`load_test`. This class holds out a validation split of the
    training series (whole groups when the series have groups, stratified by class otherwise),
    computes per-band normalisation statistics on the *training split only*, and optionally maps
    the classes to another nomenclature.

    Args:
        labels_per_class: keep only this many labelled training series per class (drawn with
            ``seed``), for few-label experiments; normalisation statistics still use every
            training series (they need no labels).
        class_map: ``{dataset class: your class}``, ``"*"`` for every class not listed (see
            :class:`~cmap.data.classes.ClassMapping`); ``class_names`` are then your classes.
        **kwargs: the :class:`SeriesDataModule` arguments (batch_size, num_workers, val_fraction
            (of each training class), seed, augmentation).
    """

    def __init__(
        self, labels_per_class: int | None = None, class_map: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.labels_per_class = labels_per_class
        self.class_map = class_map

    @cached_property
    def class_mapping(self) -> ClassMapping | None:
        return None if self.class_map is None else ClassMapping(self.class_map, self.source_class_names)

    @property
    def class_names(self) -> list[str]:
        """The classes the model learns, in label order (after ``class_map``)."""
        mapping = self.class_mapping
        return list(self.source_class_names) if mapping is None else mapping.target_names

    def _prepare(self, series: PixelSeries) -> PixelSeries:
        """Check the labels against the dataset's classes, then map them."""
        if series.labels is None:
            return series
        bad = (series.labels < 0) | (series.labels >= len(self.source_class_names))
        if bad.any():
            raise ValueError(
                f"{series.source}: label index {int(series.labels[bad][0])} is outside the "
                f"{len(self.source_class_names)} classes {self.source_class_names}"
            )
        mapping = self.class_mapping
        return series if mapping is None else replace(series, labels=mapping(series.labels))

    def _unlabelled(self, series: PixelSeries, stage: str) -> PixelSeries:
        """Series with unlabelled members (label -1, or no labels at all) for a task that needs none
        (pretraining, or predicting the test split) lose their labels; for a task that needs labels,
        unlabelled training series are an error."""
        needs = stage != "predict" and self.labels_needed()
        if series.labels is None:
            if needs:
                raise ValueError(no_labels_problem(series.source))
            return series
        if not needs and (series.labels < 0).any():  # unlabelled, or of a class training never saw
            return replace(series, labels=None)
        return series

    def _without_unseen_classes(self, series: PixelSeries) -> PixelSeries:
        """The test series but those of classes training never saw (label ``UNSEEN_CLASS``), which
        cannot be scored: a warning names their classes and counts them."""
        unseen = np.zeros(len(series), dtype=bool) if series.labels is None else series.labels == UNSEEN_CLASS
        if not unseen.any():
            return series
        warnings.warn(
            f"{series.source}: {int(unseen.sum())} of {len(series)} test series are of classes training never saw "
            f"({', '.join(map(repr, self.unseen_test_classes))}; the model's classes: {self.class_names}): they are "
            "not scored; the metrics are those of the other series",
            stacklevel=3,
        )
        return series.subset(np.flatnonzero(~unseen))

    def load_train(self) -> PixelSeries:
        """All labelled training series (validation is split off here)."""
        raise NotImplementedError

    def load_test(self) -> PixelSeries:
        """The test series."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if "train" not in self.datasets:
            train_all = self._prepare(self._unlabelled(self.load_train(), stage))
            if len(train_all) == 0:
                raise ValueError(f"{train_all.source}: no training series")
            train_index, val_index = holdout_split(train_all, self.val_fraction, self.seed)
            for split, index in (("training", train_index), ("validation", val_index)):
                if len(index) == 0:
                    raise ValueError(
                        f"{train_all.source}: the {split} split is empty (val_fraction={self.val_fraction})"
                        + (
                            f": {len(train_all)} series, and a class's last series (or parcel) is never held out"
                            if split == "validation"
                            else ""
                        )
                    )
            contract = self.make_contract(train_all, train_index)
            if self.labels_per_class is not None:
                train_index = train_index[
                    per_class_subset(train_all.labels[train_index], self.labels_per_class, self.seed)
                ]
            self.datasets["train"] = SeriesDataset(train_all, train_index, contract, self.augmentation)
            self.datasets["val"] = SeriesDataset(train_all, val_index, contract)
            self.warn_unlearnt_classes(train_all.source, "val")
        if stage in ("test", "predict") and "test" not in self.datasets:
            test = self._unlabelled(self.load_test(), stage)
            test = self._prepare(self._without_unseen_classes(test) if stage == "test" else test)
            if len(test) == 0:
                raise ValueError(f"{test.source}: the test split is empty")
            self.datasets["test"] = SeriesDataset(test, np.arange(len(test)), self.input_contract)
            if stage == "test":
                self.warn_unlearnt_classes(test.source, "test")
            warn_other_scale(test, self.input_contract)

    def warn_unlearnt_classes(self, source: str, split: str) -> None:
        """Warn, naming them, about classes with no training series: the model cannot learn them
        (a class of one parcel held out whole, a class absent from the data, a class only in the
        test split). A training split without labels (pretraining) has none to warn about."""
        if self.datasets["train"].labels is None or self.datasets[split].labels is None:
            return
        train, other = self.class_counts("train"), self.class_counts(split)
        absent = [
            f"{name!r} ({count} {split})"
            for name, n, count in zip(self.class_names, train, other, strict=True)
            if n == 0
        ]
        if absent:
            warnings.warn(
                f"{source}: {len(absent)} of {len(self.class_names)} classes have no training series, so the model "
                f"cannot learn them: {', '.join(absent)}. Give them more samples (or, with groups, more parcels), "
                "or merge them into another class with class_map",
                stacklevel=2,
            )
