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

and saves the dataset's result, with its command, commit, date and machine, as
``<runs>/<dataset>/result.json``. The Markdown report (``--output``: summary table, every run with
its seed, fold, time and run folder) and the README's table (between its marker comments) are then
written from the latest result of *every* dataset, so datasets can be (re)run separately.
``--checkpoints DATASET=CKPT`` scores an existing run's checkpoint of the dataset's config instead of
training (recorded as such, with the run's own seed and training time).

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
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path

import numpy as np
import torch
import yaml
from common import REPO, SHARED_DATA, machine
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from cmap.cli import CMapCLI
from cmap.data import convert
from cmap.data.datamodule import PixelSeries, SITSDataModule
from cmap.data.store import read_metadata

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
        converted.write(folder)
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
    #: "trained" here, or "checkpoint" for a run made earlier and only tested here.
    source: str = "trained"

    def record(self) -> dict:
        """What the report keeps (no predictions)."""
        return {
            "seed": self.seed, "fold": self.fold, "seconds": self.seconds, "epochs": self.epochs,
            "run_dir": relative(self.run_dir), "test_accuracy": self.logged_accuracy, "source": self.source,
        }  # fmt: skip


def test_probabilities(cli: CMapCLI, run_dir: Path) -> np.ndarray:
    """Class probabilities (N, K) of the test series by the CLI's model, also saved in ``run_dir``.

    Saved as ``test_probabilities.npy`` (float16: enough to average) for ensembles of runs made by
    separate invocations.
    """
    outputs = cli.trainer.predict(cli.model, dataloaders=cli.datamodule.test_dataloader())
    probabilities = torch.cat([output["probabilities"] for output in outputs]).float().numpy()
    np.save(run_dir / "test_probabilities.npy", probabilities.astype(np.float16))
    return probabilities


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
    probabilities = test_probabilities(cli, Path(cli.trainer.log_dir))
    return Run(seed, fold, seconds, cli.trainer.current_epoch, str(cli.trainer.log_dir), probabilities, logged)


def test_checkpoint(dataset: Dataset, stores: Path, checkpoint: Path, runs: Path) -> Run:
    """``cmap test --config ... --ckpt_path CHECKPOINT``: a run of the dataset's config made earlier.

    Its seed is read from the run's ``config.yaml``, its training time from the first and last
    TensorBoard events of the run folder (the checkpoint's ``checkpoints/`` parent).
    """
    run_dir = checkpoint.resolve().parent.parent
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: not found; {checkpoint} must lie in <run>/checkpoints/ of a cmap run")
    seed = int(yaml.safe_load(config.read_text())["seed_everything"])
    arguments = ["test", *cli_arguments(dataset, stores, None), "--ckpt_path", str(checkpoint)]
    arguments += [
        "--trainer.default_root_dir",
        str(runs / "checkpoint_tests"),
        "--trainer.enable_progress_bar",
        "false",
    ]
    cli = CMapCLI(args=arguments)
    logged = float(cli.trainer.callback_metrics["test/overall_accuracy"])
    probabilities = test_probabilities(cli, run_dir)
    epochs = int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]) + 1
    times = [
        event.wall_time
        for events in sorted(run_dir.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(events)).Load()
    ]
    seconds = max(times) - min(times) if times else float("nan")
    return Run(seed, None, seconds, epochs, str(run_dir), probabilities, logged, source="checkpoint")


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
    name: str,
    dataset: Dataset,
    seeds: list[int],
    stores: Path,
    runs: Path,
    extra: list[str],
    folds: list[int] | None = None,
    checkpoint: Path | None = None,
) -> dict:
    """Train every seed (and fold), or test ``checkpoint``; score the predictions, fit the random forest.

    Returns the dataset's result (plain data, saved as JSON): scores over all test series and,
    where the dataset has them, over the series of unseen groups.
    """
    if checkpoint is not None and dataset.num_folds:
        raise ValueError(f"--checkpoints {name}=...: only for datasets with a fixed test split, not k-fold")
    if dataset.num_folds and folds:
        dataset = replace(dataset, protocol=f"{dataset.protocol}, folds {', '.join(map(str, folds))} only")
    folds = (folds or list(range(dataset.num_folds))) if dataset.num_folds else [None]
    labels, unseen, forest, runs_done = [], [], [], []
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
        if checkpoint is not None:
            fold_runs = [test_checkpoint(dataset, stores, checkpoint, runs / name)]
        else:
            fold_runs = [train(dataset, stores, fold, seed, runs / name, extra) for seed in seeds]
        for run in fold_runs:
            accuracy = accuracy_score(test_series.labels, run.probabilities.argmax(axis=1))
            if abs(accuracy - run.logged_accuracy) > 1e-4:
                raise RuntimeError(
                    f"{run.run_dir}: predicted test accuracy {accuracy:.5f} differs from the logged "
                    f"test/overall_accuracy {run.logged_accuracy:.5f}"
                )
            print(
                f"{name} fold {fold} seed {run.seed}: OA {accuracy:.4f} in {run.seconds:.0f} s ({run.run_dir})",
                flush=True,
            )
        runs_done += fold_runs
    # Cross-validation: each series is predicted once, by the model of the fold that held it out.
    labels, forest = np.concatenate(labels), np.concatenate(forest)
    seeds = sorted({run.seed for run in runs_done})
    per_seed = {seed: np.concatenate([run.probabilities for run in runs_done if run.seed == seed]) for seed in seeds}

    def subset_scores(keep: np.ndarray) -> dict:
        model = [scores(labels[keep], p[keep].argmax(axis=1)) for p in per_seed.values()]
        ensemble = np.mean(list(per_seed.values()), axis=0)
        return {
            "count": int(keep.sum()),
            "accuracy": [m[0] for m in model],
            "macro_f1": [m[1] for m in model],
            "ensemble_accuracy": scores(labels[keep], ensemble[keep].argmax(axis=1))[0],
            "forest_accuracy": scores(labels[keep], forest[keep])[0],
            "forest_macro_f1": scores(labels[keep], forest[keep])[1],
        }

    subsets = {"all": subset_scores(np.ones(len(labels), dtype=bool))}
    if unseen:
        subsets["unseen"] = subset_scores(np.concatenate(unseen))
    return {
        "name": name,
        "dataset": asdict(replace(dataset, stores={})),
        "seeds": seeds,
        "subsets": subsets,
        "train_seconds": [sum(run.seconds for run in runs_done if run.seed == seed) for seed in seeds],
        "forest_seconds": forest_seconds,
        "runs": [run.record() for run in runs_done],
    }


def summary_table(results: list[dict]) -> str:
    lines = [
        "| data, protocol | config | seeds | test OA (mean ± std) | macro F1 | seed ensemble OA | random forest OA "
        "| training time per seed | published / reference | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        dataset = result["dataset"]
        checkpoint = any(run["source"] == "checkpoint" for run in result["runs"])
        seeds = ", ".join(str(seed) for seed in result["seeds"]) + (" (earlier run)" if checkpoint else "")
        for subset, scores_ in result["subsets"].items():
            protocol = dataset["protocol"] if subset == "all" else f"{scores_['count']} test series"
            label = ", unseen polygons" if subset == "unseen" else ""
            lines.append(
                f"| {dataset['title']}{label}: {protocol} | `{dataset['config']}` | {seeds} "
                f"| **{mean_std(scores_['accuracy'])}** | {mean_std(scores_['macro_f1'])} "
                f"| {scores_['ensemble_accuracy']:.4f} | {scores_['forest_accuracy']:.4f} "
                f"| {minutes(np.mean(result['train_seconds']))} | {dataset['reference']} | {dataset['target']} |"
            )
    return "\n".join(lines)


def relative(path: str) -> str:
    """``path`` relative to the repository when inside it (the report does not depend on the clone's place)."""
    return str(Path(path).relative_to(REPO)) if Path(path).is_relative_to(REPO) else path


def runs_table(results: list[dict]) -> str:
    lines = ["| data | seed | fold | test OA | epochs | time | run folder |", "|---|---|---|---|---|---|---|"]
    for result in results:
        for run in result["runs"]:
            fold = "" if run["fold"] is None else str(run["fold"])
            folder = f"`{run['run_dir']}`" + (" (earlier run, tested here)" if run["source"] == "checkpoint" else "")
            lines.append(
                f"| {result['name']} | {run['seed']} | {fold} | {run['test_accuracy']:.4f} | {run['epochs']} "
                f"| {run['seconds']:.0f} s | {folder} |"
            )
    return "\n".join(lines)


def provenance_table(results: list[dict]) -> str:
    lines = ["| data | made by | commit | date | machine |", "|---|---|---|---|---|"]
    for result in results:
        lines.append(
            f"| {result['name']} | `{result['command']}` | {result['commit']} | {result['date']} "
            f"| {result['machine']} |"
        )
    return "\n".join(lines)


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cmap", "configs", "benchmarks/accuracy.py"],
                               cwd=REPO, capture_output=True, text=True)  # fmt: skip
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def report(results: list[dict]) -> str:
    return "\n\n".join(
        [
            "# Accuracy on real data",
            "Written by `benchmarks/accuracy.py` from the latest result of each dataset (provenance below). "
            "Test OA: overall accuracy of the model at the end of training (`--test_after_fit true`), mean ± "
            "standard deviation over the seeds; k-fold rows pool the held-out predictions of every fold, so "
            "each series is predicted once per seed. Macro F1: same runs. Seed ensemble: the seeds' class "
            "probabilities averaged. Random forest: scikit-learn, 300 trees, seed 0, on the flattened band "
            "values of the same training (validation included) and test series. Training time: wall time of "
            "`cmap fit` with its test, summed over folds; the machine was shared with other jobs.",
            summary_table(results),
            "## Provenance",
            provenance_table(results),
            "## Every run",
            runs_table(results),
        ]
    )


def update_readme(readme: Path, table: str) -> None:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme}: markers {README_START} and {README_END} not found")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    block = f"{README_START}\n{table}\n\nWritten by `python benchmarks/accuracy.py`; commands, runs and seeds in "
    block += "[`benchmarks/results/accuracy.md`](benchmarks/results/accuracy.md).\n"
    readme.write_text(head + block + README_END + tail)


def pairs(parser: argparse.ArgumentParser, option: str, items: list[str]) -> dict[str, str]:
    """``["name=value", ...]`` -> ``{name: value}``, names checked against the datasets."""
    result = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in DATASETS or not value:
            parser.error(f"{option} {item!r}: expected DATASET=VALUE with DATASET one of {list(DATASETS)}")
        result[name] = value
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--seeds_for", nargs="+", default=[], metavar="DATASET=SEEDS",
        help="other seeds for some datasets, e.g. mato_grosso=0,1 ucr_crop=0",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoints", nargs="+", default=[], metavar="DATASET=CKPT",
        help="test an earlier run of the dataset's config instead of training (fixed test splits only)",
    )  # fmt: skip
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="only these folds of k-fold datasets")
    parser.add_argument("--config", default=None, help="another config for the one dataset of --datasets (tuning)")
    parser.add_argument("--shared_data", type=Path, default=SHARED_DATA)
    parser.add_argument("--stores", type=Path, default=REPO / "runs" / "stores", help="converted stores (cache)")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "accuracy", help="training runs and results")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "accuracy.md")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--no_readme", action="store_true", help="do not rewrite the README's table")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a CPU shared with others)")
    parser.add_argument("cmap_args", nargs="*", help="after --: more `cmap fit` options for every run")
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/accuracy.py", *(sys.argv[1:] if argv is None else argv)])
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config and len(args.datasets) != 1:
        parser.error("--config needs exactly one dataset in --datasets")
    seeds = {
        name: [int(seed) for seed in value.split(",")]
        for name, value in pairs(parser, "--seeds_for", args.seeds_for).items()
    }
    checkpoints = pairs(parser, "--checkpoints", args.checkpoints)
    for name in args.datasets:
        dataset = DATASETS[name] if args.config is None else replace(DATASETS[name], config=args.config)
        convert_stores(dataset, args.stores, args.shared_data)
        checkpoint = Path(checkpoints[name]) if name in checkpoints else None
        result = evaluate(
            name, dataset, seeds.get(name, args.seeds), args.stores, args.runs, args.cmap_args, args.folds, checkpoint
        )
        result.update(command=command, commit=commit(), date=date.today().isoformat(), machine=machine())
        (args.runs / name).mkdir(parents=True, exist_ok=True)
        (args.runs / name / "result.json").write_text(json.dumps(result, indent=1))
    results = [
        json.loads((args.runs / name / "result.json").read_text())
        for name in DATASETS
        if (args.runs / name / "result.json").is_file()
    ]
    text = report(results)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    if not args.no_readme:
        update_readme(args.readme, summary_table(results))


if __name__ == "__main__":
    main()
