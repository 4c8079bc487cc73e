"""The shared data of ``benchmarks/samples.py``'s experiments and their classifier: a logistic
regression on MiniRocket features (:mod:`cmap.labelling.peer`), one thread: the loops fit it
hundreds of times, in a second or two each, and its probabilities are calibrated.

Datasets: Mato Grosso (fold 0 of the 5 stratified folds as test set, the rest as training set or
pool), Victoria (its training and test files), UCR Crop (its training file as pool, its test file).
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cmap.data import convert  # noqa: E402
from cmap.data.series import PixelSeries  # noqa: E402
from cmap.data.splits import kfold_split  # noqa: E402
from cmap.data.store import relabel  # noqa: E402
from cmap.labelling.peer import features, logistic, rocket_features  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
FOLDS = 5


@dataclass
class Prepared:
    """A training set (or pool) and a test set as the classifier's features, and the raw band values."""

    name: str
    class_names: list[str]
    train: PixelSeries
    labels: np.ndarray
    test_labels: np.ndarray
    rocket: np.ndarray  # (N, F) standardised MiniRocket features of the training series
    rocket_test: np.ndarray
    values: np.ndarray  # (N, T*C) band values of the training series (a missing date: the band's mean)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def mato_grosso() -> tuple[PixelSeries, PixelSeries, convert.Converted]:
    data = convert.read_mato_grosso(SHARED / "sits_matogrosso_mod13q1/br_mt_1_8K_9classes_6bands.rda")
    rest, held = kfold_split(data.series, 5, 0, 0)
    return data.series.subset(rest), data.series.subset(held), data


def victoria() -> tuple[PixelSeries, PixelSeries, convert.Converted]:
    train = convert.read_victoria(SHARED / "igarss2019_s2_victoria/train_dataset.csv")
    test = convert.read_victoria(SHARED / "igarss2019_s2_victoria/test_dataset.csv")
    return train.series, relabel(test.series, test.class_names, train.class_names), train


def ucr_crop() -> tuple[PixelSeries, PixelSeries, convert.Converted]:
    train = convert.read_ucr(SHARED / "ucr_crop_formosat2/Crop_TRAIN.tsv")
    test = convert.read_ucr(SHARED / "ucr_crop_formosat2/Crop_TEST.tsv")
    return train.series, relabel(test.series, test.class_names, train.class_names), train


#: Each dataset's training set (or pool), test set, and the conversion of the training set (its class
#: names, bands, time axis and scale: what its stores are written with).
LOADERS = {"Mato Grosso": mato_grosso, "Victoria": victoria, "UCR Crop": ucr_crop}


def prepare(name: str) -> Prepared:
    train, test, converted = LOADERS[name]()
    class_names = converted.class_names
    rocket, rocket_test = rocket_features(train, test)
    return Prepared(name, class_names, train, train.labels, test.labels, rocket, rocket_test, features(train))


def accuracy(data: Prepared, rows: np.ndarray, labels: np.ndarray) -> float:
    """Test accuracy of the classifier trained on the training ``rows`` with their ``labels`` (over all rows)."""
    model = logistic().fit(data.rocket[rows], labels[rows])
    return float((model.predict(data.rocket_test) == data.test_labels).mean())


def out_of_fold(data: Prepared, labels: np.ndarray, seed: int) -> np.ndarray:
    """(N, K) out-of-fold probabilities of the classifier over the training series labelled ``labels``
    (the folds of ``cmap cv`` and ``cmap audit``: :func:`~cmap.data.splits.kfold_split`, whole
    polygons on Victoria)."""
    empty = np.zeros((len(labels), 1, 1), np.float32)
    series = PixelSeries(empty, np.zeros((len(labels), 1)), labels, "x", data.train.groups)  # grouped, as cmap audit
    probabilities = np.zeros((len(labels), data.num_classes))
    for fold in range(FOLDS):
        rest, held = kfold_split(series, FOLDS, fold, seed)
        model = logistic().fit(data.rocket[rest], labels[rest])
        probabilities[np.ix_(held, model.classes_)] = model.predict_proba(data.rocket[held])
    return probabilities
