"""Test accuracy on the real datasets of ``../shared/data``: cmap's configs against a random forest.

For every dataset this script

1. converts the original files into stores under ``--stores`` (once; :mod:`cmap.data.convert`),
2. trains the dataset's config (``configs/``) for each seed through the ``cmap fit`` command,
   in-process (:class:`cmap.cli.CMapCLI`, ``--test_after_fit true``: the model at the end of its
   LR schedule is tested), once per cross-validation fold where the protocol is k-fold,
3. predicts the test series with each trained model (per-series predictions give the subsets
   and the seed ensemble) and checks them against the logged ``test/overall_accuracy``,
4. fits a scikit-learn random forest on the flattened series of the *same* training and test
   series (read through the same data module, so the same files, fold and classes),

then writes a Markdown report (``--output``: summary table, every run with its seed, fold, time
and run folder) and replaces the results table of the README between its marker comments.

    python benchmarks/accuracy.py            # every dataset, seeds 0 1 2 (UCR Crop: ~16 min per seed)
    python benchmarks/accuracy.py --threads 1 --seeds 0 1 2 --seeds_for mato_grosso=0,1 ucr_crop=0   # README table
    python benchmarks/accuracy.py --datasets mato_grosso --folds 0 --seeds 0 --no_readme --output /tmp/mg.md \
        --config my_variant.yaml -- --trainer.max_epochs 80          # tuning: one fold, another config, overrides

The seed is ``seed_everything`` (initialisation, batch order, dropout, augmentation); the data
split (validation hold-out, cross-validation folds) stays the data module's ``seed`` (0 in every
config), so every seed and the random forest see the same training and test series. The
validation hold-out (``val_fraction`` of the training series) is only monitored: the networks
train on the rest, the random forest on every training series.
"""

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score

from cmap.cli import CMapCLI
from cmap.data import convert
from cmap.data.datamodule import PixelSeries, SITSDataModule
from cmap.data.store import read_metadata, write_store

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
README_START, README_END = "<!-- accuracy-table:start -->", "<!-- accuracy-table:end -->"


@dataclass
class Dataset:
    """One benchmark row: a config, its evaluation protocol and the figures it is compared with."""

    title: str
    config: str
    protocol: str
    reference: str
    target: str
    #: store name -> (reader, original file relative to ../shared/data); converted before training.
    stores: dict[str, tuple[Callable[[Path], convert.Converted], str]] = field(default_factory=dict)
    #: cross-validation folds (the config's data module takes ``fold``), or None for its fixed test split.
    num_folds: int | None = None
    #: also report accuracy on test series whose group (polygon) has no training series.
    unseen_groups: bool = False


DATASETS = {
    "ucr_crop": Dataset(
        title="UCR Crop (24 classes, NDVI)",
        config="configs/ucr_crop_transformer.yaml",
        protocol="7,200 train / 16,800 test",
        reference="InceptionTime 0.793, MultiRocket 0.774, HIVE-COTE 2 0.764 (Tan et al. 2022)",
        target=">= 0.81",
    ),
    "mato_grosso": Dataset(
        title="Mato Grosso MOD13Q1 (9 classes, 6 bands)",
        config="configs/mato_grosso_exchanger.yaml",
        protocol="1,892 samples, 5-fold CV (stratified)",
        reference="SVM 0.94 (Picoli et al. 2018)",
        target=">= 0.97",
        stores={"mato_grosso": (convert.read_mato_grosso, "sits_matogrosso_mod13q1/br_mt_1_8K_9classes_6bands.rda")},
        num_folds=5,
    ),
    "victoria": Dataset(
        title="Sentinel-2 Victoria (8 classes, 10 bands)",
        config="configs/victoria_transformer.yaml",
        protocol="400 train / 400 test (232 test pixels from unseen polygons)",
        reference="none for this subsample (data README: RF 0.9425, 0.922 unseen)",
        target=">= 0.96 (>= 0.95 unseen)",
        stores={
            "victoria_train": (convert.read_victoria, "igarss2019_s2_victoria/train_dataset.csv"),
            "victoria_test": (convert.read_victoria, "igarss2019_s2_victoria/test_dataset.csv"),
        },
        unseen_groups=True,
    ),
    "tempcnn": Dataset(
        title="TempCNN example, FORMOSAT-2 (13 classes, 3 bands)",
        config="configs/tempcnn_transformer.yaml",
        protocol="260 train / 260 test (disjoint polygons)",
        reference="none for this subsample (data README: RF 0.712)",
        target=">= 0.75",
        stores={
            "tempcnn_train": (convert.read_tempcnn, "tempcnn_formosat2_example/train_dataset.csv"),
            "tempcnn_test": (convert.read_tempcnn, "tempcnn_formosat2_example/test_dataset.csv"),
        },
    ),
}


def convert_stores(dataset: Dataset, stores: Path, shared_data: Path) -> None:
    """Write the dataset's stores under ``stores`` unless a complete one is there already."""
    for name, (reader, source) in dataset.stores.items():
        folder = stores / name
        if (folder / "metadata.json").is_file():
            read_metadata(folder)  # a store of another format version fails here, by name
            continue
        converted = reader(shared_data / source)
        write_store(folder, converted.series, converted.band_names, converted.class_names, converted.reference_date)
        print(f"converted {shared_data / source} -> {folder}", flush=True)


def cli_arguments(dataset: Dataset, stores: Path, fold: int | None) -> list[str]:
    """Command-line overrides of the config: the store cache and the fold."""
    arguments = ["--config", str(REPO / dataset.config)]
    for name in dataset.stores:
        key = "test_path" if name.endswith("_test") else "path"
        arguments += [f"--data.init_args.{key}", str(stores / name)]
    if fold is not None:
        arguments += ["--data.init_args.fold", str(fold), "--data.init_args.num_folds", str(dataset.num_folds)]
    return arguments


def data_module(dataset: Dataset, stores: Path, fold: int | None) -> SITSDataModule:
    """The config's data module, as ``cmap`` builds it (nothing is trained)."""
    cli = CMapCLI(args=cli_arguments(dataset, stores, fold), run=False)
    return cli.datamodule


def flat(series: PixelSeries, mean: np.ndarray) -> np.ndarray:
    """(N, T*C) features for the random forest; missing dates take the band's training mean."""
    values = np.array(series.values[:], dtype=np.float32)
    values = np.where(np.isfinite(values), values, mean)
    return values.reshape(len(values), -1)


def train_test(data: SITSDataModule) -> tuple[PixelSeries, PixelSeries]:
    """Every training series (validation included) and the test series, classes mapped."""
    return data._prepare(data.load_train()), data._prepare(data.load_test())


@dataclass
class Run:
    """One training: its test predictions and what it cost."""

    seed: int
    fold: int | None
    seconds: float
    epochs: int
    run_dir: str
    probabilities: np.ndarray
    logged_accuracy: float


def train(dataset: Dataset, stores: Path, fold: int | None, seed: int, runs: Path, extra: list[str]) -> Run:
    """``cmap fit --config ... --seed_everything SEED --test_after_fit true``, then predict the test series."""
    root = runs / (f"seed{seed}" if fold is None else f"seed{seed}_fold{fold}")
    arguments = ["fit", *cli_arguments(dataset, stores, fold), "--seed_everything", str(seed)]
    arguments += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    arguments += ["--trainer.enable_model_summary", "false", "--test_after_fit", "true", *extra]
    start = time.perf_counter()
    cli = CMapCLI(args=arguments)
    seconds = time.perf_counter() - start
    logged = float(cli.trainer.callback_metrics["test/overall_accuracy"])
    outputs = cli.trainer.predict(cli.model, dataloaders=cli.datamodule.test_dataloader())
    probabilities = torch.cat([output["probabilities"] for output in outputs]).numpy()
    return Run(seed, fold, seconds, cli.trainer.current_epoch, str(cli.trainer.log_dir), probabilities, logged)


def random_forest(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
    forest = RandomForestClassifier(n_estimators=300, n_jobs=2, random_state=seed)
    return forest.fit(x_train, y_train).predict(x_test)


def scores(labels: np.ndarray, predictions: np.ndarray) -> tuple[float, float]:
    return accuracy_score(labels, predictions), f1_score(labels, predictions, average="macro")


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def evaluate(
    name: str, dataset: Dataset, seeds: list[int], stores: Path, runs: Path, extra: list[str], folds: list[int] | None
) -> dict:
    """Train every seed (and fold), score the predictions, fit the random forest; a result row."""
    if dataset.num_folds and folds:
        dataset = replace(dataset, protocol=f"{dataset.protocol}, folds {', '.join(map(str, folds))} only")
    folds = (folds or list(range(dataset.num_folds))) if dataset.num_folds else [None]
    labels, unseen, forest = [], [], []
    by_seed: dict[int, list[Run]] = {seed: [] for seed in seeds}
    forest_seconds = 0.0
    for fold in folds:
        data = data_module(dataset, stores, fold)
        train_series, test_series = train_test(data)
        labels.append(test_series.labels)
        if dataset.unseen_groups:
            unseen.append(~np.isin(test_series.groups, train_series.groups))
        start = time.perf_counter()
        mean = np.nanmean(np.array(train_series.values[:]), axis=(0, 1))
        forest.append(random_forest(flat(train_series, mean), train_series.labels, flat(test_series, mean), 0))
        forest_seconds += time.perf_counter() - start
        for seed in seeds:
            run = train(dataset, stores, fold, seed, runs / name, extra)
            predicted = run.probabilities.argmax(axis=1)
            accuracy = accuracy_score(test_series.labels, predicted)
            if abs(accuracy - run.logged_accuracy) > 1e-4:
                raise RuntimeError(
                    f"{run.run_dir}: predicted test accuracy {accuracy:.5f} differs from the logged "
                    f"test/overall_accuracy {run.logged_accuracy:.5f}"
                )
            by_seed[seed].append(run)
            print(
                f"{name} fold {fold} seed {seed}: OA {accuracy:.4f} in {run.seconds:.0f} s ({run.run_dir})", flush=True
            )
    # Cross-validation: each series is predicted once, by the model of the fold that held it out.
    labels = np.concatenate(labels)
    unseen_mask = np.concatenate(unseen) if unseen else None
    per_seed = {seed: np.concatenate([run.probabilities for run in runs_]) for seed, runs_ in by_seed.items()}
    forest = np.concatenate(forest)

    def subset_scores(mask: np.ndarray | None) -> dict:
        keep = slice(None) if mask is None else mask
        model = [scores(labels[keep], p[keep].argmax(axis=1)) for p in per_seed.values()]
        ensemble = np.mean(list(per_seed.values()), axis=0)
        return {
            "count": int(labels[keep].shape[0]),
            "accuracy": [m[0] for m in model],
            "macro_f1": [m[1] for m in model],
            "ensemble": scores(labels[keep], ensemble[keep].argmax(axis=1))[0],
            "forest": scores(labels[keep], forest[keep]),
        }

    return {
        "name": name,
        "dataset": dataset,
        "seeds": seeds,
        "all": subset_scores(None),
        "unseen": subset_scores(unseen_mask) if unseen_mask is not None else None,
        "train_seconds": [sum(run.seconds for run in runs_) for runs_ in by_seed.values()],
        "forest_seconds": forest_seconds,
        "runs": [run for runs_ in by_seed.values() for run in runs_],
    }


def summary_table(rows: list[dict]) -> str:
    lines = [
        "| data, protocol | config | seeds | test OA (mean ± std) | macro F1 | seed ensemble OA | random forest OA "
        "| training time per seed | published / reference | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        dataset = row["dataset"]
        for subset, label in (("all", ""), ("unseen", ", unseen polygons")):
            result = row[subset]
            if result is None:
                continue
            seeds = ", ".join(str(seed) for seed in row["seeds"])
            protocol = dataset.protocol if subset == "all" else f"{result['count']} test series"
            lines.append(
                f"| {dataset.title}{label}: {protocol} "
                f"| `{dataset.config}` | {seeds} | **{mean_std(result['accuracy'])}** | {mean_std(result['macro_f1'])} "
                f"| {result['ensemble']:.4f} | {result['forest'][0]:.4f} | {minutes(np.mean(row['train_seconds']))} "
                f"| {dataset.reference} | {dataset.target} |"
            )
    return "\n".join(lines)


def relative(path: str) -> str:
    """``path`` relative to the repository when inside it (the report does not depend on the clone's place)."""
    return str(Path(path).relative_to(REPO)) if Path(path).is_relative_to(REPO) else path


def runs_table(rows: list[dict]) -> str:
    lines = ["| data | seed | fold | test OA | epochs | time | run folder |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        for run in row["runs"]:
            fold = "" if run.fold is None else str(run.fold)
            lines.append(
                f"| {row['name']} | {run.seed} | {fold} | {run.logged_accuracy:.4f} | {run.epochs} "
                f"| {run.seconds:.0f} s | `{relative(run.run_dir)}` |"
            )
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cmap", "configs", "benchmarks/accuracy.py"],
                               cwd=REPO, capture_output=True, text=True)  # fmt: skip
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def report(rows: list[dict], command: str) -> str:
    return "\n\n".join(
        [
            f"# Accuracy on real data ({date.today().isoformat()})",
            f"Made by `{command}` at commit {commit()} on {machine()}. Test OA: overall accuracy of the model "
            "at the end of training (`--test_after_fit true`), mean ± standard deviation over the seeds; "
            "k-fold rows pool the held-out predictions of every fold. Macro F1: same runs. Seed ensemble: "
            "the seeds' class probabilities averaged. Random forest: scikit-learn, 300 trees, seed 0, on the "
            "flattened band values of the same training (validation included) and test series. Training time: "
            "wall time of `cmap fit` with the test, summed over folds.",
            summary_table(rows),
            "## Every run",
            runs_table(rows),
        ]
    )


def update_readme(readme: Path, table: str, command: str) -> None:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme}: markers {README_START} and {README_END} not found")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    block = f"{README_START}\n{table}\n\nMade by `{command}`; details in `benchmarks/results/accuracy.md`.\n"
    readme.write_text(head + block + README_END + tail)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--seeds_for",
        nargs="+",
        default=[],
        metavar="DATASET=SEEDS",
        help="other seeds for some datasets, e.g. ucr_crop=0 mato_grosso=0,1",
    )
    parser.add_argument(
        "--folds", nargs="+", type=int, default=None, help="only these folds of k-fold datasets (tuning)"
    )
    parser.add_argument("--config", default=None, help="another config for the one dataset of --datasets (tuning)")
    parser.add_argument("--shared_data", type=Path, default=SHARED_DATA)
    parser.add_argument("--stores", type=Path, default=REPO / "runs" / "stores", help="converted stores (cache)")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "accuracy", help="training runs")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "accuracy.md")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--no_readme", action="store_true", help="do not rewrite the README's table")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 on a CPU shared with other jobs)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("cmap_args", nargs="*", help="after --: more `cmap fit` options for every run")
    args = parser.parse_args(argv)
    command = "python benchmarks/accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config and len(args.datasets) != 1:
        parser.error("--config needs exactly one dataset in --datasets")
    seeds = {name: args.seeds for name in args.datasets}
    for item in args.seeds_for:
        name, _, values = item.partition("=")
        if name not in DATASETS or not values:
            parser.error(f"--seeds_for {item!r}: expected DATASET=SEED[,SEED...] with DATASET one of {list(DATASETS)}")
        seeds[name] = [int(value) for value in values.split(",")]
    rows = []
    for name in args.datasets:
        dataset = DATASETS[name] if args.config is None else replace(DATASETS[name], config=args.config)
        convert_stores(dataset, args.stores, args.shared_data)
        rows.append(evaluate(name, dataset, seeds[name], args.stores, args.runs, args.cmap_args, args.folds))
    text = report(rows, command.strip())
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    if args.json:
        figures = [{key: value for key, value in row.items() if key not in ("dataset", "runs")} for row in rows]
        args.json.write_text(json.dumps(figures, indent=1))
    if not args.no_readme:
        update_readme(args.readme, summary_table(rows), command.strip())


if __name__ == "__main__":
    main()
