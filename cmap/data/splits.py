"""Training, validation and test splits of series: held-out fractions, cross-validation folds and
few-label subsets, by group (parcel) when the series have groups, stratified by class otherwise.

Every split is a function of its arguments and seed (a NumPy ``default_rng``): the same data and
seed give the same indices."""

import numpy as np

from cmap.data.series import PixelSeries
from cmap.outputs import InputError


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
        raise InputError(f"fold must lie in [0, num_folds={num_folds}), got {fold}")
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
