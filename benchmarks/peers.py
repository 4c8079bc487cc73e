"""What a user would pick instead of cmap, fitted on the same series: aeon's MiniRocket, MultiRocket and
MultiRocket-Hydra, and a scikit-learn random forest; their predictions and what they cost.

aeon is in the ``benchmarks`` extra (``pip install -c constraints.txt -e ".[benchmarks]"``), not in
cmap's dependencies; the random forest needs scikit-learn only.

Timing: every fit and predict call is timed with ``time.process_time`` (CPU seconds of the whole
process: every thread counts, so on a machine shared with other jobs it does not grow with their
load as wall time does) and with ``time.perf_counter`` (wall). Conversions of the series (the 3-D
arrays, the forest's flattened features) are not timed. Prediction on a test set that takes less
than one CPU second is repeated until it has taken one, and the mean pass counts. Each aeon peer is
first fitted and used once, untimed, on 40 training series, so that numba's compilation (tens of
seconds at a process's first call) is not counted as its fit. Run with one thread (``OMP_NUM_THREADS=1
NUMBA_NUM_THREADS=1``, ``n_jobs=1`` here) for figures that compare with cmap at ``--threads 1``.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cmap.data.series import PixelSeries

#: Every peer, in the report's order.
PEERS = ("minirocket", "multirocket", "hydra", "forest")
TITLES = {
    "minirocket": "MiniRocket",
    "multirocket": "MultiRocket",
    "hydra": "MultiRocket-Hydra",
    "forest": "random forest",
}
AEON_PEERS = ("minirocket", "multirocket", "hydra")
EXTRA_HINT = 'aeon is not installed: install the benchmarks extra, `pip install -c constraints.txt -e ".[benchmarks]"`'
#: Prediction is timed over passes until this many CPU seconds (one pass on a large test set).
MIN_PREDICT_CPU_SECONDS = 1.0
#: Series of the untimed warm-up fit, evenly spaced over the training series (so several classes).
WARM_UP_SERIES = 40


def aeon_available() -> bool:
    try:
        import aeon  # noqa: F401
    except ImportError:
        return False
    return True


def interpolated(series: PixelSeries, band_mean: np.ndarray) -> np.ndarray:
    """aeon's layout, float64 (N, C, T); a missing date (NaN) is interpolated linearly in time.

    Interpolation along each series' own days (the nearest valid value before the first and after
    the last valid date); a band with no valid date at all takes the band's training mean. Why not
    the band mean at every missing date (the forest's rule): the ROCKET kernels convolve along
    time, and a date filled with a mean far from its neighbours is a step that every kernel sees,
    while interpolation is what gap filling of crop series does (e.g. R sits' default). The
    datasets of ``accuracy.py`` have no missing date in their stores, so their figures do not
    depend on this rule.
    """
    values = np.array(series.values[:], dtype=np.float64)
    days = np.array(series.days[:], dtype=np.float64)
    missing = ~np.isfinite(values)
    for row, band in zip(*np.nonzero(missing.any(axis=1)), strict=True):
        valid = ~missing[row, :, band]
        if valid.any():
            values[row, :, band] = np.interp(days[row], days[row, valid], values[row, valid, band])
        else:
            values[row, :, band] = band_mean[band]
    return np.ascontiguousarray(values.transpose(0, 2, 1))


def flat(series: PixelSeries, band_mean: np.ndarray) -> np.ndarray:
    """(N, T*C) features for the random forest; missing dates take the band's training mean."""
    values = np.array(series.values[:], dtype=np.float32)
    values = np.where(np.isfinite(values), values, band_mean)
    return values.reshape(len(values), -1)


def estimator(peer: str, seed: int = 0):
    """A fresh, unfitted peer: aeon's defaults (10,000 kernels; Hydra 8 kernels x 64 groups),
    ``random_state`` fixed, one job; the forest: 300 trees, one job."""
    if peer == "forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=300, n_jobs=1, random_state=seed)
    from aeon.classification.convolution_based import (
        MiniRocketClassifier,
        MultiRocketClassifier,
        MultiRocketHydraClassifier,
    )

    classes = {
        "minirocket": MiniRocketClassifier,
        "multirocket": MultiRocketClassifier,
        "hydra": MultiRocketHydraClassifier,
    }
    return classes[peer](n_jobs=1, random_state=seed)


@dataclass
class PeerRun:
    """One peer on one training/test split."""

    predictions: np.ndarray
    fit_cpu_seconds: float
    fit_wall_seconds: float
    #: one prediction pass over the test series (the mean of the passes timed)
    predict_cpu_seconds: float
    predict_wall_seconds: float


def timed(function: Callable[[], object]) -> tuple[object, float, float]:
    """``function()``, its CPU seconds (process) and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = function()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def fit_predict(peer: str, train: PixelSeries, test: PixelSeries, seed: int = 0) -> PeerRun:
    """Fit ``peer`` on every training series, predict the test series; torch's thread count (which
    Hydra sets to its ``n_jobs``) is restored after."""
    threads = torch.get_num_threads()
    band_mean = np.nanmean(np.array(train.values[:]), axis=(0, 1))
    convert = flat if peer == "forest" else interpolated
    x_train, x_test = convert(train, band_mean), convert(test, band_mean)
    try:
        if peer in AEON_PEERS:  # every time: numba compiles per array layout (e.g. one band or several)
            keep = np.linspace(0, len(x_train) - 1, min(WARM_UP_SERIES, len(x_train))).astype(int)
            estimator(peer, seed).fit(x_train[keep], train.labels[keep]).predict(x_test[:10])
        model = estimator(peer, seed)
        _, fit_cpu, fit_wall = timed(lambda: model.fit(x_train, train.labels))
        predictions, predict_cpu, predict_wall = timed(lambda: model.predict(x_test))
        passes = 1
        while predict_cpu < MIN_PREDICT_CPU_SECONDS:  # a small test set: more passes, the mean of all
            _, cpu, wall = timed(lambda: model.predict(x_test))
            predict_cpu, predict_wall = predict_cpu + cpu, predict_wall + wall
            passes += 1
        predict_cpu, predict_wall = predict_cpu / passes, predict_wall / passes
    finally:
        torch.set_num_threads(threads)
    return PeerRun(np.asarray(predictions).astype(np.int64), fit_cpu, fit_wall, predict_cpu, predict_wall)
