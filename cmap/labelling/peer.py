"""Cheap out-of-fold class probabilities: a random forest (scikit-learn) on the series' band values,
fitted once per fold of :func:`~cmap.data.splits.kfold_split` (the folds ``cmap cv`` uses) on one
thread: seconds on 2,000 series, where a deep model's k-fold costs minutes per fold.

Why a forest: no training recipe to tune, robust to label noise, and its probabilities are averages
of many trees, which ranks self-confidence well for confident learning. Missing dates take the
band's training mean (as :mod:`benchmarks.peers`' forest): each tree splits on fixed dates.
"""

import numpy as np

from cmap.data.series import PixelSeries
from cmap.data.splits import kfold_split

#: Trees of the peer forest (300 in the accuracy benchmark; 200 ranks as well at two thirds the cost).
TREES = 200


def features(series: PixelSeries, band_mean: np.ndarray | None = None) -> np.ndarray:
    """(N, T*C) float32 band values, a missing date filled with the band's mean (over ``series`` when
    ``band_mean`` is None)."""
    values = np.array(series.values[:], dtype=np.float32)
    if band_mean is None:
        band_mean = np.nanmean(values, axis=(0, 1))
    values = np.where(np.isfinite(values), values, band_mean)
    return values.reshape(len(values), -1)


def forest(seed: int = 0, trees: int = TREES):
    """A fresh random forest on one thread."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=trees, n_jobs=1, random_state=seed, min_samples_leaf=1)


def out_of_fold(
    series: PixelSeries, num_classes: int, num_folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities (N, K), agreement (N,: the share of trees voting for the given label) and folds
    (N,: -1 for a series in no fold, NaN probabilities) of the labelled ``series`` (labels >= 0)."""
    x = features(series)
    labels = series.labels
    probabilities = np.full((len(series), num_classes), np.nan)
    agreement = np.full(len(series), np.nan)
    folds = np.full(len(series), -1)
    for fold in range(num_folds):
        rest, held = kfold_split(series, num_folds, fold, seed)
        model = forest(seed).fit(x[rest], labels[rest])
        probabilities[held] = 0.0
        probabilities[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
        votes = np.stack([model.classes_[tree.predict(x[held]).astype(int)] for tree in model.estimators_])
        agreement[held] = (votes == labels[held]).mean(axis=0)
        folds[held] = fold
    return probabilities, agreement, folds


def rocket_features(fitted_on: PixelSeries, *others: PixelSeries, seed: int = 0) -> list[np.ndarray]:
    """MiniRocket features (aeon, ~10,000 per series, one thread) of ``fitted_on`` and of ``others``,
    the kernels' biases fitted on ``fitted_on`` (no labels used), each feature standardised by its
    mean and spread there: the input of :func:`logistic`. A missing date takes the band's mean."""
    from aeon.transformations.collection.convolution_based import MiniRocket

    band_mean = np.nanmean(np.array(fitted_on.values[:], dtype=np.float32), axis=(0, 1))

    def channels_first(series: PixelSeries) -> np.ndarray:  # aeon's (N, C, T) float64
        return features(series, band_mean).reshape(len(series), -1, len(band_mean)).transpose(0, 2, 1).astype(float)

    rocket = MiniRocket(n_kernels=10_000, n_jobs=1, random_state=seed)
    fitted = rocket.fit_transform(channels_first(fitted_on))
    mean, spread = fitted.mean(axis=0), np.maximum(fitted.std(axis=0), 1e-6)
    return [
        ((f - mean) / spread).astype(np.float32)
        for f in [fitted, *(rocket.transform(channels_first(s)) for s in others)]
    ]


def logistic(strength: float = 0.1):
    """A multinomial logistic regression (L2, ``C = strength``) for :func:`rocket_features`: calibrated
    class probabilities in a second or two on a few hundred series, where the forest's are vote shares."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=strength, max_iter=300)
