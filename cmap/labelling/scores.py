"""Scores of out-of-fold predictions: overall accuracy, macro F1, per-class precision, recall and F1
and the confusion matrix, per fold and seed, their mean and spread over folds, and the pooled
figure (every sample predicted once, by the model of the fold that held it out: the README's
cross-validation figure); written as Markdown, CSV and a picture."""

from pathlib import Path

import numpy as np
import pandas as pd

from cmap.outputs import write_bytes_atomically


def confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: reference class in rows, predicted class in columns."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, num_classes)


def class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall and F1 of a confusion matrix (0 where undefined, as scikit-learn)."""
    hits = np.diag(matrix).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(hits / matrix.sum(axis=0))
        recall = np.nan_to_num(hits / matrix.sum(axis=1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return {"precision": precision, "recall": recall, "f1": f1}


def summary(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict[str, float]:
    """Overall accuracy and macro F1 (over the classes present in ``labels``)."""
    matrix = confusion(labels, predictions, num_classes)
    present = matrix.sum(axis=1) > 0
    return {
        "overall_accuracy": float(np.trace(matrix) / matrix.sum()),
        "macro_f1": float(class_scores(matrix)["f1"][present].mean()),
    }


def fold_table(
    probabilities: dict[int, np.ndarray], labels: np.ndarray, folds: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """One row per (seed, fold, class or 'all'): OA and macro F1 for 'all', precision/recall/F1 per class."""
    rows = []
    for seed, seed_probabilities in probabilities.items():
        for fold in np.unique(folds[folds >= 0]):
            held = folds == fold
            predicted = seed_probabilities[held].argmax(axis=1)
            matrix = confusion(labels[held], predicted, len(class_names))
            rows.append(
                {"seed": seed, "fold": int(fold), "class": "all", **summary(labels[held], predicted, len(class_names))}
            )
            scores = class_scores(matrix)
            for k, name in enumerate(class_names):
                rows.append(
                    {
                        "seed": seed,
                        "fold": int(fold),
                        "class": name,
                        "support": int(matrix[k].sum()),
                        **{key: float(value[k]) for key, value in scores.items()},
                    }
                )
    return pd.DataFrame(rows)


def pooled_table(
    probabilities: dict[int, np.ndarray], labels: np.ndarray, folds: np.ndarray, num_classes: int
) -> pd.DataFrame:
    """One row per seed, and one for the seeds' mean probabilities (``ensemble``): the pooled out-of-fold scores."""
    held = folds >= 0
    rows = [
        {"seed": str(seed), **summary(labels[held], p[held].argmax(axis=1), num_classes)}
        for seed, p in probabilities.items()
    ]
    if len(probabilities) > 1:
        mean = np.mean(list(probabilities.values()), axis=0)
        rows.append({"seed": "ensemble", **summary(labels[held], mean[held].argmax(axis=1), num_classes)})
    return pd.DataFrame(rows)


def report_markdown(
    folds_table: pd.DataFrame, pooled: pd.DataFrame, matrix: np.ndarray, class_names: list[str], title: str
) -> str:
    """The report: pooled scores per seed, mean ± spread (std) over folds, per-class scores and the confusion matrix."""
    per_seed = pooled[pooled["seed"] != "ensemble"]
    overall = folds_table[folds_table["class"] == "all"]
    lines = [
        f"# {title}",
        "",
        f"Pooled out-of-fold overall accuracy (every sample predicted once): mean over seeds "
        f"**{per_seed['overall_accuracy'].mean():.4f} ± {per_seed['overall_accuracy'].std(ddof=0):.4f}**, "
        f"macro F1 {per_seed['macro_f1'].mean():.4f}.",
        "",
        "| seed | overall accuracy (pooled) | macro F1 (pooled) |",
        "|---|---|---|",
    ]
    lines += [f"| {row.seed} | {row.overall_accuracy:.4f} | {row.macro_f1:.4f} |" for row in pooled.itertuples()]
    lines += [
        "",
        "Per fold (mean ± std over folds and seeds): overall accuracy "
        f"{overall['overall_accuracy'].mean():.4f} ± {overall['overall_accuracy'].std(ddof=0):.4f}, macro F1 "
        f"{overall['macro_f1'].mean():.4f} ± {overall['macro_f1'].std(ddof=0):.4f}.",
        "",
        "| class | support | precision | recall | F1 (mean ± std over folds) |",
        "|---|---|---|---|---|",
    ]
    per_class = folds_table[folds_table["class"] != "all"].groupby("class", sort=False)
    for name, group in per_class:
        lines.append(
            f"| {name} | {int(group['support'].sum() / group['seed'].nunique())} | {group['precision'].mean():.3f} "
            f"± {group['precision'].std(ddof=0):.3f} | {group['recall'].mean():.3f} "
            f"± {group['recall'].std(ddof=0):.3f} "
            f"| {group['f1'].mean():.3f} ± {group['f1'].std(ddof=0):.3f} |"
        )
    lines += [
        "",
        "Confusion matrix (pooled out-of-fold, summed over seeds; reference in rows, predicted in columns):",
        "",
        "| reference \\ predicted | " + " | ".join(class_names) + " |",
        "|---" * (len(class_names) + 1) + "|",
    ]
    lines += [
        f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |"
        for name, row in zip(class_names, matrix, strict=True)
    ]
    return "\n".join(lines) + "\n"


def plot(matrix: np.ndarray, class_names: list[str], folds_table: pd.DataFrame, path: Path) -> Path:
    """The row-normalised confusion matrix and the per-class F1 over folds, as a PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1.2, 1]})
    with np.errstate(invalid="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    left.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            left.text(
                j,
                i,
                int(value),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if normalised[i, j] > 0.5 else "black",
            )
    left.set(
        xticks=range(len(class_names)),
        yticks=range(len(class_names)),
        xlabel="predicted",
        ylabel="reference",
        title="confusion (out-of-fold)",
    )
    left.set_xticklabels(class_names, rotation=60, ha="right", fontsize=7)
    left.set_yticklabels(class_names, fontsize=7)
    per_class = folds_table[folds_table["class"] != "all"]
    right.boxplot([per_class[per_class["class"] == name]["f1"] for name in class_names], orientation="horizontal")
    right.set(yticks=range(1, len(class_names) + 1), xlabel="F1 over folds and seeds", title="per-class F1")
    right.set_yticklabels(class_names, fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return write_bytes_atomically(path, buffer.getvalue())
