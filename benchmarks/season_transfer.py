"""A new season mapped with labels of other seasons (issue 29): Mato Grosso, seasons <= 2014 -> 2015 and
2015 -> 2014, cmap with and without adaptation to the target season's unlabelled series, and the peers
(``peers.py``: MiniRocket, MultiRocket, MultiRocket-Hydra, random forest) on the same series.

Each sample of ``../shared/data/sits_matogrosso_mod13q1`` is one agricultural season; its season is the
year of its season start (09-13, the time axis of :func:`cmap.data.convert.read_mato_grosso`, which
converts it as ``cmap convert table ... --time_axis season_start --season_start 09-13`` would). Per
direction this writes, under ``--workdir``:

- ``<direction>/train``: the source seasons' labelled series;
- ``<direction>/target``: every target-season series, labels dropped: the new season's pixels a user
  gives ``cmap fit`` as ``--data.init_args.unlabelled`` (the mapping setting);
- ``<direction>/test``: the target series of the classes seen in training, labelled (the score);
  target series of classes never seen in training are counted in the report, not scored.

cmap rows are ``cmap fit --config configs/default.yaml`` (the default recipe) plus each variant's options
(``VARIANTS``), one ``--seeds`` each, tested as the fit ends (``--test_after_fit``); the peers' predictions
are cached in ``<direction>/peers/`` so a rerun of cmap variants does not refit them. Every score is appended
to ``<workdir>/scores.jsonl`` (a rerun skips what is there) and the report is rewritten after each one.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/season_transfer.py --threads 1 \
        --variants baseline adabn --seeds 0 1 2
    python benchmarks/season_transfer.py --report_only
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import REPO, SHARED_DATA, machine
from peers import PEERS, TITLES, aeon_available, fit_predict
from sklearn.metrics import accuracy_score, f1_score

from cmap.data.convert import _read_rda_tibble, read_mato_grosso
from cmap.data.dataset import SeriesDataset, batch_loader
from cmap.data.series import PixelSeries
from cmap.data.splits import kfold_split
from cmap.data.store import open_store, write_store
from cmap.lightning_cli import CMapCLI
from cmap.ml.adaptation import (
    adapt_batch_norm,
    estimate_shift,
    predicted_classes,
    predicted_probabilities,
    prior_adjusted,
    target_priors,
)
from cmap.ml.classifiers import Classifier

RDA = SHARED_DATA / "sits_matogrosso_mod13q1" / "br_mt_1_8K_9classes_6bands.rda"
RDA_OBJECT = "br_mt_1_8K_9classes_6bands"
RESULTS = REPO / "benchmarks" / "results" / "season_transfer.md"
DEFAULT_RECIPE = "configs/default.yaml"
ADAPTATION_CONFIG = "configs/season_transfer.yaml"


@dataclass(frozen=True)
class Direction:
    name: str
    title: str
    source_seasons: tuple[int, int]  # first and last season (inclusive) of the labelled series
    target_season: int
    #: instead of seasons: this fold of the 5 stratified folds (seed 0) of every season is the target
    #: (the README's random-split protocol; ``accuracy.py``'s fold)
    random_fold: int | None = None


DIRECTIONS = (
    Direction("to2015", "seasons <= 2014 -> 2015", (0, 2014), 2015),
    Direction("to2014", "2015 -> 2014", (2015, 2015), 2014),
    Direction("random0", "random split, fold 0 of 5", (0, 9999), 0, random_fold=0),
)

#: cmap variants: a title and the ``cmap fit`` options added to the default recipe's. ``{target}`` is the
#: direction's unlabelled target store (the new season's series, the mapping setting).
TARGET = ["--data.init_args.unlabelled", "{target}", "--data.init_args.unlabelled_ratio", "1"]
FIXMATCH = [*TARGET, "--model.init_args.consistency.threshold", "0.8"]
CLASS_BALANCED = ["--model.init_args.consistency.distribution_alignment", "true"]


def adaptation_callback(**init_args) -> list[str]:
    """The option that appends :class:`~cmap.ml.adaptation.SeasonAdaptation` to the recipe's callbacks."""
    callback = {"class_path": "cmap.ml.adaptation.SeasonAdaptation", "init_args": init_args}
    return [f"--trainer.callbacks+={json.dumps(callback)}"]


VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("default recipe, no adaptation", []),
    "day_shift": (
        "default recipe + day-shift augmentation (+-16 days)",
        ["--data.init_args.augmentation.day_shift", "16"],
    ),
    "fixmatch": ("consistency on the target store (FixMatch, threshold 0.8, mu 1)", FIXMATCH),
    "fixmatch_da": (
        "consistency on the target store, class-balanced (distribution alignment)",
        [*FIXMATCH, *CLASS_BALANCED],
    ),
    "fixmatch_da_adabn": (
        "consistency on the target store, class-balanced, AdaBN when training ends",
        [*FIXMATCH, *CLASS_BALANCED, *adaptation_callback(batch_norm=True)],
    ),
    "timematch": (
        "TimeMatch: shift estimated at 30 % of training (+-48 days), shifted target's pseudo-labels, class-balanced",
        [*FIXMATCH, *CLASS_BALANCED, *adaptation_callback(batch_norm=False, shift_days=48, shift_step=8)],
    ),
    "adapted": (
        f"the documented path: `{ADAPTATION_CONFIG}` with the target store (consistency, Mean Teacher)",
        ["--config", ADAPTATION_CONFIG, *TARGET],
    ),
    "adapted_stretch_train": (
        f"`{ADAPTATION_CONFIG}` + phenology stretch of the training series (+-10 %)",
        ["--config", ADAPTATION_CONFIG, *TARGET, "--data.init_args.augmentation.time_stretch", "0.1"],
    ),
    "adapted_stretch_strong": (
        f"`{ADAPTATION_CONFIG}` + phenology stretch of the target's strong views (+-10 %)",
        ["--config", ADAPTATION_CONFIG, *TARGET, "--model.init_args.consistency.time_stretch", "0.1"],
    ),
    "adapted_estimated": (
        f"`{ADAPTATION_CONFIG}`, pseudo-labels towards the target's estimated class proportions",
        ["--config", ADAPTATION_CONFIG, *TARGET, "--model.init_args.consistency.distribution_alignment", "estimated"],
    ),
    "adapted_speed": (
        f"`{ADAPTATION_CONFIG}` + the target's season speed estimated (TimeMatch-style, factors 0.8-1.2) for its "
        "pseudo-labels",
        [
            "--config",
            ADAPTATION_CONFIG,
            *TARGET,
            *adaptation_callback(batch_norm=False, report=False, speed=0.2, speed_step=0.05),
        ],
    ),
    "stretch_train": (
        "default recipe + phenology stretch of the training series (+-10 %)",
        ["--data.init_args.augmentation.time_stretch", "0.1"],
    ),
    "adapted_mu4": (
        f"`{ADAPTATION_CONFIG}`, 4 target series per labelled one (unlabelled_ratio 4)",
        ["--config", ADAPTATION_CONFIG, *TARGET[:3], "4"],
    ),
}


def season_of_each_sample(path: Path, season_start_days: np.ndarray) -> np.ndarray:
    """The season (the year its season starts) of each sample of the .rda: its first date minus its
    days since the season start."""
    table = _read_rda_tibble(path, RDA_OBJECT)
    first = np.array([series["Index"].iloc[0] for series in table["time_series"]], dtype=np.float64)
    first = np.datetime64("1970-01-01", "D") + first.round().astype(np.int64)
    anchors = first - season_start_days.astype("timedelta64[D]")
    return anchors.astype("datetime64[Y]").astype(np.int64) + 1970


def direction_rows(direction: Direction, series: PixelSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks over the converted samples: the direction's source (labelled training) series, its target
    series and the target series scored (those of classes seen in training)."""
    seasons = season_of_each_sample(RDA, series.days[:, 0])
    first, last = direction.source_seasons
    source, target = (seasons >= first) & (seasons <= last), seasons == direction.target_season
    if direction.random_fold is not None:
        target = np.isin(np.arange(len(series)), kfold_split(series, 5, direction.random_fold, 0)[1])
        source = ~target
    return source, target, target & np.isin(series.labels, sorted(set(series.labels[source].tolist())))


def write_stores(direction: Direction, folder: Path) -> dict:
    """The direction's training, target (unlabelled) and test stores (unless written already), and
    their counts."""
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    converted = read_mato_grosso(RDA)
    series, names = converted.series, converted.class_names
    source, target, scored = direction_rows(direction, series)
    seen = sorted(set(series.labels[source].tolist()))
    train_names = [names[label] for label in seen]  # the source's classes only: the model's outputs
    relabel = np.full(len(names), -1)
    relabel[seen] = np.arange(len(seen))

    def subset(rows: np.ndarray, labelled: bool) -> PixelSeries:
        labels = relabel[series.labels[rows]] if labelled else None
        return PixelSeries(series.values[rows], series.days[rows], labels, f"{RDA} ({direction.name})")

    axis = converted.time_axis
    write_store(folder / "train", subset(np.flatnonzero(source), True), converted.band_names, train_names, axis)
    write_store(folder / "target", subset(np.flatnonzero(target), False), converted.band_names, [], axis)
    write_store(folder / "test", subset(np.flatnonzero(scored), True), converted.band_names, train_names, axis)

    def counts(rows: np.ndarray) -> dict[str, int]:
        return {names[label]: int((series.labels[rows] == label).sum()) for label in sorted(set(series.labels[rows]))}

    summary = {
        "train": counts(source), "target": counts(target),
        "unseen": {name: n for name, n in counts(target).items() if names.index(name) not in seen},
    }  # fmt: skip
    summary_path.write_text(json.dumps(summary, indent=1))
    return summary


def scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """OA and macro F1 over the test set's classes (the classes true in ``labels``)."""
    classes = np.unique(labels)
    return {
        "oa": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=classes, average="macro")),
    }


def peer_predictions(direction: Direction, folder: Path, peer: str) -> np.ndarray:
    """The peer's test predictions, fitted on every training series (cached in ``folder/peers``)."""
    cache = folder / "peers" / f"{peer}.npy"
    if cache.is_file():
        return np.load(cache)
    train, test = open_store(folder / "train")[0], open_store(folder / "test")[0]
    predictions = fit_predict(peer, train, test, seed=0).predictions
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache.with_suffix(".tmp.npy"), predictions)
    cache.with_suffix(".tmp.npy").rename(cache)
    return predictions


def fit_cmap(direction: Direction, folder: Path, variant: str, seed: int, runs: Path) -> np.ndarray:
    """``cmap fit`` of the default recipe plus the variant's options on the direction's stores; the
    test series' predictions of the model as the fit ends."""
    options = [option.replace("{target}", str(folder / "target")) for option in VARIANTS[variant][1]]
    options = [str(REPO / option) if option == ADAPTATION_CONFIG else option for option in options]
    root = runs / direction.name / variant / f"seed{seed}"
    # The variant's options (a config among them) first: the run's own (seed, folder, stores) override them.
    config = options[1:2] if options[:1] == ["--config"] else [str(REPO / DEFAULT_RECIPE)]
    options = options[2:] if options[:1] == ["--config"] else options
    arguments = ["fit", "--config", *config, "--data", "cmap.data.SeriesStore", *options]
    arguments += ["--data.init_args.path", str(folder / "train"), "--data.init_args.test_path", str(folder / "test")]
    arguments += ["--seed_everything", str(seed), "--trainer.default_root_dir", str(root)]
    arguments += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    arguments += ["--test_after_fit", "true"]
    cli = CMapCLI(args=arguments)
    outputs = cli.trainer.predict(cli.model, dataloaders=cli.datamodule.test_dataloader())
    return torch.cat([output["probabilities"] for output in outputs]).argmax(-1).numpy()


#: Day shifts TimeMatch's estimate tries on a trained model's target predictions (MOD13Q1: 16-day composites).
SHIFTS = range(-48, 49, 8)


def checkpoint_variants(folder: Path, checkpoint: Path) -> list[tuple[str, np.ndarray, dict]]:
    """What needs no retraining, on a trained model's last checkpoint: its test predictions as saved;
    TimeMatch's shift estimate alone (the test series' days moved by it); the target's class
    proportions by EM (:func:`~cmap.ml.adaptation.target_priors`, from the model's mean probabilities on
    its training series) and the test probabilities adjusted to them; AdaBN (batch-norm statistics
    of the target store); AdaBN then the shift. Each with the shift estimate and its entropies."""
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)

    def batches(store: str, shift: int = 0) -> list:
        series = open_store(folder / store)[0]
        loader = batch_loader(SeriesDataset(series, np.arange(len(series)), model.input_contract), 512)
        return [{**batch, "days": (batch["days"] + shift).clamp_min(0)} for batch in loader]

    target = batches("target")
    results = []
    for name in ("", "+adabn"):
        if name:
            adapt_batch_norm(model, target)
        shift, entropies = estimate_shift(model, target, SHIFTS)
        info = {"shift": shift, "entropies": {str(k): round(v, 4) for k, v in entropies.items()}}
        results.append((name, predicted_classes(model, batches("test")).numpy(), info))
        results.append((f"{name}+shift", predicted_classes(model, batches("test", shift)).numpy(), info))
        if not name:
            source = predicted_probabilities(model, batches("train")).mean(0)
            priors = target_priors(predicted_probabilities(model, target), source)
            adjusted = prior_adjusted(predicted_probabilities(model, batches("test")), source, priors)
            results.append(("+priors", adjusted.argmax(-1).numpy(), {"priors": priors.numpy().round(4).tolist()}))
    return results


def checkpoint_records(direction: Direction, folder: Path, runs: Path, variant: str, scores_path: Path) -> None:
    """:func:`checkpoint_variants` of each seed's run of ``variant``, scored as ``variant+...`` rows."""
    labels = open_store(folder / "test")[0].labels
    done = {(r["method"], r["direction"], r["seed"]) for r in read_records(scores_path)}
    for run in sorted((runs / direction.name / variant).glob("seed*")):
        seed = int(run.name.removeprefix("seed"))
        checkpoints = sorted(run.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
        if not checkpoints or (f"{variant}+adabn", direction.name, seed) in done:
            continue
        for name, predictions, info in checkpoint_variants(folder, checkpoints[-1])[1:]:  # [0]: as trained
            record = {"kind": "cmap", "method": f"{variant}{name}", "direction": direction.name, "seed": seed,
                      **scores(labels, predictions), **info}  # fmt: skip
            append_record(scores_path, record)
            print(json.dumps(record), flush=True)


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def append_record(path: Path, record: dict) -> None:
    with path.open("a") as file:
        file.write(json.dumps(record) + "\n")


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def data_lines(summaries: dict[str, dict]) -> list[str]:
    lines = ["| direction | training series (classes) | target series (classes) | target classes never seen in "
             "training (not scored) |", "|---|---|---|---|"]  # fmt: skip
    for direction in DIRECTIONS:
        summary = summaries.get(direction.name)
        if summary is None:
            continue
        unseen = ", ".join(f"{name} {count}" for name, count in summary["unseen"].items()) or "none"
        train, target = summary["train"], summary["target"]
        lines.append(
            f"| {direction.title} | {sum(train.values())} ({len(train)}) | {sum(target.values())} ({len(target)}) "
            f"| {unseen} |"
        )
    return lines


#: The README's rows (the results file has every variant): the peers, the default recipe, the documented path.
README_METHODS = (*PEERS, "baseline", "adapted")


def report(records: list[dict], summaries: dict[str, dict], only: tuple[str, ...] | None = None) -> str:
    """The results table: one row per method (those of ``only``, when given), OA (macro F1) per direction,
    mean ± std over seeds."""
    methods = [("peer", peer, TITLES[peer]) for peer in PEERS]
    methods += [("cmap", variant, f"cmap: {title}") for variant, (title, _) in VARIANTS.items()]
    methods += [("cmap", name, f"cmap: {name}") for name in sorted({r["method"] for r in records if r["kind"] ==
                                                                    "cmap"} - set(VARIANTS))]  # fmt: skip
    methods = [entry for entry in methods if only is None or entry[1] in only]
    directions = [d for d in DIRECTIONS if any(r["direction"] == d.name for r in records)]
    header = "| method | " + " | ".join(f"{d.title}: OA | macro F1 | seeds" for d in directions) + " |"
    lines = [header, "|---|" + "---|---|---|" * len(directions)]
    for kind, method, title in methods:
        cells = []
        for direction in directions:
            found = [r for r in records if r["kind"] == kind and r["method"] == method and r["direction"] ==
                     direction.name]  # fmt: skip
            if not found:
                cells.append("| | ")
                continue
            seeds = ", ".join(str(r["seed"]) for r in found)
            cells.append(f"{mean_std([r['oa'] for r in found])} | {mean_std([r['macro_f1'] for r in found])} | {seeds}")
        if any(cell != "| | " for cell in cells):
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join([*data_lines(summaries), "", *lines])


def write_report(records: list[dict], summaries: dict[str, dict], output: Path, readme: Path | None = None) -> None:
    """Rewrite the table between the report's markers (the rest of the file, the notes, stays), and the
    README's shorter table (:data:`README_METHODS`) between the same markers there."""
    start, end = "<!-- season-transfer-table:start -->", "<!-- season-transfer-table:end -->"
    text = output.read_text() if output.is_file() else f"# Season transfer (issue 29)\n\n{start}\n{end}\n"
    targets = [(output, text, report(records, summaries))]
    if readme is not None:
        targets.append((readme, readme.read_text(), report(records, summaries, README_METHODS)))
    for path, text, table in targets:
        head, rest = text.split(start, 1)
        path.write_text(f"{head}{start}\n{table}\n\nMachine: {machine()}\n{end}{rest.split(end, 1)[1]}")


def in_season_predictions(
    series: PixelSeries, cv_folder: Path, workdir: Path, peers: list[str]
) -> dict[str, np.ndarray]:
    """Out-of-fold predictions of every sample under the README's random split (5 stratified folds,
    seed 0: labels of every season, each sample's own season included): cmap's per seed, read from a
    ``cmap cv`` of the default recipe on the Mato Grosso store (``runs/seed{S}_fold{K}/oof.npz``), and
    each peer's, fitted here on the same folds (cached in ``workdir/in_season``)."""
    series = read_mato_grosso(RDA).series
    predictions = {}
    for saved in sorted(cv_folder.glob("runs/seed*_fold*/oof.npz")):
        run = np.load(saved)
        if not np.array_equal(run["labels"], series.labels[run["rows"]]):
            raise ValueError(f"{saved}: its rows are not those of {RDA}'s samples in order")
        seed = saved.parent.name.split("_")[0]
        table = predictions.setdefault(f"cmap {seed}", np.full(len(series), -1))
        table[run["rows"]] = run["probabilities"].argmax(axis=1)
    for peer in peers:
        cache = workdir / "in_season" / f"{peer}.npy"
        if not cache.is_file():
            table = np.full(len(series), -1)
            for fold in range(5):
                train, test = kfold_split(series, 5, fold, 0)
                subset = [PixelSeries(series.values[rows], series.days[rows], series.labels[rows], str(RDA))
                          for rows in (train, test)]  # fmt: skip
                table[test] = fit_predict(peer, *subset, seed=0).predictions
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, table)
        predictions[peer] = np.load(cache)
    return {name: table for name, table in predictions.items() if (table >= 0).all()}


def in_season_report(directions: list[Direction], cv_folder: Path, workdir: Path, records: list[dict]) -> str:
    """What the target season's own labels give on each direction's test series: OA of the random
    split's out-of-fold predictions (:func:`in_season_predictions`) over those series, beside the
    season-transfer figures; and how many of them every method misclassifies."""
    converted = read_mato_grosso(RDA)
    predictions = in_season_predictions(converted.series, cv_folder, workdir, ["multirocket", "hydra"])
    cmap_runs = [name for name in predictions if name.startswith("cmap")]
    lines = ["| direction | scored series | cmap default recipe, random split (seeds) | MultiRocket, random split | "
             "MultiRocket-Hydra, random split | best peer, season transfer | documented path, season transfer | "
             "target (best peer + 3.0) | wrong for every method |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for direction in directions:
        rows = np.flatnonzero(direction_rows(direction, converted.series)[2])
        truth = converted.series.labels[rows]
        oa = {name: float((table[rows] == truth).mean()) for name, table in predictions.items()}
        found = [r for r in records if r["direction"] == direction.name]
        best_peer = max((r["oa"] for r in found if r["kind"] == "peer"), default=float("nan"))
        adapted = [r["oa"] for r in found if r["method"] == "adapted"]
        # Misclassified by every model: each random-split cmap seed and peer, each season-transfer peer.
        folder = workdir / direction.name
        test_labels = open_store(folder / "test")[0].labels
        wrong = [table[rows] != truth for table in predictions.values()]
        wrong += [np.load(path) != test_labels for path in sorted((folder / "peers").glob("*.npy"))]
        cmap_oa = [oa[name] for name in cmap_runs]
        lines.append(
            f"| {direction.title} | {len(rows)} | {mean_std(cmap_oa)} ({len(cmap_oa)}) "
            f"| {oa.get('multirocket', 0):.4f} | {oa.get('hydra', 0):.4f} | {best_peer:.4f} "
            f"| {mean_std(adapted) if adapted else ''} "
            f"| {best_peer + 0.03:.4f} | {int(np.logical_and.reduce(wrong).sum())} of {len(rows)} |"
        )
    return "\n".join(lines)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "season_transfer")
    parser.add_argument("--directions", nargs="+", default=["to2015", "to2014"], choices=[d.name for d in DIRECTIONS])
    parser.add_argument("--variants", nargs="+", default=["baseline", "adapted"], choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--readme", default=str(REPO / "README.md"), help="the README of the short table ('': none)")
    parser.add_argument("--report_only", action="store_true")
    parser.add_argument(
        "--in_season", type=Path, default=None,
        help="a `cmap cv` output of the default recipe on the Mato Grosso store: report what random-split labels "
             "(the target season's own included) give on each direction's test series",
    )  # fmt: skip
    parser.add_argument(
        "--from_checkpoints", nargs="*", default=[],
        help="variants whose trained runs are scored again with AdaBN and TimeMatch's shift (no training)",
    )  # fmt: skip
    return parser


def main() -> None:
    args = argument_parser().parse_args()
    torch.set_num_threads(args.threads)
    scores_path = args.workdir / "scores.jsonl"
    args.workdir.mkdir(parents=True, exist_ok=True)
    directions = [d for d in DIRECTIONS if d.name in args.directions]
    summaries = {  # the report's: these directions' and those written by earlier runs
        d.name: write_stores(d, args.workdir / d.name)
        for d in DIRECTIONS
        if d in directions or (args.workdir / d.name / "summary.json").is_file()
    }
    for variant in args.from_checkpoints:
        for direction in directions:
            runs = args.workdir / "runs"
            checkpoint_records(direction, args.workdir / direction.name, runs, variant, scores_path)
    if args.in_season is not None:
        table = in_season_report(directions, args.in_season, args.workdir, read_records(scores_path))
        start, end = "<!-- in-season:start -->", "<!-- in-season:end -->"
        head, rest = args.output.read_text().split(start, 1)
        args.output.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")
        print(table)
        return
    if args.report_only or args.from_checkpoints:
        write_report(read_records(scores_path), summaries, args.output, Path(args.readme) if args.readme else None)
        return
    peers = [peer for peer in args.peers if peer == "forest" or aeon_available()]
    # The peers of every direction first (minutes), then the cmap trainings.
    jobs = [(direction, "peer", peer, 0) for direction in directions for peer in peers]
    jobs += [(direction, "cmap", variant, seed) for variant in args.variants for seed in args.seeds
             for direction in directions]  # fmt: skip
    for direction, kind, method, seed in jobs:
        folder = args.workdir / direction.name
        labels = open_store(folder / "test")[0].labels
        done = {(r["kind"], r["method"], r["direction"], r["seed"]) for r in read_records(scores_path)}
        if (kind, method, direction.name, seed) in done:
            continue
        started = time.perf_counter()
        if kind == "peer":
            predictions = peer_predictions(direction, folder, method)
        else:
            predictions = fit_cmap(direction, folder, method, seed, args.workdir / "runs")
        record = {"kind": kind, "method": method, "direction": direction.name, "seed": seed,
                  **scores(labels, predictions), "seconds": time.perf_counter() - started}  # fmt: skip
        append_record(scores_path, record)
        print(json.dumps(record), flush=True)
        write_report(read_records(scores_path), summaries, args.output, Path(args.readme) if args.readme else None)


if __name__ == "__main__":
    sys.exit(main())
