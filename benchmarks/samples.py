"""What ``cmap audit`` and ``cmap suggest``'s selection are worth, measured on the shared data with a
cheap classifier (a random forest of 100 trees on the series' band values, one thread: the
loops fit it hundreds of times; ``cmap.labelling.peer``).

1. Label noise (Mato Grosso: fold 0 of the 5 stratified folds as test set, the rest as training
   set; Victoria: its training and test files). Flip 10 % and 20 % of the training labels,
   ``uniform`` (to any other class) or ``confusable`` (to the class the clean out-of-fold forest
   confuses it with most, e.g. Soy_Corn <-> Soy_Millet), 3 draws; audit the noisy training set as
   ``cmap audit --model peer`` does (5-fold out-of-fold forest, cleanlab's ``find_label_issues``);
   flag precision and recall against the flipped samples; test accuracy of the forest trained on
   the clean, the noisy and the audited (flagged removed) labels; the share of the lost accuracy
   recovered.
2. Active learning (UCR Crop: its training file as the pool, its test file; Mato Grosso: fold 0 as
   test, the rest as the pool). From 10 labels per class, 5 rounds each adding 5 x classes labels:
   ``random`` (uniform from the pool) against ``uncertainty + diversity`` (margin of the forest's
   probabilities, a minimum distance in the standardised band values chosen from the data,
   class-balanced by predicted class: :func:`cmap.labelling.selection.select`); mean of 3 draws.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/samples.py [--draws 3] [--output benchmarks/results/samples.md]``
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cmap.data import convert  # noqa: E402
from cmap.data.series import PixelSeries  # noqa: E402
from cmap.data.splits import kfold_split, per_class_subset  # noqa: E402
from cmap.data.store import relabel  # noqa: E402
from cmap.labelling.audit import find_issues  # noqa: E402
from cmap.labelling.peer import features, forest  # noqa: E402
from cmap.labelling.selection import auto_distance, select, uncertainty  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
TREES = 100


def mato_grosso() -> tuple[PixelSeries, PixelSeries, list[str]]:
    data = convert.read_mato_grosso(SHARED / "sits_matogrosso_mod13q1/br_mt_1_8K_9classes_6bands.rda")
    rest, held = kfold_split(data.series, 5, 0, 0)
    return data.series.subset(rest), data.series.subset(held), data.class_names


def victoria() -> tuple[PixelSeries, PixelSeries, list[str]]:
    train = convert.read_victoria(SHARED / "igarss2019_s2_victoria/train_dataset.csv")
    test = convert.read_victoria(SHARED / "igarss2019_s2_victoria/test_dataset.csv")
    return train.series, relabel(test.series, test.class_names, train.class_names), train.class_names


def ucr_crop() -> tuple[PixelSeries, PixelSeries, list[str]]:
    train = convert.read_ucr(SHARED / "ucr_crop_formosat2/Crop_TRAIN.tsv")
    test = convert.read_ucr(SHARED / "ucr_crop_formosat2/Crop_TEST.tsv")
    return train.series, test.series, train.class_names


def accuracy(x_train, y_train, x_test, y_test, seed: int) -> float:
    return float((forest(seed, TREES).fit(x_train, y_train).predict(x_test) == y_test).mean())


def out_of_fold(x: np.ndarray, labels: np.ndarray, groups, num_classes: int, seed: int) -> np.ndarray:
    """5-fold out-of-fold forest probabilities (N, K) of ``labels`` (the folds of cmap audit's peer)."""
    series = PixelSeries(np.zeros((len(labels), 1, 1), np.float32), np.zeros((len(labels), 1)), labels, "x", groups)
    probabilities = np.zeros((len(labels), num_classes))
    for fold in range(5):
        rest, held = kfold_split(series, 5, fold, seed)
        model = forest(seed, TREES).fit(x[rest], labels[rest])
        probabilities[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return probabilities


def flip(labels: np.ndarray, rate: float, kind: str, partner: np.ndarray, num_classes: int, rng) -> np.ndarray:
    """Labels with ``rate`` of them changed: to a random other class, or to the class's confusable partner."""
    noisy = labels.copy()
    chosen = rng.choice(len(labels), round(rate * len(labels)), replace=False)
    if kind == "uniform":
        noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, len(chosen))) % num_classes
    else:
        noisy[chosen] = partner[labels[chosen]]
    return noisy


def noise_experiment(name: str, loader, rates, draws: int) -> list[dict]:
    train, test, class_names = loader()
    k = len(class_names)
    x, x_test = features(train), features(test, np.nanmean(np.array(train.values[:]), axis=(0, 1)))
    y, y_test = train.labels, test.labels
    clean = {draw: accuracy(x, y, x_test, y_test, draw) for draw in range(draws)}  # the same forest seed as each draw's
    confusion = np.zeros((k, k))
    np.add.at(confusion, (y, out_of_fold(x, y, train.groups, k, 0).argmax(axis=1)), 1)
    np.fill_diagonal(confusion, -1)
    partner = confusion.argmax(axis=1)  # the class each class is most often mistaken for
    rows = []
    for rate in rates:
        for kind in ("uniform", "confusable"):
            for draw in range(draws):
                rng = np.random.default_rng(1000 + draw)
                noisy = flip(y, rate, kind, partner, k, rng)
                flipped = noisy != y
                probabilities = out_of_fold(x, noisy, train.groups, k, draw)
                flagged, _ = find_issues(noisy, probabilities)
                relabelled = noisy.copy()
                relabelled[flagged] = probabilities[flagged].argmax(axis=1)  # cmap audit --action relabel
                hit = flipped[flagged].sum()
                keep = np.setdiff1d(np.arange(len(y)), flagged)
                row = {
                    "dataset": name,
                    "rate": rate,
                    "kind": kind,
                    "draw": draw,
                    "flipped": int(flipped.sum()),
                    "flagged": len(flagged),
                    "precision": hit / max(len(flagged), 1),
                    "recall": hit / flipped.sum(),
                    "clean": clean[draw],
                    "noisy": accuracy(x, noisy, x_test, y_test, draw),
                    "cleaned": accuracy(x[keep], noisy[keep], x_test, y_test, draw),
                    "relabelled": accuracy(x, relabelled, x_test, y_test, draw),
                }
                rows.append(row)
                print(
                    f"{name} {rate:.0%} {kind} draw {draw}: precision {row['precision']:.3f} recall "
                    f"{row['recall']:.3f}, OA clean {clean[draw]:.4f} noisy {row['noisy']:.4f} removed "
                    f"{row['cleaned']:.4f} relabelled {row['relabelled']:.4f}",
                    flush=True,
                )
    return rows


def active_learning(name: str, loader, draws: int, rounds: int = 5, start: int = 10, step: int = 5) -> dict:
    """OA per round (draws x rounds+1) of each strategy."""
    pool, test, class_names = loader()
    k = len(class_names)
    band_mean = np.nanmean(np.array(pool.values[:]), axis=(0, 1))
    x, x_test = features(pool, band_mean), features(test, band_mean)
    scaled = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)  # distances in standardised band values
    curves = {"random": [], "uncertainty + diversity": []}
    for draw in range(draws):
        first = per_class_subset(pool.labels, start, draw)
        for strategy, curve in curves.items():
            rng, labelled, scores = np.random.default_rng(draw), first.copy(), []
            for round_ in range(rounds + 1):
                model = forest(draw, TREES).fit(x[labelled], pool.labels[labelled])
                scores.append(float((model.predict(x_test) == test.labels).mean()))
                if round_ == rounds:
                    break
                candidates = np.setdiff1d(np.arange(len(x)), labelled)
                if strategy == "random":
                    new = rng.choice(candidates, step * k, replace=False)
                else:
                    p = np.zeros((len(candidates), k))
                    p[:, model.classes_] = model.predict_proba(x[candidates])
                    u = uncertainty(p, "margin")
                    distance = auto_distance(scaled[candidates], u, step * k)
                    new = candidates[select(u, step * k, scaled[candidates], distance, p.argmax(axis=1), k)]
                labelled = np.concatenate([labelled, new])
            curve.append(scores)
            print(f"{name} {strategy} draw {draw}: OA per round {' '.join(f'{s:.4f}' for s in scores)}", flush=True)
    return {
        "name": name,
        "classes": k,
        "start": start,
        "step": step,
        "curves": {s: np.array(c) for s, c in curves.items()},
    }


def noise_report(rows: list[dict]) -> list[str]:
    import pandas as pd

    table = pd.DataFrame(rows).groupby(["dataset", "rate", "kind"], sort=False).mean(numeric_only=True).reset_index()
    lines = [
        "## Label noise: audit (5-fold forest + cleanlab) and retrain",
        "",
        "Mean of the draws. OA: the forest's test accuracy (its seed the draw's) trained on the clean labels, the "
        "noisy ones, the noisy ones without the flagged samples (`cmap audit --action remove`) and with the flagged "
        "samples relabelled to the suggested label (`--action relabel`); recovered: (cleaned - noisy) / "
        "(clean - noisy), the share of the accuracy lost to the noise that the audit wins back.",
        "",
        "| dataset | flipped | kind | flags | flag precision | flag recall | OA clean | OA noisy | OA removed "
        "| OA relabelled | recovered (removed / relabelled) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lost = r.clean - r.noisy
        recovered = (
            f"{(r.cleaned - r.noisy) / lost:.2f} / {(r.relabelled - r.noisy) / lost:.2f}"
            if lost > 1e-9
            else "nothing lost"
        )
        lines.append(
            f"| {r.dataset} | {r.rate:.0%} ({r.flipped:.0f}) | {r.kind} | {r.flagged:.0f} | {r.precision:.3f} | "
            f"{r.recall:.3f} | {r.clean:.4f} | {r.noisy:.4f} | {r.cleaned:.4f} | {r.relabelled:.4f} | {recovered} |"
        )
    return lines + [""]


def learning_report(results: list[dict], picture: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "## Active learning: uncertainty + diversity against random",
        "",
        "Test OA of the forest after each round (mean of the draws; labels = labelled series).",
        "",
    ]
    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4))
    for axis, result in zip(np.atleast_1d(axes), results, strict=True):
        labels = [result["start"] * result["classes"] + i * result["step"] * result["classes"] for i in range(6)]
        lines += [
            f"**{result['name']}** ({result['classes']} classes)",
            "",
            "| strategy | " + " | ".join(f"{n} labels" for n in labels) + " |",
            "|---" * 7 + "|",
        ]
        for strategy, curve in result["curves"].items():
            mean = curve.mean(axis=0)
            lines.append(f"| {strategy} | " + " | ".join(f"{v:.4f}" for v in mean) + " |")
            axis.plot(labels, mean, marker="o", label=strategy)
        gain = (result["curves"]["uncertainty + diversity"][:, -1] - result["curves"]["random"][:, -1]) * 100
        lines += [
            "",
            f"Final gain: {gain.mean():+.2f} OA points (per draw: {', '.join(f'{g:+.2f}' for g in gain)}).",
            "",
        ]
        axis.set(title=result["name"], xlabel="labelled series", ylabel="test OA")
        axis.legend()
    figure.tight_layout()
    figure.savefig(picture, dpi=100)
    return lines + [f"![active learning curves]({picture.name})", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--parts", nargs="+", default=["noise", "learning"], choices=["noise", "learning"])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/samples.md")
    options = parser.parse_args()
    started = time.perf_counter()
    lines = [
        "# Samples you can trust: audit and active learning, measured",
        "",
        f"Classifier: random forest, {TREES} trees, one thread (scikit-learn); {options.draws} draws. "
        "Command: `OMP_NUM_THREADS=1 python benchmarks/samples.py`.",
        "",
    ]
    if "noise" in options.parts:
        rows = []
        for name, loader in (("Mato Grosso", mato_grosso), ("Victoria", victoria)):
            rows += noise_experiment(name, loader, (0.1, 0.2), options.draws)
        lines += noise_report(rows)
    if "learning" in options.parts:
        results = [
            active_learning(name, loader, options.draws)
            for name, loader in (("UCR Crop", ucr_crop), ("Mato Grosso", mato_grosso))
        ]
        lines += learning_report(results, options.output.with_name("samples_active_learning.png"))
    lines.append(f"Total {time.perf_counter() - started:.0f} s on a 2-core CPU shared with other jobs.")
    options.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
