"""Synthetic series for unit tests and speed benchmarks (never as evidence that a model learns)."""

from typing import Any

import numpy as np

from cmap.data.datamodule import SITSDataModule
from cmap.data.series import PixelSeries


def synthetic_series(
    num_samples: int, num_dates: int, num_bands: int, num_classes: int, cloud_fraction: float, seed: int
) -> PixelSeries:
    """Irregularly dated series whose class sets the phase of a seasonal curve, with cloud gaps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_samples)
    days = np.sort(rng.choice(365, size=(num_samples, num_dates)), axis=1)
    phase = labels[:, None] / max(num_classes, 1) * 2 * np.pi
    curve = np.sin(days / 365 * 2 * np.pi + phase)
    band_gain = rng.uniform(0.5, 1.5, num_bands)
    values = curve[:, :, None] * band_gain + rng.normal(0, 0.2, (num_samples, num_dates, num_bands))
    clouds = rng.random((num_samples, num_dates)) < cloud_fraction
    clouds[:, 0] = False  # every series keeps at least one clear date
    values[clouds] = np.nan
    return PixelSeries(values.astype(np.float32), days.astype(np.int64), labels.astype(np.int64), "synthetic")


class SyntheticSITS(SITSDataModule):
    """Random series with any band and class names (tests, benchmarks, config checks).

    Args:
        class_names: the classes, in index order.
        num_bands: bands per date (named ``b1``, ``b2``...).
        num_dates: dates per series (irregular days in one year, some clouded).
        num_train, num_test: series in the training (before validation) and test sets.
        cloud_fraction: fraction of dates turned to NaN (masked).
        **kwargs: the other :class:`~cmap.data.datamodule.SITSDataModule` arguments (batch_size,
            num_workers, val_fraction, seed, augmentation, labels_per_class, class_map).
    """

    def __init__(
        self,
        class_names: list[str],
        num_bands: int = 9,
        num_dates: int = 24,
        num_train: int = 512,
        num_test: int = 256,
        cloud_fraction: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_class_names = list(class_names)
        self.band_names = [f"b{i + 1}" for i in range(num_bands)]
        self.num_dates = num_dates
        self.num_train = num_train
        self.num_test = num_test
        self.cloud_fraction = cloud_fraction

    def _series(self, num_samples: int, seed: int) -> PixelSeries:
        return synthetic_series(
            num_samples, self.num_dates, self.num_bands, len(self.source_class_names), self.cloud_fraction, seed
        )

    def load_train(self) -> PixelSeries:
        return self._series(self.num_train, self.seed)

    def load_test(self) -> PixelSeries:
        return self._series(self.num_test, self.seed + 1)
