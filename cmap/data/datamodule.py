"""The shared LightningDataModule: splits, normalisation, masks and loaders."""

import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from cmap.data.batch import Batch
from cmap.data.classes import ClassMapping
from cmap.data.contract import DateGrid, InputContract, RawValues, TimeAxis
from cmap.data.perturbations import Augmentation


@dataclass
class PixelSeries:
    """N series of T dates with C bands, in memory or read on demand from a store (:mod:`cmap.data.store`).

    Attributes:
        values: float32 (N, T, C); NaN marks a missing date (cloud, gap or padding).
        days: int64 (N, T), day offset of each date on the data's time axis
            (:class:`~cmap.data.contract.TimeAxis`).
        labels: int64 (N,) class indices, or None when unlabelled.
        source: where the series came from, for error messages (a file path).
        groups: int64 (N,) parcel / polygon ids, or None; splits never separate a group.
        sample_ids: str (N,) the user's sample ids (e.g. a table's ``sample_id`` column), or None;
            ``cmap predict`` writes them beside each prediction.
    """

    values: np.ndarray
    days: np.ndarray
    labels: np.ndarray | None
    source: str
    groups: np.ndarray | None = None
    sample_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 3:
            raise ValueError(f"{self.source}: values must be (samples, dates, bands), got shape {self.values.shape}")
        if self.days.shape != self.values.shape[:2]:
            raise ValueError(
                f"{self.source}: days has shape {self.days.shape}, expected (samples, dates) = {self.values.shape[:2]}"
            )
        if self.labels is not None and self.labels.shape != (len(self.values),):
            raise ValueError(f"{self.source}: labels has shape {self.labels.shape}, expected ({len(self.values)},)")
        if self.groups is not None and self.groups.shape != (len(self.values),):
            raise ValueError(f"{self.source}: groups has shape {self.groups.shape}, expected ({len(self.values)},)")
        if self.sample_ids is not None and self.sample_ids.shape != (len(self.values),):
            raise ValueError(
                f"{self.source}: sample_ids has shape {self.sample_ids.shape}, expected ({len(self.values)},)"
            )
        if isinstance(self.values, np.ndarray):  # a store was checked when written; never read it whole
            self.check_valid_dates()

    def check_valid_dates(self) -> None:
        """Reject series without any valid date: they cannot be encoded."""
        check_series(self.valid_dates, self.source, np.arange(len(self)))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def valid_dates(self) -> np.ndarray:
        """bool (N, T): dates whose every band value is finite."""
        return np.isfinite(self.values).all(axis=-1)

    def subset(self, index: np.ndarray) -> "PixelSeries":
        labels = None if self.labels is None else self.labels[index]
        groups = None if self.groups is None else self.groups[index]
        sample_ids = None if self.sample_ids is None else self.sample_ids[index]
        return PixelSeries(self.values[index], self.days[index], labels, self.source, groups, sample_ids)


def check_series(mask: np.ndarray, source: str, rows: np.ndarray) -> None:
    """Reject series whose ``mask`` (N, T) has no valid date, naming the first by its row in ``source``."""
    empty = ~mask.any(axis=1)
    if empty.any():
        raise ValueError(
            f"{source}: {int(empty.sum())} series have no valid date (every date has a NaN or infinite band "
            f"value), first at sample index {int(rows[np.flatnonzero(empty)[0]])}; remove them"
        )


def sort_dates(values: np.ndarray, days: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Reorder each series' dates by day when its valid dates are out of order (a repair).

    Converters write dates in order, but a store or table from elsewhere may not; the encoders
    would not mind (positions are days), but contiguous-date masking and the attention figures
    assume it. Invalid dates go last. Two valid dates on the same day are kept (overlapping
    orbits); the table converter alone rejects them, as two rows for one date are ambiguous there.
    """
    previous = np.maximum.accumulate(np.where(mask, days, np.iinfo(np.int64).min), axis=1)
    if not (mask[:, 1:] & (days[:, 1:] < previous[:, :-1])).any():
        return values, days, mask
    order = np.argsort(np.where(mask, days, np.iinfo(np.int64).max), axis=1, kind="stable")
    return (
        np.take_along_axis(values, order[..., None], axis=1),
        np.take_along_axis(days, order, axis=1),
        np.take_along_axis(mask, order, axis=1),
    )


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


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out) with ``fraction`` of each class held out: at least one per class,
    but never a class's last member (a class of one series stays on the kept side, to be learnt)."""
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held_out.append(members[: min(max(1, round(fraction * len(members))), len(members) - 1)])
    held = np.sort(np.concatenate(held_out))
    return np.setdiff1d(np.arange(len(labels)), held), held


def group_split(
    groups: np.ndarray, fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): whole groups held out, about ``fraction`` of the series.

    Groups are taken in a seeded random order while the held-out series stay within ``fraction``
    (the first group always). With ``labels``, a group is passed over when holding it out would
    leave one of its classes with no kept series: a class of one parcel stays on the kept side.
    """
    rng = np.random.default_rng(seed)
    unique, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(unique))
    limit = max(fraction * len(groups), sizes[order][0])
    if labels is None:
        taken = unique[order][np.cumsum(sizes[order]) <= limit]
    else:
        left = np.bincount(labels[labels >= 0], minlength=int(labels.max(initial=0)) + 1)
        members = np.bincount(inverse[labels >= 0] * len(left) + labels[labels >= 0], minlength=len(unique) * len(left))
        members = members.reshape(len(unique), len(left))  # series of each class in each group
        taken, total = [], 0
        for group in order:
            if total + sizes[group] > limit:
                break
            if (left[members[group] > 0] <= members[group][members[group] > 0]).any():
                continue  # the group holds the last kept series of a class
            taken.append(unique[group])
            total += sizes[group]
            left -= members[group]
        if not taken:  # every parcel holds a class's last series: hold out as without labels
            return group_split(groups, fraction, seed)
    held = np.isin(groups, taken)
    return np.flatnonzero(~held), np.flatnonzero(held)


def holdout_split(series: "PixelSeries", fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """By group when the series have groups (no parcel on both sides), stratified by class otherwise
    (at random when unlabelled); a class's last series (or last parcel) is never held out."""
    if series.groups is not None:
        return group_split(series.groups, fraction, seed, series.labels)
    return stratified_split(strata(series), fraction, seed)


def strata(series: "PixelSeries") -> np.ndarray:
    """The labels to stratify splits by: one stratum for unlabelled series."""
    return np.zeros(len(series), dtype=np.int64) if series.labels is None else series.labels


def kfold_split(series: "PixelSeries", num_folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, fold): fold ``fold`` of ``num_folds``, by group if any, else stratified by class.

    Members of each class (or whole groups, largest first) are dealt to the folds in turn; a class
    of a single series (or a single group) is in no fold (always trained on, never tested).
    """
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must lie in [0, num_folds={num_folds}), got {fold}")
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(series), dtype=np.int64)
    if series.groups is not None:
        unique, inverse, sizes = np.unique(series.groups, return_inverse=True, return_counts=True)
        order = rng.permutation(len(unique))
        order = order[np.argsort(-sizes[order], kind="stable")]
        fold_sizes = np.zeros(num_folds)
        group_fold = np.full(len(unique), -1, dtype=np.int64)
        sole = sole_groups(inverse, series.labels, len(unique))
        sole &= not sole.all()  # every group a class's only one: deal them all (the warning names the classes)
        for group in order[~sole[order]]:  # greedy: the next largest group to the smallest fold
            group_fold[group] = int(np.argmin(fold_sizes))
            fold_sizes[group_fold[group]] += sizes[group]
        assignment = group_fold[inverse]  # a class's only group: in no fold (-1), always trained on
    else:
        labels = strata(series)
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            # A class of one series is trained on in every fold, never tested (it cannot be both).
            assignment[members] = np.arange(len(members)) % num_folds if len(members) > 1 else -1
    return np.flatnonzero(assignment != fold), np.flatnonzero(assignment == fold)


def sole_groups(inverse: np.ndarray, labels: np.ndarray | None, num_groups: int) -> np.ndarray:
    """bool (num_groups,): the groups (``inverse``: each series' group index) that hold every
    labelled series of some class."""
    sole = np.zeros(num_groups, dtype=bool)
    if labels is None:
        return sole
    labelled = labels >= 0
    for label in np.unique(labels[labelled]):
        groups = np.unique(inverse[labelled & (labels == label)])
        if len(groups) == 1:
            sole[groups[0]] = True
    return sole


def per_class_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` random members of each class (all members of smaller ones)."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


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
        """The contract of this data from its training series ``train_index`` of ``series``:
        per-band statistics and date grid (unless a contract was adopted)."""
        if self.contract is None:
            mean, std = normalisation_statistics(series, train_index)
            self.contract = InputContract(
                self.band_names, mean, std, self.time_axis, self.class_names, self.raw_values,
                training_date_grid(series, train_index),
            )  # fmt: skip
        return self.contract

    def adopt(self, contract: InputContract, source: str) -> None:
        """Use ``contract`` (from the checkpoint ``source``) instead of this data's own statistics.

        Bands, classes and time axis must agree: a model sees its inputs as it was trained to.
        """
        for name, mine in (("band_names", self.band_names), ("class_names", self.class_names)):
            theirs = getattr(contract, name)
            if theirs is not None and tuple(theirs) != tuple(mine):
                raise ValueError(
                    f"{type(self).__name__} (data of {source}): {name} {list(mine)} differ from the model's "
                    f"{list(theirs)}"
                )
        if contract.time_axis != self.time_axis:
            raise ValueError(
                f"{source}: the model counts {contract.time_axis.describe()}, but {type(self).__name__}'s days "
                f"are {self.time_axis.describe()}"
            )
        self.contract = contract
        for dataset in self.datasets.values():
            dataset.contract = contract

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
        if not needs and (series.labels == -1).any():
            return replace(series, labels=None)
        return series

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
            test = self._prepare(self._unlabelled(self.load_test(), stage))
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


def normalisation_statistics(
    series: PixelSeries, index: np.ndarray, max_series: int = 200_000, chunk_size: int = 65_536, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation over the valid dates of the series ``index``.

    At most ``max_series`` series (a seeded random sample beyond that: the statistics of 200,000
    series are exact to about 0.1 %), streamed ``chunk_size`` at a time with float64 sums, so time
    and memory stay flat however large the store. Returns float32 (C,) arrays.
    """
    index = seeded_sample(index, max_series, seed)
    num_bands = series.values.shape[-1]
    total, total_sq, count = np.zeros(num_bands), np.zeros(num_bands), 0
    for start in range(0, len(index), chunk_size):
        values = series.values[np.sort(index[start : start + chunk_size])]
        valid = values[np.isfinite(values).all(axis=-1)].astype(np.float64)  # (valid dates, C)
        total += valid.sum(axis=0)
        total_sq += np.square(valid).sum(axis=0)
        count += len(valid)
    if count == 0:
        raise ValueError(f"{series.source}: the training split has no valid date to normalise with")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std[std == 0] = 1.0  # a constant band is only centred
    return mean.astype(np.float32), std.astype(np.float32)


def warn_other_scale(series: PixelSeries, contract: InputContract, max_series: int = 2000) -> None:
    """Warn when a band of ``series`` (test or new samples) lies on another scale than the training
    series (mean more than 10 training standard deviations away, or a spread 20 times larger or
    smaller, from 20 series on: reflectance 0-1 against integers 0-10000): the model would see values it never saw,
    and predict nonsense silently."""
    try:
        mean, std = normalisation_statistics(series, np.arange(len(series)), max_series=max_series)
    except ValueError:  # no valid date: named when its batch is read
        return
    shift = np.abs(mean - contract.mean) / contract.std
    ratio = np.maximum(std, 1e-12) / contract.std
    far = [
        f"{band!r} (mean {m:.4g}, std {s:.4g} against {t:.4g}, {ts:.4g})"
        for band, m, s, t, ts, d, r in zip(
            contract.band_names, mean, std, contract.mean, contract.std, shift, ratio, strict=True
        )
        if d > 10 or (len(series) >= 20 and not 1 / 20 < r < 20)  # a spread needs a few series
    ]
    if far:
        warnings.warn(
            f"{series.source}: bands on another scale than the training series: {', '.join(far)}; convert both "
            "tables with the same units (e.g. reflectance 0-1, or integers 0-10000)",
            stacklevel=3,
        )


def training_date_grid(series: PixelSeries, index: np.ndarray, max_series: int = 20_000, seed: int = 0) -> DateGrid:
    """The :class:`~cmap.data.contract.DateGrid` of the series ``index`` (a seeded sample of at most
    ``max_series`` of them: a median and a maximum of days, read once at setup)."""
    rows = np.sort(seeded_sample(index, max_series, seed))
    return DateGrid.of(series.days[rows], np.isfinite(series.values[rows]).all(axis=-1))


def seeded_sample(index: np.ndarray, max_series: int, seed: int) -> np.ndarray:
    """``index`` itself, or a seeded random sample of ``max_series`` of it when it holds more."""
    if len(index) <= max_series:
        return index
    return np.random.default_rng(seed).choice(index, max_series, replace=False)
