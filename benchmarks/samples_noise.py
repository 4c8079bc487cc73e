"""Label noise, audited and retrained (``benchmarks/samples.py``'s first part).

Flip 10 % and 20 % of the training labels, ``uniform`` (to any other class) or ``confusable`` (to
the class the clean out-of-fold classifier confuses it with most, e.g. Soy_Corn <-> Soy_Millet), 3
draws; flag the doubtful labels with each method on the same noisy draw:

- ``confident learning``: the classifier's 5-fold out-of-fold probabilities, cleanlab's
  ``find_label_issues`` (``filter_by`` of cmap audit, or another given);
- ``SOM``: a self-organising map of the band values, as R sits' ``sits_som_clean_samples``
  (:mod:`cmap.labelling.som`);

then flag precision and recall against the flipped samples, and the test accuracy of the same
classifier trained on the clean labels, the noisy ones, the noisy ones without the flagged samples
(``--action remove``) and with them relabelled to the suggested label (``--action relabel``).
"""

import numpy as np
from samples_data import Prepared, accuracy, out_of_fold

from cmap.labelling.audit import find_issues
from cmap.labelling.som import som_issues


def flip(labels: np.ndarray, rate: float, kind: str, partner: np.ndarray, num_classes: int, rng) -> np.ndarray:
    """Labels with ``rate`` of them changed: to a random other class, or to the class's confusable partner."""
    noisy = labels.copy()
    chosen = rng.choice(len(labels), round(rate * len(labels)), replace=False)
    if kind == "uniform":
        noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, len(chosen))) % num_classes
    else:
        noisy[chosen] = partner[labels[chosen]]
    return noisy


def flags(data: Prepared, noisy: np.ndarray, method: str, draw: int) -> tuple[np.ndarray, np.ndarray]:
    """Flagged indices and suggested labels (N,) of one method."""
    if method == "SOM":
        flagged, shares, _ = som_issues(data.values, noisy, data.num_classes, draw)
        return flagged, shares.argmax(axis=1)
    filter_by = method.removeprefix("confident learning, ")
    probabilities = out_of_fold(data, noisy, draw)
    return find_issues(noisy, probabilities, filter_by)[0], probabilities.argmax(axis=1)


def scores(data: Prepared, clean: float, noisy: np.ndarray, flipped, flagged, suggested) -> dict:
    everything = np.arange(len(noisy))
    relabelled = noisy.copy()
    relabelled[flagged] = suggested[flagged]
    hit = flipped[flagged].sum()
    return {
        "flagged": len(flagged),
        "precision": hit / max(len(flagged), 1),
        "recall": hit / flipped.sum(),
        "clean": clean,
        "noisy": accuracy(data, everything, noisy),
        "cleaned": accuracy(data, np.setdiff1d(everything, flagged), noisy),
        "relabelled": accuracy(data, everything, relabelled),
    }


def noise_experiment(data: Prepared, rates, draws: int, methods) -> list[dict]:
    k, y = data.num_classes, data.labels
    everything = np.arange(len(y))
    clean = accuracy(data, everything, y)  # the classifier is deterministic: one clean score for every draw
    confusion = np.zeros((k, k))
    np.add.at(confusion, (y, out_of_fold(data, y, 0).argmax(axis=1)), 1)
    np.fill_diagonal(confusion, -1)
    partner = confusion.argmax(axis=1)  # the class each class is most often mistaken for
    rows = []
    for rate in rates:
        for kind in ("uniform", "confusable"):
            for draw in range(draws):
                noisy = flip(y, rate, kind, partner, k, np.random.default_rng(1000 + draw))
                for method in methods:
                    flagged, suggested = flags(data, noisy, method, draw)
                    row = {"dataset": data.name, "rate": rate, "kind": kind, "method": method, "draw": draw}
                    row |= {"flipped": int((noisy != y).sum())}
                    row |= scores(data, clean, noisy, noisy != y, flagged, suggested)
                    rows.append(row)
                    print(
                        f"{data.name} {rate:.0%} {kind} {method} draw {draw}: {row['flagged']} flags, precision "
                        f"{row['precision']:.3f} recall {row['recall']:.3f}, OA clean {clean:.4f} noisy "
                        f"{row['noisy']:.4f} removed {row['cleaned']:.4f} relabelled {row['relabelled']:.4f}",
                        flush=True,
                    )
    return rows


def noise_report(rows: list[dict]) -> list[str]:
    import pandas as pd

    keys = ["dataset", "rate", "kind", "method"]
    table = pd.DataFrame(rows).groupby(keys, sort=False).mean(numeric_only=True).reset_index()
    lines = [
        "## Label noise: audit and retrain",
        "",
        "Mean of the draws. OA: the classifier's test accuracy trained on the clean labels, the noisy ones, the "
        "noisy ones without the flagged samples (`cmap audit --action remove`) and with the flagged samples "
        "relabelled to the suggested label (`--action relabel`); recovered: (cleaned - noisy) / (clean - noisy), "
        "the share of the accuracy lost to the noise that the audit wins back (1 = all of it).",
        "",
        "| dataset | flipped | kind | method | flags | flag precision | flag recall | OA clean | OA noisy "
        "| OA removed | OA relabelled | recovered (removed / relabelled) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lost = r.clean - r.noisy
        recovered = (
            f"{(r.cleaned - r.noisy) / lost:.2f} / {(r.relabelled - r.noisy) / lost:.2f}"
            if lost > 1e-9
            else "nothing lost"
        )
        lines.append(
            f"| {r.dataset} | {r.rate:.0%} ({r.flipped:.0f}) | {r.kind} | {r.method} | {r.flagged:.0f} | "
            f"{r.precision:.3f} | {r.recall:.3f} | {r.clean:.4f} | {r.noisy:.4f} | {r.cleaned:.4f} | "
            f"{r.relabelled:.4f} | {recovered} |"
        )
    return lines + [""]
