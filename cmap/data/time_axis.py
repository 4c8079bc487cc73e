"""The time axis: how acquisition dates become the day offsets a model sees, and its options.

:class:`TimeAxis` is part of the input contract (:mod:`cmap.data.contract`): recorded in a store's
metadata and in every checkpoint, so ``cmap predict`` and ``cmap map`` count days as training did.
Every command offers the same three options for it (:func:`add_time_axis_arguments`), turns them
into an axis with one function (:func:`time_axis_from_arguments`, through :func:`resolve_time_axis`,
the one place options become an axis) and back into options with one (:func:`time_axis_arguments`,
for the advice of error messages).
"""

import datetime
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cmap.outputs import InputError

TIME_AXIS_RULES = ("series_start", "reference_date", "season_start")


DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d")


def parse_date(text: str | datetime.date, source: str) -> datetime.date:
    """A ``YYYY-MM-DD`` (or ``YYYYMMDD``) date; the error names ``source``."""
    if isinstance(text, datetime.date):
        return text
    for layout in DATE_FORMATS:
        try:
            return datetime.datetime.strptime(str(text), layout).date()
        except ValueError:
            pass
    raise ValueError(f"{source}: cannot parse the date {text!r} (expected YYYY-MM-DD or YYYYMMDD)")


def parse_month_day(text: str, what: str = "season_start") -> tuple[int, int]:
    """``MM-DD`` -> (month, day); 02-29 is refused (it does not occur every year)."""
    try:
        month, day = (int(part) for part in str(text).split("-"))
        datetime.date(2001, month, day)  # a non-leap year: 02-29 fails here
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a month-day MM-DD of every year (e.g. 09-01)") from None
    return month, day


@dataclass(frozen=True)
class TimeAxis:
    """How acquisition dates become day offsets (the ``days`` of a batch).

    Rules:
        ``series_start``: days since each series' first date (the default; for data whose
            calendar is unknown, or series that all begin at the start of their season).
        ``reference_date``: days since one fixed ``reference_date`` (``YYYY-MM-DD``): every
            series of one season, e.g. the pixels of one year's raster stack.
        ``season_start``: days since the latest ``season_start`` (``MM-DD``, e.g. ``09-01``) on or
            before each series' first date: samples of many years, each within one season. A
            model then sees the day of the season, never the calendar year.

    A map of a raster stack is one series in time: its days follow the same rule, so a stack that
    starts later than the training data (a missing first image) still gets the training days.
    """

    rule: str = "series_start"
    reference_date: str | None = None
    season_start: str | None = None

    def __post_init__(self) -> None:
        if self.rule not in TIME_AXIS_RULES:
            raise ValueError(f"time axis rule must be one of {TIME_AXIS_RULES}, got {self.rule!r}")
        needs = {"reference_date": self.reference_date, "season_start": self.season_start}
        for name, value in needs.items():
            if (self.rule == name) != (value is not None):
                raise ValueError(
                    f"time axis {self.rule!r} "
                    + (f"needs {name}" if self.rule == name else f"takes no {name} (got {value!r})")
                )
        if self.reference_date is not None:
            object.__setattr__(self, "reference_date", str(parse_date(self.reference_date, "reference_date")))
        if self.season_start is not None:
            month, day = parse_month_day(self.season_start)
            object.__setattr__(self, "season_start", f"{month:02d}-{day:02d}")

    @classmethod
    def from_reference_date(cls, date: str | datetime.date) -> "TimeAxis":
        return resolve_time_axis(reference_date=str(parse_date(date, "reference_date")))

    @classmethod
    def from_season_start(cls, month_day: str) -> "TimeAxis":
        return resolve_time_axis(season_start=month_day)

    @classmethod
    def fit_season(cls, first_dates: np.ndarray) -> "TimeAxis":
        """The ``season_start`` axis that fits series starting on ``first_dates`` best: among their
        month-days, the one that puts every first date closest to day 0 (the largest offset is the
        smallest). MODIS 16-day composites start on 09-14, or 09-13 in leap years: 09-13 wins."""
        first = np.unique(np.asarray(first_dates, dtype="datetime64[D]"))
        candidates = sorted({str(date)[5:].replace("02-29", "02-28") for date in first})
        axes = [cls.from_season_start(month_day) for month_day in candidates]
        return min(axes, key=lambda axis: int((first - axis.anchors(first)).astype(np.int64).max()))

    def anchors(self, first_dates: np.ndarray) -> np.ndarray:
        """Day 0 (datetime64[D]) of series whose first dates are ``first_dates`` (datetime64[D], any shape)."""
        first = np.asarray(first_dates, dtype="datetime64[D]")
        if self.rule == "series_start":
            return first
        if self.rule == "reference_date":
            return np.full(first.shape, np.datetime64(self.reference_date, "D"))
        month, day = parse_month_day(self.season_start)
        # The season start in each first date's year (month arithmetic, then the day), else a year before.
        months = first.astype("datetime64[Y]").astype("datetime64[M]") + (month - 1)
        this_year = months.astype("datetime64[D]") + (day - 1)
        last_year = (months - 12).astype("datetime64[D]") + (day - 1)
        return np.where(this_year <= first, this_year, last_year)

    def days(self, dates: Sequence[datetime.date] | np.ndarray) -> np.ndarray:
        """int64 (T,) day offsets of one series' (or one raster stack's) sorted dates."""
        dates = np.asarray(dates, dtype="datetime64[D]")
        if dates.size == 0:
            return np.zeros(0, dtype=np.int64)
        days = (dates - self.anchors(dates.min())).astype(np.int64)
        if (days < 0).any():
            first = dates[np.flatnonzero(days < 0)[0]]
            raise ValueError(f"date {first} lies before day 0 of the time axis {self.describe()}")
        return days

    def describe(self) -> str:
        if self.rule == "reference_date":
            return f"days since {self.reference_date}"
        if self.rule == "season_start":
            return f"days since each series' latest {self.season_start}"
        return "days since each series' first date"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> "TimeAxis":
        return cls(**content)


def resolve_time_axis(
    rule: str | None = None,
    reference_date: str | None = None,
    season_start: str | None = None,
    first_dates: np.ndarray | None = None,
    default: TimeAxis | None = None,
) -> TimeAxis:
    """The time axis of the options, "explicit option > ``default`` > fitted to the data".

    No option at all gives ``default`` (a checkpoint's or a store's axis) when there is one. Else
    the rule is ``rule``, or ``season_start`` when only ``season_start`` is given, else
    ``reference_date``; a missing ``season_start`` is fitted to the series' ``first_dates``
    (:meth:`TimeAxis.fit_season`), a missing ``reference_date`` is the earliest of them. Raises
    ValueError for a malformed value or a rule without what it needs.
    """
    if rule is None and reference_date is None and season_start is None and default is not None:
        return default
    rule = rule or ("season_start" if season_start else "reference_date")
    if rule == "season_start" and season_start is None and first_dates is not None:
        season_start = TimeAxis.fit_season(first_dates).season_start
    if rule == "reference_date" and reference_date is None and first_dates is not None:
        reference_date = str(np.min(first_dates))
    return TimeAxis(rule, reference_date, season_start)  # checks the rule and the options it takes


def add_time_axis_arguments(parser: Any) -> None:
    """The time-axis options (``--time_axis``, ``--season_start``, ``--reference_date``) on ``parser``
    (an ``argparse`` parser or argument group); read them back with :func:`time_axis_from_arguments`."""
    parser.add_argument(
        "--time_axis", choices=TIME_AXIS_RULES, default=None,
        help="how dates become days: season_start (days since each sample's season start, --season_start; samples "
        "of many years), series_start (days since each sample's first date), reference_date (days since "
        "--reference_date). Default: season_start with --season_start, else reference_date; dates spanning more "
        "than one season then need an explicit choice",
    )  # fmt: skip
    parser.add_argument(
        "--season_start", default=None,
        help="MM-DD (e.g. 09-01): day 0 is the latest such day on or before each sample's first date (default with "
        "--time_axis season_start: fitted to the samples' first dates)",
    )  # fmt: skip
    parser.add_argument("--reference_date", default=None, help="YYYY-MM-DD: day 0 (default: the earliest date)")


def time_axis_from_arguments(
    namespace: Any, first_dates: np.ndarray | None = None, default: TimeAxis | None = None
) -> TimeAxis:
    """The :class:`TimeAxis` of the options of :func:`add_time_axis_arguments` (``namespace``: parsed
    arguments, or any object with ``time_axis``, ``reference_date`` and ``season_start`` attributes;
    missing ones count as not given), resolved by :func:`resolve_time_axis` with ``first_dates`` and
    ``default``. A bad value or combination is an :class:`~cmap.outputs.InputError` naming the options."""
    try:
        return resolve_time_axis(
            getattr(namespace, "time_axis", None), getattr(namespace, "reference_date", None),
            getattr(namespace, "season_start", None), first_dates, default,
        )  # fmt: skip
    except ValueError as error:
        raise InputError(f"time axis options: {error}") from None


def time_axis_arguments(axis: TimeAxis) -> list[str]:
    """The options that give ``axis`` (the inverse of :func:`time_axis_from_arguments`)."""
    if axis.rule == "reference_date":
        return ["--time_axis", "reference_date", "--reference_date", str(axis.reference_date)]
    if axis.rule == "season_start":
        return ["--time_axis", "season_start", "--season_start", str(axis.season_start)]
    return ["--time_axis", "series_start"]
