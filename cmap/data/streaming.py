"""Stores larger than memory with resident memory that does not grow with them.

:class:`~cmap.data.store_datamodule.SeriesStore` keeps three arrays per series in memory (labels, the split's
row index, the shuffled order): about 24 bytes per series, 2.4 GB at 100 million. The
:class:`StreamingSeriesStore` keeps none of them:

- **splits are a function of the row** (or of its group): a series is in the test fold, the
  validation split or training according to a hash of its row number (:func:`~cmap.data.sampling.unit_hash`), so no
  index is stored; split sizes are only *about* ``val_fraction`` (binomial), and not stratified
  by class;
- **shuffling is a pseudo-random permutation computed on the fly** (:class:`~cmap.data.sampling.RowPermutation`, a
  Feistel network), a new one each epoch, so no order is stored;
- **labels (and groups) are read from disk with each batch**, like the values.

Setup streams the labels once, in chunks, to count series and classes per split (for the logs)
and check them. Unlabelled series (label -1) are treated as by ``SeriesStore``: a task that learns
from labels (a ``Classifier``; testing) names the first one as an error; pretraining
(``needs_labels = False``) and predicting use every series, labels dropped.
An ``unlabelled`` store (consistency training) is drawn the same way: rows of an endless stream of
pseudo-random permutations (:class:`~cmap.data.sampling.RowStream`), no index or order stored, each process of a
multi-process fit (DDP) drawing its own share. ``SeriesStore`` draws its unlabelled series so too.
"""

from dataclasses import replace
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from cmap.data.datamodule import SeriesDataModule, no_labels_problem
from cmap.data.dataset import pass_through
from cmap.data.sampling import CHUNK, RowDataset, RowPermutation, RowSampler, unit_hash
from cmap.data.series import UNSEEN_CLASS, PixelSeries
from cmap.data.store import open_store, open_test_store
from cmap.data.store_datamodule import StoreInputs
from cmap.outputs import InputError


class StreamingSeriesStore(StoreInputs, SeriesDataModule):
    """A data module over a store (:mod:`cmap.data.store`) whose memory does not grow with it (see above).

    The arguments of :class:`~cmap.data.store_datamodule.SeriesStore` but ``class_map`` and
    ``labels_per_class`` (which need every label in memory). Splits are drawn by hashing each
    series' row (its group id when the store has groups, so no group is split): the test split is
    ``test_path`` or hash fold ``fold`` of ``num_folds``; validation, about ``val_fraction`` of
    the rest. Normalisation statistics come from 200,000 training series drawn at random, as with
    ``SeriesStore``. As there, the test store may hold some of the training classes, in any order:
    its labels are read by name (:func:`~cmap.data.store.open_test_store`), as each batch is read.

    Unlabelled series (label -1, or a store without labels) as with ``SeriesStore``: an error
    naming the first one for a task that needs labels (a ``Classifier``'s fit, ``cmap test``);
    pretraining (``needs_labels = False``) and ``cmap predict`` take every series, their labels
    dropped. Labels outside [-1, number of classes) are an error naming file, row and label.

    An ``unlabelled`` store comes with the training batches as with ``SeriesStore``
    (:class:`~cmap.data.store_datamodule.StoreInputs`), its rows drawn by
    :class:`~cmap.data.sampling.RowStream`: without replacement across epochs (a new pseudo-random
    order at each pass over the store), nothing per series in memory, under DDP too (each process
    draws its own share).

    Under DDP, Lightning wraps the labelled samplers in its ``DistributedSamplerWrapper``, which
    lists the epoch's rows in memory in each process: for them, the flat-memory guarantee holds for
    one process (and its workers).

    Args:
        path, test_path, fold, num_folds, unlabelled, unlabelled_ratio: see
            :class:`~cmap.data.store_datamodule.StoreInputs`.
        **kwargs: the :class:`~cmap.data.datamodule.SeriesDataModule` arguments (batch_size,
            num_workers, val_fraction, seed, augmentation).
    """

    # Weights per row would need every label in memory: what streaming avoids.
    balanced_sampling_problem = "weights per series would hold every label in memory; use SeriesStore"
    #: Series (``sizes``) and labelled series of each class (``counts``) per split, counted at setup.
    sizes: dict[str, int]
    counts: dict[str, np.ndarray]
    #: Why the test split cannot be tested on (unlabelled series), once set up.
    _test_problem: str | None = None

    def _keys(self, series: Any, rows: np.ndarray) -> np.ndarray:
        """What a split is decided on: the group of each row, or the row itself."""
        if series.groups is None:
            return rows
        order = np.argsort(rows)  # read the store in file order
        keys = np.empty(len(rows), dtype=series.groups.dtype)
        keys[order] = series.groups[rows[order]]
        return keys

    def split_of(self, series: Any, rows: np.ndarray, in_test_store: bool = False) -> np.ndarray:
        """int8 split code of each row: 0 train, 1 validation, 2 test."""
        if in_test_store:
            return np.full(len(rows), 2, dtype=np.int8)
        keys = self._keys(series, rows)
        split = (unit_hash(keys, self.seed) < self.val_fraction).astype(np.int8)
        if self.fold is not None:
            split[np.floor(unit_hash(keys, self.seed + 1) * self.num_folds) == self.fold] = 2
        return split

    def _scan(self, series: Any, in_test_store: bool) -> int | None:
        """One pass over the labels (the rows, for a store without labels), in contiguous chunks: series
        (``sizes``) and labelled series of each class (``counts``) per split, label check. Returns the
        first unlabelled (-1) row, or None."""
        num_classes, first_unlabelled = len(self.source_class_names), None
        for start in range(0, len(series), CHUNK):
            rows = np.arange(start, min(start + CHUNK, len(series)))
            split = self.split_of(series, rows, in_test_store)
            labels = None if series.labels is None else series.labels[start : rows[-1] + 1]
            if labels is not None:
                # A test store's class that training lacks is UNSEEN_CLASS (relabel): refused at setup("test").
                bad = (labels < (UNSEEN_CLASS if in_test_store else -1)) | (labels >= num_classes)
                if bad.any():
                    raise ValueError(
                        f"{series.source}/labels.npy: row {start + int(np.flatnonzero(bad)[0])} holds label "
                        f"{int(labels[bad][0])}, expected -1 (unlabelled) or a class index in [0, {num_classes})"
                    )
                if first_unlabelled is None and (labels < 0).any():
                    first_unlabelled = start + int(np.flatnonzero(labels < 0)[0])
            for code, name in enumerate(("train", "val", "test")):
                inside = split == code
                self.sizes[name] = self.sizes.get(name, 0) + int(inside.sum())
                members = None if labels is None else labels[inside & (labels >= 0)]
                if members is not None and len(members):
                    self.counts[name] = self.counts.get(name, 0) + np.bincount(members, minlength=num_classes)
        return first_unlabelled

    def _labels_for(self, series: Any, first_unlabelled: int | None, needs: bool) -> tuple[Any, str | None]:
        """``series`` as the task takes it, as ``SeriesStore`` does: unchanged when every series is
        labelled; labels dropped when some are not (-1, or no labels at all). The second item says why
        a task that needs labels cannot take it (None when it can); raised at once when ``needs``."""
        if series.labels is None:
            problem = no_labels_problem(series.source)
        elif first_unlabelled is not None:
            problem = (
                f"{series.source}/labels.npy: row {first_unlabelled} holds label -1 (unlabelled): this task "
                "needs every series labelled; use the store for pretraining (AutoEncoder, ContrastivePretraining) "
                "or to predict, or give the unlabelled series as a separate `unlabelled` store"
            )
        else:
            return series, None
        if needs:
            raise ValueError(problem)
        return replace(series, labels=None), problem

    def setup(self, stage: str) -> None:
        if stage == "test" and self.unseen_test_classes and self.labels_needed():
            raise InputError(
                f"{self.test_path}: test classes {list(self.unseen_test_classes)} were never seen in training "
                f"({self.path}'s classes: {self.class_names}); StreamingSeriesStore cannot leave their series out of "
                "the scores: test with SeriesStore (the same options), which reports them and scores the rest"
            )
        if "train" not in self.datasets or (stage in ("test", "predict") and "test" not in self.datasets):
            self._setup_splits(stage)
        if stage == "test" and self._test_problem is not None and self.labels_needed():
            raise ValueError(self._test_problem)  # a test split set up for fit, with unlabelled series
        super().setup(stage)  # the unlabelled series (StoreInputs)

    def _setup_splits(self, stage: str) -> None:
        needs = stage != "predict" and self.labels_needed()
        series = open_store(self.path, lazy=True)[0]
        test = series if self.test_path is None else open_test_store(self.test_path, self.source_class_names, lazy=True)
        self.counts, self.sizes = {}, dict.fromkeys(("train", "val", "test"), 0)
        series, problem = self._labels_for(series, self._scan(series, in_test_store=False), needs)
        if problem is not None:  # labels dropped: no class counts
            self.counts = {}
        if self.test_path is None:
            test, self._test_problem = series, problem  # a fold of the same store
        else:
            # Its labels are needed only to test (setup("test"), also after a fit: see setup).
            first_unlabelled = self._scan(test, in_test_store=True)
            test, self._test_problem = self._labels_for(test, first_unlabelled, stage == "test" and needs)
            if self._test_problem is not None:
                self.counts.pop("test", None)
        for name in ("train", "val"):
            if self.sizes[name] == 0:
                raise ValueError(f"{self.path}: the {name} split is empty (val_fraction={self.val_fraction})")
        # A contract handed over (a checkpoint's) needs no training sample: nothing is computed to be thrown away.
        contract = (
            self.contract if self.contract is not None else self.make_contract(series, self._training_sample(series))
        )
        self.datasets["train"] = RowDataset(series, self.sizes["train"], contract, self.augmentation)
        self.datasets["val"] = RowDataset(series, self.sizes["val"], contract)
        self.datasets["test"] = RowDataset(test, self.sizes["test"], contract)
        self._split_series = {"train": series, "val": series, "test": test}

    def _training_sample(self, series: Any, size: int = 200_000) -> np.ndarray:
        """Sorted rows of up to ``size`` random training series, drawn without an index of them all."""
        permutation, chosen = RowPermutation(len(series), self.seed), []
        for start in range(0, len(series), CHUNK):
            rows = permutation(np.arange(start, min(start + CHUNK, len(series))))
            chosen.append(rows[self.split_of(series, rows) == 0])
            if sum(map(len, chosen)) >= size:
                break
        return np.sort(np.concatenate(chosen)[:size])

    def unlabelled_dataset(self, series: PixelSeries) -> RowDataset:
        return RowDataset(series, len(series), self.input_contract)

    def class_counts(self, split: str) -> np.ndarray:
        return self.counts.get(split, np.zeros(len(self.class_names), dtype=np.int64))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        series, code = self._split_series[split], {"train": 0, "val": 1, "test": 2}[split]
        in_test_store = split == "test" and self.test_path is not None

        def in_split(rows: np.ndarray) -> np.ndarray:
            return self.split_of(series, rows, in_test_store) == code

        sampler = RowSampler(len(series), in_split, self.sizes[split], shuffle, self.seed)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=pass_through,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and self.sizes[split] > self.batch_size,
        )
