"""Map accuracy and area estimates from reference samples (Olofsson et al. 2014).

A crop map's own pixel counts are biased area estimates: every omission and commission error
moves area between classes. With reference samples drawn by stratified random sampling, the map
classes being the strata (simple random and systematic samples are the post-stratified case), the
estimators of Olofsson et al. (2014) give, for each class, the user's and producer's accuracy and
an error-adjusted area, each with a confidence interval, and the overall accuracy:

    P. Olofsson, G.M. Foody, M. Herold, S.V. Stehman, C.E. Woodcock, M.A. Wulder (2014), Good
    practices for estimating area and assessing accuracy of land change, Remote Sensing of
    Environment 148:42-57, doi:10.1016/j.rse.2014.02.015 (equations 2 to 11; worked example in
    section 5, tables 8 and 9, reproduced by ``tests/test_evaluation.py``).

Example::

    counts = sample_counts(map_class_of_each_sample, reference_class_of_each_sample, num_classes=4)
    result = area_adjusted_accuracy(counts, mapped_area=pixels_per_class * 0.01, class_names=names)  # ha
    print(result.table())
"""

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


def sample_counts(map_classes: Sequence[int], reference_classes: Sequence[int], num_classes: int) -> np.ndarray:
    """Sample counts n_ij: samples of map class i (rows) whose reference class is j (columns)."""
    map_classes, reference_classes = np.asarray(map_classes), np.asarray(reference_classes)
    if map_classes.shape != reference_classes.shape or map_classes.ndim != 1:
        raise ValueError(
            f"map_classes {map_classes.shape} and reference_classes {reference_classes.shape} must be 1-D "
            "and of the same length (one entry per reference sample)"
        )
    for name, classes in (("map_classes", map_classes), ("reference_classes", reference_classes)):
        if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
            raise ValueError(f"{name} holds class indices outside [0, {num_classes})")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (map_classes, reference_classes), 1)
    return counts


@dataclass
class AreaAccuracy:
    """Olofsson et al. (2014) estimates; every ``*_ci`` is the half-width of the confidence interval.

    Attributes:
        class_names: the classes, in the order of every array.
        proportions: estimated area proportions p_ij (map class i, reference class j), summing to 1.
        overall_accuracy, overall_accuracy_ci: sum of p_ii.
        users_accuracy, users_accuracy_ci: per map class, p_ii / p_i. (1 - commission error); NaN for
            a class no sample was mapped as (0/0: a class of no mapped area, nothing to be right about).
        producers_accuracy, producers_accuracy_ci: per reference class, p_jj / p_.j (1 - omission
            error); NaN for a class no sample was labelled with.
        mapped_area: area of each class in the map (the input, in its unit).
        area, area_ci: error-adjusted area of each class (reference classification), same unit.
        confidence: the confidence level of the intervals.
    """

    class_names: list[str]
    proportions: np.ndarray
    overall_accuracy: float
    overall_accuracy_ci: float
    users_accuracy: np.ndarray
    users_accuracy_ci: np.ndarray
    producers_accuracy: np.ndarray
    producers_accuracy_ci: np.ndarray
    mapped_area: np.ndarray
    area: np.ndarray
    area_ci: np.ndarray
    confidence: float

    def table(self, digits: int = 3) -> str:
        """A Markdown table: per class, mapped and adjusted area, user's and producer's accuracy."""
        level = f"{100 * self.confidence:g} %"
        lines = [
            f"| class | mapped area | adjusted area ± {level} CI | user's accuracy | producer's accuracy |",
            "|---|---|---|---|---|",
        ]
        for i, name in enumerate(self.class_names):
            users = _estimate(self.users_accuracy[i], self.users_accuracy_ci[i], digits)
            producers = _estimate(self.producers_accuracy[i], self.producers_accuracy_ci[i], digits)
            area = f"{self.area[i]:,.0f} ± {self.area_ci[i]:,.0f}"
            lines.append(f"| {name} | {self.mapped_area[i]:,.0f} | {area} | {users} | {producers} |")
        lines.append(
            f"| overall accuracy | | | {self.overall_accuracy:.{digits}f} ± {self.overall_accuracy_ci:.{digits}f} | |"
        )
        return "\n".join(lines)


def _estimate(value: float, ci: float, digits: int) -> str:
    """``value ± ci``, or "undefined" for a ratio 0/0 (NaN)."""
    return "undefined" if np.isnan(value) else f"{value:.{digits}f} ± {ci:.{digits}f}"


def checked_area_inputs(
    counts: np.ndarray, mapped_area: Sequence[float], class_names: Sequence[str] | None, confidence: float
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`area_adjusted_accuracy`'s inputs as float arrays and names, or a ValueError saying what is wrong."""
    counts = np.asarray(counts, dtype=np.float64)
    area = np.asarray(mapped_area, dtype=np.float64)
    k = len(counts)
    names = [str(i) for i in range(k)] if class_names is None else list(class_names)
    if counts.ndim != 2 or counts.shape != (k, k):
        raise ValueError(f"counts must be a square (classes, classes) matrix, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative sample counts")
    if area.shape != (k,) or len(names) != k:
        raise ValueError(f"counts has {k} classes but mapped_area has shape {area.shape} and {len(names)} class names")
    if (area < 0).any() or area.sum() <= 0:
        raise ValueError(f"mapped_area must be non-negative with a positive total, got {area.tolist()}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n_map = counts.sum(axis=1)  # n_i.: samples in each stratum
    short = [names[i] for i in range(k) if area[i] > 0 and n_map[i] < 2]
    if short:
        raise ValueError(
            f"map classes {short} have a mapped area but fewer than 2 reference samples of that map class (on "
            "pixels mapped as it): the estimators need at least 2 samples per stratum, the strata being the map classes"
        )
    return counts, area, names


def area_adjusted_accuracy(
    counts: np.ndarray,
    mapped_area: Sequence[float],
    class_names: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> AreaAccuracy:
    """Accuracy and error-adjusted areas with confidence intervals (Olofsson et al. 2014).

    Args:
        counts: (K, K) sample counts n_ij, map class i (the stratum) in rows, reference class j in
            columns (:func:`sample_counts` builds it from per-sample labels).
        mapped_area: area of each class in the map (pixels, hectares: the result uses the same unit).
        class_names: names of the K classes (default "0", "1", ...).
        confidence: level of the normal-approximation confidence intervals.

    Every map class with a non-zero area needs at least two samples (the variances divide by
    n_i. - 1). Map classes of zero area may have no samples; they weigh nothing, and their user's
    accuracy is undefined (NaN), as is the producer's accuracy of a class no sample belongs to.
    """
    counts, area, names = checked_area_inputs(counts, mapped_area, class_names, confidence)
    k = len(counts)
    n_map = counts.sum(axis=1)  # n_i.: samples in each stratum
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    total = area.sum()
    weight = area / total  # W_i
    sampled = n_map > 0
    # Row-conditional proportions n_ij / n_i. (0 for unsampled, zero-area strata) and their variance term.
    conditional = np.divide(counts, n_map[:, None], out=np.zeros_like(counts), where=sampled[:, None])
    degrees = np.where(n_map > 1, n_map - 1, np.inf)  # n_i. - 1; unsampled strata contribute 0
    proportions = weight[:, None] * conditional  # p_ij, eq. 4
    users = np.where(sampled, np.diag(conditional), np.nan)  # eq. 2; 0/0 for an unsampled stratum
    reference_share = proportions.sum(axis=0)  # p_.j
    producers = np.divide(np.diag(proportions), reference_share, out=np.full(k, np.nan), where=reference_share > 0)
    overall = float(np.trace(proportions))  # eq. 1

    users_var = np.where(sampled, np.nan_to_num(users) * (1 - np.nan_to_num(users)) / degrees, np.nan)  # eq. 6
    sampled_var = np.nan_to_num(users_var)  # unsampled strata (zero area) contribute 0 below
    overall_var = float(np.sum(weight**2 * sampled_var))  # eq. 5
    # Eq. 7 with estimated population totals: N_i. = mapped area, N_.j = sum_i N_i. n_ij / n_i.
    within = conditional * (1 - conditional) / degrees[:, None]  # (n_ij/n_i.)(1 - n_ij/n_i.) / (n_i. - 1)
    reference_total = total * reference_share
    producers_var = np.full(k, np.nan)
    for j in np.flatnonzero(reference_share > 0):
        others = np.arange(k) != j
        producers_var[j] = (
            area[j] ** 2 * (1 - producers[j]) ** 2 * sampled_var[j]
            + producers[j] ** 2 * np.sum(area[others] ** 2 * within[others, j])
        ) / reference_total[j] ** 2
    area_se = total * np.sqrt(np.sum(weight[:, None] ** 2 * within, axis=0))  # eqs. 10-11

    return AreaAccuracy(
        class_names=names,
        proportions=proportions,
        overall_accuracy=overall,
        overall_accuracy_ci=z * np.sqrt(overall_var),
        users_accuracy=users,
        users_accuracy_ci=z * np.sqrt(users_var),
        producers_accuracy=producers,
        producers_accuracy_ci=z * np.sqrt(producers_var),
        mapped_area=area,
        area=total * reference_share,
        area_ci=z * area_se,
        confidence=confidence,
    )
