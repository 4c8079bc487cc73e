"""What the training series say about the inputs: per-band normalisation statistics, the date grid,
and a warning when other series lie on another scale."""

import warnings

import numpy as np

from cmap.data.contract import DateGrid, InputContract
from cmap.data.series import PixelSeries


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
