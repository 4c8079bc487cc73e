"""The data modules over stores: what both share (:class:`StoreInputs`: the stores, folds and unlabelled
series) and :class:`SeriesStore`, the in-memory one (the streaming one: :mod:`cmap.data.streaming`)."""

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import Sampler

from cmap.data.datamodule import SITSDataModule
from cmap.data.dataset import SeriesDataset, batch_loader
from cmap.data.sampling import RowStream
from cmap.data.series import PixelSeries
from cmap.data.splits import kfold_split
from cmap.data.store import (
    open_store,
    open_test_store,
    read_metadata,
    read_store_pair,
    store_raw_values,
    store_time_axis,
    unseen_classes,
)  # fmt: skip


class StoreInputs:
    """What both store data modules take (:class:`SeriesStore` and
    :class:`~cmap.data.streaming.StreamingSeriesStore`): a training store and its test store or
    cross-validation fold, whose metadata give the module its band names, class names, time axis and
    raw values; and optionally a store of unlabelled series whose batches come with every labelled
    training batch, for a :class:`~cmap.ml.classifiers.Classifier` with ``consistency``.

    A mixin, listed before the data module's base class: :meth:`setup` and :meth:`train_dataloader`
    extend the base's (``fit`` opens the unlabelled store; training steps become ``{"labelled": Batch,
    "unlabelled": Batch}`` of a ``CombinedLoader``). A data module says how the unlabelled series are
    indexed with :meth:`unlabelled_dataset`; :meth:`unlabelled_sampler` draws them, in every process
    of a multi-process fit (DDP) its own share.

    Args:
        path: the store with the training series.
        test_path: a store with the test series: the same bands and time axis, and the training
            classes or some of them, in any order (:func:`~cmap.data.store.open_test_store` reads its
            labels by name).
        fold: with ``num_folds``, the cross-validation fold used as the test split.
        num_folds: number of cross-validation folds.
        unlabelled: a store of unlabelled series (same bands and time axis; labels, if any, are never
            read), e.g. every pixel of the area to map: each training batch then comes with
            ``unlabelled_ratio`` times as many of them, as ``{"labelled": Batch, "unlabelled": Batch}``,
            for a :class:`~cmap.ml.classifiers.Classifier` with ``consistency``.
        unlabelled_ratio: unlabelled series per labelled one in a training step (FixMatch's mu).
        **kwargs: the data module base's arguments.
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
        if test_path is not None and fold is not None:
            raise ValueError("give test_path or fold, not both")
        self.path = Path(path)
        self.test_path = None if test_path is None else Path(test_path)
        self.fold, self.num_folds = fold, num_folds
        metadata = read_store_pair(self.path, self.test_path)
        # The data's description comes from the store (the base class's defaults are for other modules).
        self.source_class_names: list[str] = metadata["class_names"]
        self.band_names: list[str] = metadata["band_names"]
        self.time_axis = store_time_axis(metadata)
        self.raw_values = store_raw_values(metadata)
        self.unseen_test_classes = unseen_classes(self.test_path, self.source_class_names)
        self.use_unlabelled(unlabelled, unlabelled_ratio)

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
        drawing its share of them (:class:`~cmap.data.sampling.RowStream`: pseudo-random
        permutations of the store one after the other, every series once before any again, across
        epochs and processes; no index or order in memory). The draw is fixed by the data module's
        ``seed``, ``seed_everything``'s (``PL_GLOBAL_SEED``, as Lightning's ``DistributedSampler``)
        and the epoch (``set_epoch``), the same in every process."""
        seed = (self.seed, int(os.environ.get("PL_GLOBAL_SEED", 0)))
        return RowStream(len(dataset), num_samples, seed, num_replicas, rank)

    def _labelled_shares(self) -> tuple[int, int]:
        """(processes, this one's rank) among which Lightning shares out the labelled training series:
        (1, 0) outside a multi-process fit, or where the fit keeps every series in every process
        (``Trainer(use_distributed_sampler=False)``)."""
        trainer = getattr(self, "trainer", None)
        shares = None if trainer is None else trainer.distributed_sampler_kwargs
        # The Trainer's use_distributed_sampler, as Lightning's data connector reads it: no public attribute holds it.
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


class SeriesStore(StoreInputs, SITSDataModule):
    """Data module over stores written by :func:`~cmap.data.store.write_store` (or ``cmap convert``),
    labels and splits in memory.

    The test series come from ``test_path`` or, for datasets evaluated by cross-validation, from fold
    ``fold`` of ``num_folds`` (whole groups when the store has groups, stratified by class
    otherwise); training and validation series are the rest.

    Args:
        path, test_path, fold, num_folds, unlabelled, unlabelled_ratio: see :class:`StoreInputs`.
        **kwargs: the other :class:`~cmap.data.datamodule.SITSDataModule` arguments (batch_size,
            num_workers, val_fraction, seed, augmentation, labels_per_class, class_map).
    """

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
