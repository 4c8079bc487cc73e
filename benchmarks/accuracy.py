"""Test accuracy on the real datasets of ``../shared/data``: cmap's configs against a random forest.

For every dataset this script

1. converts the original files into stores under ``--stores`` (once; :mod:`cmap.data.convert`),
2. trains the dataset's config (``configs/``) for each seed through the ``cmap fit`` command,
   in-process (:class:`cmap.lightning_cli.CMapCLI`, ``--test_after_fit true``: the model at the end of its
   LR schedule is tested), once per cross-validation fold where the protocol is k-fold,
3. predicts the test series with each trained model (per-series predictions give the subsets
   and the seed ensemble) and checks them against the logged ``test/overall_accuracy``,
4. fits the peers (:mod:`peers`: aeon's MiniRocket, MultiRocket and MultiRocket-Hydra, a scikit-learn
   random forest; ``--peers``) on the *same* training and test series (read through the same data
   module, so the same files, fold and classes), once per fold (fixed ``random_state``), timing
   their fit and prediction in CPU seconds,

and saves the dataset's result, with its command, commit, date and machine, as
``<runs>/<dataset>/result.json``. The Markdown report (``--output``: summary table, every run with
its seed, fold, time and run folder) and the README's table (between its marker comments) are then
written from the latest result of *every* dataset, so datasets can be (re)run separately.
``--checkpoints DATASET=CKPT`` scores an existing run's checkpoint of the dataset's config instead of
training (recorded as such, with the run's own seed and training time). ``--peers_only`` trains
nothing: it keeps the dataset's latest cmap result and adds the peers computed now on the same
splits, with cmap's prediction speed timed on the config's model as built (untrained: the speed
does not depend on the weights).

A dataset's latest result is ``<runs>/<dataset>/result.json``; every written report also saves all
of them in ``benchmarks/results/accuracy.json`` (committed, unlike ``runs/``), which stands in for a
missing ``result.json``, so a fresh clone can add peers or rerun one dataset without losing the
others' rows.

    python benchmarks/accuracy.py            # every dataset, seeds 0 1 2 (UCR Crop: ~16 min per seed)
    python benchmarks/accuracy.py --threads 1 --seeds 0 1 2 --seeds_for mato_grosso=0,1 ucr_crop=0   # README table
    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/accuracy.py --threads 1 --peers_only  # peers only
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
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path

import numpy as np
import torch
import yaml
from common import REPO, SHARED_DATA, machine
from peers import AEON_PEERS, EXTRA_HINT, PEERS, TITLES, PeerRun, aeon_available, fit_predict
from sklearn.metrics import accuracy_score, f1_score
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from cmap.data import convert
from cmap.data.datamodule import SITSDataModule
from cmap.data.series import PixelSeries
from cmap.data.store import read_metadata
from cmap.lightning_cli import CMapCLI

#: The default recipe (``--recipe default``): a user's own data, nothing to tune.
DEFAULT_RECIPE = "configs/default.yaml"
README_START, README_END = "<!-- accuracy-table:start -->", "<!-- accuracy-table:end -->"


@dataclass
class Dataset:
    """One benchmark row: a config, its evaluation protocol and the figures it is compared with."""

    name: str
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
    #: "config": the dataset's own config; "default": ``configs/default.yaml`` given only the data
    #: module's class (and the store paths and fold): the default recipe, nothing tuned for the data.
    recipe: str = "config"

    @property
    def key(self) -> str:
        """Where its result is kept: ``<runs>/<key>/result.json``."""
        return self.name if self.recipe == "config" else f"{self.name}-{self.recipe}"


DATASETS = {
    "ucr_crop": Dataset(
        name="ucr_crop",
        title="UCR Crop (24 classes, NDVI)",
        config="configs/ucr_crop_transformer.yaml",
        protocol="7,200 train / 16,800 test",
        reference="InceptionTime 0.793, MultiRocket 0.774, HIVE-COTE 2 0.764 (Tan et al. 2022)",
        target=">= 0.81",
    ),
    "mato_grosso": Dataset(
        name="mato_grosso",
        title="Mato Grosso MOD13Q1 (9 classes, 6 bands)",
        config="configs/mato_grosso_exchanger.yaml",
        protocol="1,892 samples, 5-fold CV (stratified)",
        reference="SVM 0.94 (Picoli et al. 2018)",
        target=">= 0.97",
        stores={"mato_grosso": (convert.read_mato_grosso, "sits_matogrosso_mod13q1/br_mt_1_8K_9classes_6bands.rda")},
        num_folds=5,
    ),
    "victoria": Dataset(
        name="victoria",
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
        name="tempcnn",
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
    """The config (the dataset's own, or the default recipe with the data module's class only) and its
    overrides: the store cache and the fold."""
    if dataset.recipe == "default":
        data_class = yaml.safe_load((REPO / dataset.config).read_text())["data"]["class_path"]
        arguments = ["--config", str(REPO / DEFAULT_RECIPE), "--data", data_class]
    else:
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
    #: CPU seconds of the process during ``cmap fit`` (NaN for a checkpoint).
    cpu_seconds: float = float("nan")
    #: CPU and wall seconds of the test-probabilities pass (``trainer.predict`` over the test series).
    predict_cpu_seconds: float = float("nan")
    predict_wall_seconds: float = float("nan")

    def record(self) -> dict:
        """What the report keeps (no predictions)."""
        return {
            "seed": self.seed, "fold": self.fold, "seconds": self.seconds, "epochs": self.epochs,
            "run_dir": relative(self.run_dir), "test_accuracy": self.logged_accuracy, "source": self.source,
            "cpu_seconds": self.cpu_seconds, "test_series": len(self.probabilities),
            "predict_cpu_seconds": self.predict_cpu_seconds, "predict_wall_seconds": self.predict_wall_seconds,
        }  # fmt: skip


def test_probabilities(cli: CMapCLI, run_dir: Path) -> tuple[np.ndarray, float, float]:
    """Class probabilities (N, K) of the test series by the CLI's model, also saved in ``run_dir``,
    and the pass's CPU and wall seconds (the prediction speed of the method).

    Saved as ``test_probabilities.npy`` (float16: enough to average) for ensembles of runs made by
    separate invocations.
    """
    cpu, wall = time.process_time(), time.perf_counter()
    outputs = cli.trainer.predict(cli.model, dataloaders=cli.datamodule.test_dataloader())
    probabilities = torch.cat([output["probabilities"] for output in outputs]).float().numpy()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    np.save(run_dir / "test_probabilities.npy", probabilities.astype(np.float16))
    return probabilities, cpu, wall


def predict_speed(dataset: "Dataset", stores: Path, fold: int | None) -> tuple[int, float, float]:
    """Test series, CPU and wall seconds of ``trainer.predict`` over the test series with the config's
    model as built (untrained: the cost of a forward pass does not depend on the weights), after one
    untimed pass, over as many passes as fill 3 CPU seconds; for ``--peers_only``, which trains nothing."""
    with tempfile.TemporaryDirectory() as root:  # the trainer's folder (its saved config), not the config's
        arguments = [*cli_arguments(dataset, stores, fold), "--trainer.logger", "false"]
        arguments += ["--trainer.default_root_dir", root, "--trainer.enable_progress_bar", "false"]
        cli = CMapCLI(args=[*arguments, "--trainer.enable_model_summary", "false"], run=False)
        cli.trainer.predict(cli.model, datamodule=cli.datamodule)
        series, cpu, wall = 0, time.process_time(), time.perf_counter()
        while series == 0 or time.process_time() - cpu < 3.0:  # passes until 3 CPU seconds: small test sets
            outputs = cli.trainer.predict(cli.model, datamodule=cli.datamodule)
            series += sum(len(output["probabilities"]) for output in outputs)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return series, cpu, wall


def train(dataset: Dataset, stores: Path, fold: int | None, seed: int, runs: Path, extra: list[str]) -> Run:
    """``cmap fit --config ... --seed_everything SEED --test_after_fit true``, then predict the test series."""
    root = runs / (f"seed{seed}" if fold is None else f"seed{seed}_fold{fold}")
    arguments = ["fit", *cli_arguments(dataset, stores, fold), "--seed_everything", str(seed)]
    arguments += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    arguments += ["--trainer.enable_model_summary", "false", "--test_after_fit", "true", *extra]
    start, cpu = time.perf_counter(), time.process_time()
    cli = CMapCLI(args=arguments)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    logged = float(cli.trainer.callback_metrics["test/overall_accuracy"])
    probabilities, predict_cpu, predict_wall = test_probabilities(cli, Path(cli.trainer.log_dir))
    return Run(
        seed, fold, seconds, cli.trainer.current_epoch, str(cli.trainer.log_dir), probabilities, logged,
        cpu_seconds=cpu, predict_cpu_seconds=predict_cpu, predict_wall_seconds=predict_wall,
    )  # fmt: skip


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
    probabilities, predict_cpu, predict_wall = test_probabilities(cli, run_dir)
    epochs = int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]) + 1
    times = [
        event.wall_time
        for events in sorted(run_dir.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(events)).Load()
    ]
    seconds = max(times) - min(times) if times else float("nan")
    return Run(
        seed, None, seconds, epochs, str(run_dir), probabilities, logged, source="checkpoint",
        predict_cpu_seconds=predict_cpu, predict_wall_seconds=predict_wall,
    )  # fmt: skip


def run_peers(name: str, fold: int | None, train: PixelSeries, test: PixelSeries, peers: list[str]) -> dict:
    """Every peer of ``peers`` fitted on ``train``, predicting ``test``: {peer: PeerRun}."""
    done = {}
    for peer in peers:
        done[peer] = run = fit_predict(peer, train, test)
        print(
            f"{name} fold {fold} {TITLES[peer]}: OA {accuracy_score(test.labels, run.predictions):.4f}, "
            f"fit {run.fit_cpu_seconds:.1f} CPU s, predict {len(test) / run.predict_cpu_seconds:,.0f} series/CPU s",
            flush=True,
        )
    return done


def peer_summary(labels: np.ndarray, subsets: dict[str, np.ndarray], runs: list[PeerRun]) -> dict:
    """One peer's scores (pooled over folds, like cmap's) and costs (summed over folds)."""
    predictions = np.concatenate([run.predictions for run in runs])
    fit_cpu, predict_cpu = sum(r.fit_cpu_seconds for r in runs), sum(r.predict_cpu_seconds for r in runs)
    return {
        "subsets": {
            subset: dict(zip(("accuracy", "macro_f1"), scores(labels[keep], predictions[keep]), strict=True))
            for subset, keep in subsets.items()
        },
        "fit_cpu_seconds": fit_cpu,
        "fit_wall_seconds": sum(r.fit_wall_seconds for r in runs),
        "predict_cpu_seconds": predict_cpu,
        "predict_wall_seconds": sum(r.predict_wall_seconds for r in runs),
        "test_series": len(labels),
        "series_per_second": len(labels) / predict_cpu,
    }


def scores(labels: np.ndarray, predictions: np.ndarray) -> tuple[float, float]:
    """Overall accuracy and macro F1. The macro F1 averages the classes true or predicted in ``labels``
    and ``predictions`` (scikit-learn's default), as the ``macro_f1`` a cmap run logs: a class that a
    subset lacks and no model predicts does not count as an F1 of 0."""
    return accuracy_score(labels, predictions), f1_score(labels, predictions, average="macro")


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def fold_list(dataset: Dataset, folds: list[int] | None) -> tuple[Dataset, list[int | None]]:
    """The folds to run (``[None]`` for a fixed test split), and the dataset's protocol saying which."""
    if dataset.num_folds and folds:
        dataset = replace(dataset, protocol=f"{dataset.protocol}, folds {', '.join(map(str, folds))} only")
    return dataset, (folds or list(range(dataset.num_folds))) if dataset.num_folds else [None]


def evaluate(
    name: str,
    dataset: Dataset,
    seeds: list[int],
    stores: Path,
    runs: Path,
    extra: list[str],
    folds: list[int] | None = None,
    checkpoint: Path | None = None,
    peers: tuple[str, ...] | list[str] = PEERS,
) -> dict:
    """Train every seed (and fold), or test ``checkpoint``; score the predictions, fit the peers.

    Returns the dataset's result (plain data, saved as JSON): scores over all test series and,
    where the dataset has them, over the series of unseen groups.
    """
    if checkpoint is not None and dataset.num_folds:
        raise ValueError(f"--checkpoints {name}=...: only for datasets with a fixed test split, not k-fold")
    dataset, folds = fold_list(dataset, folds)
    labels, unseen, runs_done = [], [], []
    peer_runs: dict[str, list[PeerRun]] = {peer: [] for peer in peers}
    for fold in folds:
        data = data_module(dataset, stores, fold)
        train_series, test_series = train_test(data)
        labels.append(test_series.labels)
        if dataset.unseen_groups:
            unseen.append(~np.isin(test_series.groups, train_series.groups))
        for peer, run in run_peers(name, fold, train_series, test_series, peers).items():
            peer_runs[peer].append(run)
        if checkpoint is not None:
            fold_runs = [test_checkpoint(dataset, stores, checkpoint, runs / dataset.key)]
        else:
            fold_runs = [train(dataset, stores, fold, seed, runs / dataset.key, extra) for seed in seeds]
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
    labels = np.concatenate(labels)
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
        }

    keeps = {"all": np.ones(len(labels), dtype=bool)}
    if unseen:
        keeps["unseen"] = np.concatenate(unseen)
    predicted = sum(len(run.probabilities) for run in runs_done)
    predict_cpu = sum(run.predict_cpu_seconds for run in runs_done)
    return {
        "name": name,
        "recipe": dataset.recipe,
        "dataset": asdict(replace(dataset, stores={})),
        "seeds": seeds,
        "subsets": {subset: subset_scores(keep) for subset, keep in keeps.items()},
        "train_seconds": [sum(run.seconds for run in runs_done if run.seed == seed) for seed in seeds],
        "train_cpu_seconds": [sum(run.cpu_seconds for run in runs_done if run.seed == seed) for seed in seeds],
        "cmap_predict": {
            "how": "the test-probabilities pass of every run (trainer.predict over the test series)",
            "test_series": predicted,
            "cpu_seconds": predict_cpu,
            "wall_seconds": sum(run.predict_wall_seconds for run in runs_done),
            "series_per_second": predicted / predict_cpu,
        },
        "peers": {peer: peer_summary(labels, keeps, done) for peer, done in peer_runs.items()},
        "runs": [run.record() for run in runs_done],
    }


def evaluate_peers(
    name: str, dataset: Dataset, stores: Path, folds: list[int] | None, peers: list[str]
) -> tuple[dict, dict]:
    """``--peers_only``: the peers and cmap's prediction speed on the dataset's splits, nothing trained.

    Returns the ``peers`` and ``cmap_predict`` entries of a result.
    """
    dataset, folds = fold_list(dataset, folds)
    labels, unseen, predicted, cpu, wall = [], [], 0, 0.0, 0.0
    peer_runs: dict[str, list[PeerRun]] = {peer: [] for peer in peers}
    for fold in folds:
        train_series, test_series = train_test(data_module(dataset, stores, fold))
        labels.append(test_series.labels)
        if dataset.unseen_groups:
            unseen.append(~np.isin(test_series.groups, train_series.groups))
        for peer, run in run_peers(name, fold, train_series, test_series, peers).items():
            peer_runs[peer].append(run)
        count, fold_cpu, fold_wall = predict_speed(dataset, stores, fold)
        print(f"{name} fold {fold} cmap (untrained {dataset.config}): {count / fold_cpu:,.0f} series/CPU s", flush=True)
        predicted, cpu, wall = predicted + count, cpu + fold_cpu, wall + fold_wall
    labels = np.concatenate(labels)
    keeps = {"all": np.ones(len(labels), dtype=bool)}
    if unseen:
        keeps["unseen"] = np.concatenate(unseen)
    cmap_predict = {
        "how": f"trainer.predict over the test series, {dataset.config}'s model as built (untrained), "
        "after one untimed pass, passes filling 3 CPU s (--peers_only)",
        "test_series": predicted,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "series_per_second": predicted / cpu,
    }
    return {peer: peer_summary(labels, keeps, done) for peer, done in peer_runs.items()}, cmap_predict


def mean_std_cell(scores_: dict, key: str) -> str:
    """``key``'s mean ± std over seeds, or its text as recorded (a result imported from a report)."""
    return scores_[f"{key}_text"] if f"{key}_text" in scores_ else mean_std(scores_[key])


def peer_scores(result: dict, peer: str, subset: str) -> dict | None:
    """A peer's {accuracy, macro_f1} on ``subset``; an older result has only the forest's accuracy."""
    if peer in result.get("peers", {}):
        return result["peers"][peer]["subsets"][subset]
    old = result["subsets"][subset]
    if peer == "forest" and "forest_accuracy" in old:
        return {"accuracy": old["forest_accuracy"], "macro_f1": old.get("forest_macro_f1")}
    return None


def peer_cell(scores_: dict | None) -> str:
    if scores_ is None:
        return "-"
    f1 = "" if scores_.get("macro_f1") is None else f" ({scores_['macro_f1']:.4f})"
    return f"{scores_['accuracy']:.4f}{f1}"


def result_key(result: dict) -> str:
    """A result's name with its recipe: ``ucr_crop``, ``ucr_crop-default``."""
    recipe = result.get("recipe", "config")
    return result["name"] if recipe == "config" else f"{result['name']}-{recipe}"


def config_cell(dataset: dict) -> str:
    if dataset.get("recipe", "config") == "default":
        return f"`{DEFAULT_RECIPE}` (default recipe, given only the data)"
    return f"`{dataset['config']}`"


def with_peers_of_config_rows(results: list[dict]) -> list[dict]:
    """Default-recipe results fitted without peers (``--peers`` with none) take the peers of the same
    dataset's config result: the same test series (fixed splits and folds) and the same training
    series, as every data module splits with its ``seed`` 0 and peers train on training + validation."""
    by_name = {result["name"]: result for result in results if result.get("recipe", "config") == "config"}
    completed = []
    for result in results:
        config = by_name.get(result["name"])
        if not result.get("peers") and config is not None and config.get("peers"):
            result = {**result, "peers": config["peers"], "peers_from": result_key(config)}
        completed.append(result)
    return completed


def summary_table(results: list[dict]) -> str:
    """Accuracy: cmap (mean ± std over seeds, seed ensemble) and every peer (OA, macro F1)."""
    results = with_peers_of_config_rows(results)
    peer_columns = "".join(f"| {TITLES[peer]} OA (macro F1) " for peer in PEERS)
    lines = [
        "| data, protocol | config | seeds | test OA (mean ± std) | macro F1 | seed ensemble OA "
        f"{peer_columns}| training time per seed | published / reference | target |",
        "|---|---|---|---|---|---|" + "---|" * len(PEERS) + "---|---|---|",
    ]
    for result in results:
        dataset = result["dataset"]
        checkpoint = any(run["source"] == "checkpoint" for run in result["runs"])
        seeds = ", ".join(str(seed) for seed in result["seeds"]) + (" (earlier run)" if checkpoint else "")
        for subset, scores_ in result["subsets"].items():
            protocol = dataset["protocol"] if subset == "all" else f"{scores_['count']} test series"
            label = ", unseen polygons" if subset == "unseen" else ""
            peers = "".join(f"| {peer_cell(peer_scores(result, peer, subset))} " for peer in PEERS)
            lines.append(
                f"| {dataset['title']}{label}: {protocol} | {config_cell(dataset)} | {seeds} "
                f"| **{mean_std_cell(scores_, 'accuracy')}** | {mean_std_cell(scores_, 'macro_f1')} "
                f"| {scores_['ensemble_accuracy']:.4f} {peers}"
                f"| {minutes(np.mean(result['train_seconds']))} | {dataset['reference']} | {dataset['target']} |"
            )
    return "\n".join(lines)


def cpu_time(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else minutes(seconds)


def cost_table(results: list[dict]) -> str:
    """What each method costs: training (cmap: wall, and CPU where recorded, per seed; peers: CPU)
    and prediction speed (test series per CPU second)."""
    results = with_peers_of_config_rows(results)
    lines = [
        "| data | cmap: training per seed | cmap: prediction, series/s "
        + "".join(f"| {TITLES[peer]}: fit CPU, series/s " for peer in PEERS)
        + "|",
        "|---|---|---|" + "---|" * len(PEERS),
    ]
    for result in results:
        training = f"{minutes(np.mean(result['train_seconds']))} wall"
        cpu = [seconds for seconds in result.get("train_cpu_seconds", []) if np.isfinite(seconds)]
        if cpu:
            training += f", {cpu_time(np.mean(cpu))} CPU"
        speed = result.get("cmap_predict")
        cmap_speed = "-" if speed is None else f"{speed['series_per_second']:,.0f}"
        if speed is not None and "untrained" in speed["how"]:
            cmap_speed += " (untrained model)"
        cells = []
        for peer in PEERS:
            peer_result = result.get("peers", {}).get(peer)
            cells.append(
                "-"
                if peer_result is None
                else f"{cpu_time(peer_result['fit_cpu_seconds'])}, {peer_result['series_per_second']:,.0f}"
            )
        lines.append(f"| {result_key(result)} | {training} | {cmap_speed} | " + " | ".join(cells) + " |")
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
                f"| {result_key(result)} | {run['seed']} | {fold} | {run['test_accuracy']:.4f} | {run['epochs']} "
                f"| {run['seconds']:.0f} s | {folder} |"
            )
    return "\n".join(lines)


def provenance_table(results: list[dict]) -> str:
    lines = ["| data | made by | commit | date | machine |", "|---|---|---|---|---|"]
    for result in results:
        rows = [(result_key(result), result)]
        if "peers_provenance" in result:
            rows.append((f"{result_key(result)}: peers and cmap's prediction speed", result["peers_provenance"]))
        for label, made in rows:
            lines.append(f"| {label} | `{made['command']}` | {made['commit']} | {made['date']} | {made['machine']} |")
    return "\n".join(lines)


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cmap", "configs", "benchmarks/accuracy.py",
                                "benchmarks/peers.py"], cwd=REPO, capture_output=True, text=True)  # fmt: skip
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


PEERS_TEXT = (
    "Peers, fitted by the same script on the same training (validation included) and test series, once "
    "per fold: aeon's `MiniRocketClassifier`, `MultiRocketClassifier`, `MultiRocketHydraClassifier` "
    "(defaults, `random_state=0`, `n_jobs=1`) on the series as aeon's (cases, bands, dates) arrays "
    "(a missing date interpolated linearly in time; no store here has one), and a scikit-learn random "
    "forest (300 trees, `random_state=0`) on the flattened band values (a missing date: the band's "
    "training mean). Their cost: fit CPU seconds (`time.process_time` of the process, one thread, summed "
    "over folds, after an untimed warm-up fit on 40 series for numba's compilation) and prediction speed "
    "in test series per CPU second (passes repeated to fill 1 CPU second on small test sets). cmap's "
    "prediction speed: series per CPU second of `trainer.predict` over the test series, timed on the "
    "test-probabilities pass of the trained runs, or, where marked untrained, on the config's model as "
    "built, over passes filling 3 CPU seconds (`--peers_only`: the cost of a forward pass does not depend "
    "on the weights). A map is ~120 M pixels per Sentinel-2 tile: at 10,000 series/s, 3.3 CPU hours. "
    "Default-recipe rows (`--recipe default`: `configs/default.yaml` given only the data module's class) "
    "show the peers fitted for the same dataset's config row: the same training and test series."
)


def report(results: list[dict]) -> str:
    return "\n\n".join(
        [
            "# Accuracy on real data",
            "Written by `benchmarks/accuracy.py` from the latest result of each dataset (provenance below). "
            "Test OA: overall accuracy of the model at the end of training (`--test_after_fit true`), mean ± "
            "standard deviation over the seeds; k-fold rows pool the held-out predictions of every fold, so "
            "each series is predicted once per seed (and once by each peer). Macro F1: same runs. Seed "
            "ensemble: the seeds' class probabilities averaged. Training time: wall time of `cmap fit` with "
            "its test, summed over folds; the machine was shared with other jobs.",
            PEERS_TEXT,
            summary_table(results),
            "## Cost",
            cost_table(results),
            "## Provenance",
            provenance_table(results),
            "## Every run",
            runs_table(results),
        ]
    )


def update_readme(readme: Path, tables: str) -> None:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme}: markers {README_START} and {README_END} not found")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    block = f"{README_START}\n{tables}\n\nWritten by `python benchmarks/accuracy.py`; commands, runs, seeds and how "
    block += "each figure is measured in [`benchmarks/results/accuracy.md`](benchmarks/results/accuracy.md).\n"
    readme.write_text(head + block + README_END + tail)


def readme_tables(results: list[dict]) -> str:
    """The README's block: accuracy, then cost (fit time and prediction speed of every method)."""
    return (
        f"{summary_table(results)}\n\nCost: cmap's training time per seed (wall, and CPU where recorded, on the "
        "machine of its runs), the peers' fit CPU time (one thread, summed over folds) and every method's "
        "prediction speed in test series per CPU second (one thread, cmap's timed in the same run as the peers, on "
        f"the same machine).\n\n{cost_table(results)}"
    )


def pairs(parser: argparse.ArgumentParser, option: str, items: list[str]) -> dict[str, str]:
    """``["name=value", ...]`` -> ``{name: value}``, names checked against the datasets."""
    result = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in DATASETS or not value:
            parser.error(f"{option} {item!r}: expected DATASET=VALUE with DATASET one of {list(DATASETS)}")
        result[name] = value
    return result


def latest_result(key: str, runs: Path, saved: Path) -> dict | None:
    """The latest result of ``key`` (a dataset, ``-default`` for its default-recipe runs):
    ``<runs>/<key>/result.json``, else its entry in ``saved`` (``benchmarks/results/accuracy.json``,
    the results of the committed report)."""
    path = runs / key / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    if saved.is_file():
        return next((result for result in json.loads(saved.read_text()) if result_key(result) == key), None)
    return None


def peer_choice(parser: argparse.ArgumentParser, peers: list[str] | None) -> list[str]:
    """``--peers``: all when aeon is importable, else the random forest with a message; an aeon peer
    asked for without aeon is an error naming the extra."""
    if aeon_available():
        return list(PEERS) if peers is None else peers
    if peers is None:
        print(f"{EXTRA_HINT}; fitting the random forest only", file=sys.stderr, flush=True)
        return ["forest"]
    if set(peers) & set(AEON_PEERS):
        parser.error(f"--peers {' '.join(peers)}: {EXTRA_HINT}")
    return peers


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
    parser.add_argument(
        "--peers", nargs="*", choices=PEERS, default=None,
        help="methods fitted beside cmap on the same series (default: all when aeon is installed, else forest)",
    )  # fmt: skip
    parser.add_argument(
        "--peers_only", action="store_true",
        help="train nothing: add the peers (and cmap's prediction speed) to each dataset's latest result",
    )  # fmt: skip
    parser.add_argument(
        "--report_only", action="store_true",
        help="compute nothing: write the report, the results file and the README's tables from the latest results",
    )  # fmt: skip
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="only these folds of k-fold datasets")
    parser.add_argument("--config", default=None, help="another config for the one dataset of --datasets (tuning)")
    parser.add_argument(
        "--recipe", choices=["config", "default"], default="config",
        help=f"config: each dataset's own config; default: {DEFAULT_RECIPE} given only the data module's class",
    )  # fmt: skip
    parser.add_argument("--shared_data", type=Path, default=SHARED_DATA)
    parser.add_argument("--stores", type=Path, default=REPO / "runs" / "stores", help="converted stores (cache)")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "accuracy", help="training runs and results")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "accuracy.md")
    parser.add_argument(
        "--results", type=Path, default=REPO / "benchmarks" / "results" / "accuracy.json",
        help="every latest result (written with --output; read where <runs>/<dataset>/result.json is missing)",
    )  # fmt: skip
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
    if args.peers_only and (args.config or args.checkpoints or args.folds or args.cmap_args):
        parser.error(
            "--peers_only takes the splits of each dataset's latest result: no --config, --checkpoints, --folds"
        )
    peers = [] if args.report_only else peer_choice(parser, args.peers)
    seeds = {
        name: [int(seed) for seed in value.split(",")]
        for name, value in pairs(parser, "--seeds_for", args.seeds_for).items()
    }
    checkpoints = pairs(parser, "--checkpoints", args.checkpoints)
    made = {"command": command, "commit": commit(), "date": date.today().isoformat(), "machine": machine()}
    for name in [] if args.report_only else args.datasets:
        dataset = DATASETS[name] if args.config is None else replace(DATASETS[name], config=args.config)
        dataset = replace(dataset, recipe=args.recipe)
        convert_stores(dataset, args.stores, args.shared_data)
        if args.peers_only:
            result = latest_result(dataset.key, args.runs, args.results)
            if result is None:
                parser.error(f"--peers_only: no result of {dataset.key} in {args.runs / dataset.key} or {args.results}")
            folds = sorted({run["fold"] for run in result["runs"]}) if dataset.num_folds else None
            if folds is not None and folds != list(range(dataset.num_folds)):
                dataset = replace(dataset, protocol=result["dataset"]["protocol"])
            peer_results, cmap_predict = evaluate_peers(name, dataset, args.stores, folds, peers)
            result["peers"] = {**result.get("peers", {}), **peer_results}
            if "untrained" in result.get("cmap_predict", {"how": "untrained"})["how"]:
                result["cmap_predict"] = cmap_predict
            result["peers_provenance"] = made
        else:
            checkpoint = Path(checkpoints[name]) if name in checkpoints else None
            result = evaluate(
                name, dataset, seeds.get(name, args.seeds), args.stores, args.runs, args.cmap_args, args.folds,
                checkpoint, peers,
            )  # fmt: skip
            result.update(made)
        (args.runs / dataset.key).mkdir(parents=True, exist_ok=True)
        (args.runs / dataset.key / "result.json").write_text(json.dumps(result, indent=1))
    keys = [key for name in DATASETS for key in (name, f"{name}-default")]
    results = [result for key in keys if (result := latest_result(key, args.runs, args.results)) is not None]
    text = report(results)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_readme:
        update_readme(args.readme, readme_tables(results))


if __name__ == "__main__":
    main()
