"""Pixel series in memory or on disk (numpy only: every reader, converter and the store format uses them).

The torch dataset that normalises them into batches is :mod:`cmap.data.dataset`.
"""

from dataclasses import dataclass

import numpy as np

#: The label of a test series whose class training never saw (a test store's class the training store
#: lacks, :func:`~cmap.data.store.relabel`): reported, not scored. -1 is an unlabelled series.
UNSEEN_CLASS = -2


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
