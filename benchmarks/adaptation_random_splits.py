"""Issue 29's check where there is no season shift: the documented path of a new season
(``configs/season_transfer.yaml`` with the test series as its unlabelled store) against the default
recipe (``configs/default.yaml``), on the random-split rows of the README's accuracy table.

Per split this writes, under ``--workdir``, the stores ``season_transfer.py`` uses: ``train`` (the
labelled training series), ``target`` (the test series without their labels: what a user mapping
that area gives ``cmap fit`` as ``--data.init_args.unlabelled``) and ``test`` (the same series,
labelled: the score). Both methods are ``season_transfer.py``'s ``baseline`` and ``adapted``
variants (:func:`season_transfer.fit_cmap`), trained on the same stores in the same run, one thread.

Splits: Mato Grosso's 5 stratified folds (seed 0: those of ``accuracy.py`` and the README), Victoria
and the TempCNN example (their train / test files) and UCR Crop (its train / test files). Scores are
appended to ``<workdir>/scores.jsonl`` (a rerun skips what is there); the report is rewritten after
each one.

    OMP_NUM_THREADS=1 python benchmarks/adaptation_random_splits.py --splits victoria tempcnn --seeds 0
    python benchmarks/adaptation_random_splits.py --report_only
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
from season_transfer import Direction, append_record, fit_cmap, read_records, scores, write_stores

from cmap.data import convert
from cmap.data.series import PixelSeries
from cmap.data.store import open_store, write_store
from cmap.data.ucr import UCR_CROP_CLASSES, default_ucr_crop_root, read_ucr_crop

RESULTS = REPO / "benchmarks" / "results" / "adaptation_random_splits.md"
METHODS = {"baseline": "default recipe", "adapted": "documented path (`configs/season_transfer.yaml`)"}


@dataclass(frozen=True)
class Split:
    name: str
    title: str


SPLITS = (
    *(Split(f"mato_grosso_fold{k}", f"Mato Grosso, fold {k} of 5") for k in range(5)),
    Split("victoria", "Sentinel-2 Victoria, train / test files"),
    Split("tempcnn", "TempCNN example (FORMOSAT-2), train / test files"),
    Split("ucr_crop", "UCR Crop, train / test files"),
)


def converted_pair(name: str) -> tuple[convert.Converted, convert.Converted]:
    """A train / test dataset's two files, converted as ``accuracy.py`` converts them."""
    if name == "ucr_crop":
        root = default_ucr_crop_root()
        return tuple(  # the UCRCrop data module's reading: 8 days between acquisitions
            convert.Converted(read_ucr_crop(root / f"Crop_{part}.tsv", 8), ["ndvi"], list(UCR_CROP_CLASSES))
            for part in ("TRAIN", "TEST")
        )
    reader, folder = {
        "victoria": (convert.read_victoria, "igarss2019_s2_victoria"),
        "tempcnn": (convert.read_tempcnn, "tempcnn_formosat2_example"),
    }[name]
    return reader(SHARED_DATA / folder / "train_dataset.csv"), reader(SHARED_DATA / folder / "test_dataset.csv")


def write_split(split: Split, folder: Path) -> None:
    """The split's ``train``, ``target`` (test series, no labels) and ``test`` stores (unless written)."""
    if split.name.startswith("mato_grosso_fold"):
        fold = int(split.name.removeprefix("mato_grosso_fold"))
        write_stores(Direction(split.name, split.title, (0, 9999), 0, random_fold=fold), folder)
        return
    if (folder / "test" / "metadata.json").is_file():
        return
    train, test = converted_pair(split.name)
    train.write(folder / "train")
    test.write(folder / "test")
    unlabelled = PixelSeries(test.series.values, test.series.days, None, test.series.source)
    write_store(folder / "target", unlabelled, test.band_names, [], test.time_axis, test.raw_values)


def unseen_group_records(split: Split, folder: Path, runs: Path) -> list[dict]:
    """Victoria's second row of the accuracy table: OA over the test series whose polygon (group) has no
    training series, for every trained run of the split (its last checkpoint's predictions of the test store)."""
    from cmap.data.dataset import SeriesDataset, batch_loader
    from cmap.ml.adaptation import predicted_classes
    from cmap.ml.classifiers import Classifier

    train, test = open_store(folder / "train")[0], open_store(folder / "test")[0]
    if train.groups is None or test.groups is None:
        return []
    unseen = ~np.isin(test.groups, train.groups)
    records = []
    for method in METHODS:
        for checkpoint in sorted(
            (runs / split.name / method).glob("seed*/lightning_logs/version_*/checkpoints/last.ckpt")
        ):
            model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
            loader = batch_loader(SeriesDataset(test, np.arange(len(test)), model.input_contract), 512)
            predictions = predicted_classes(model, loader).numpy()
            seed = int(checkpoint.parents[3].name.removeprefix("seed"))
            records.append({"kind": "cmap", "method": method, "direction": f"{split.name}_unseen", "seed": seed,
                            **scores(test.labels[unseen], predictions[unseen])})  # fmt: skip
    return records


def report(records: list[dict]) -> str:
    """Per split and seed: both methods' OA (macro F1) and the difference; then the mean over splits."""
    lines = [
        "| split | seed | default recipe: OA (macro F1) | documented path: OA (macro F1) | difference (OA points) |",
        "|---|---|---|---|---|",
    ]
    differences = []
    titled = [*SPLITS, Split("victoria_unseen", "Sentinel-2 Victoria, test pixels of unseen polygons")]
    for split in titled:
        for seed in sorted({r["seed"] for r in records if r["direction"] == split.name}):
            found = {r["method"]: r for r in records if r["direction"] == split.name and r["seed"] == seed}
            cells = [f"{found[m]['oa']:.4f} ({found[m]['macro_f1']:.4f})" if m in found else "" for m in METHODS]
            difference = ""
            if len(found) == len(METHODS):
                differences.append(100 * (found["adapted"]["oa"] - found["baseline"]["oa"]))
                difference = f"{differences[-1]:+.2f}"
            lines.append(f"| {split.title} | {seed} | {cells[0]} | {cells[1]} | {difference} |")
    if differences:
        lines += ["", f"Pairs: {len(differences)}; worst difference {min(differences):+.2f} points, "
                  f"mean {np.mean(differences):+.2f}."]  # fmt: skip
    return "\n".join(lines)


def write_report(records: list[dict], output: Path) -> None:
    start, end = "<!-- adaptation-random-splits:start -->", "<!-- adaptation-random-splits:end -->"
    text = (
        output.read_text() if output.is_file() else f"# The documented path without a season shift\n\n{start}\n{end}\n"
    )
    head, rest = text.split(start, 1)
    output.write_text(f"{head}{start}\n{report(records)}\n\nMachine: {machine()}\n{end}{rest.split(end, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "adaptation_random_splits")
    parser.add_argument("--splits", nargs="+", default=[s.name for s in SPLITS], choices=[s.name for s in SPLITS])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--report_only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scores_path = args.workdir / "scores.jsonl"
    args.workdir.mkdir(parents=True, exist_ok=True)
    splits = [] if args.report_only else [s for s in SPLITS if s.name in args.splits]
    for split in splits:
        folder = args.workdir / split.name
        write_split(split, folder)
        labels = open_store(folder / "test")[0].labels
        for seed in args.seeds:
            for method in args.methods:
                done = {(r["method"], r["direction"], r["seed"]) for r in read_records(scores_path)}
                if (method, split.name, seed) in done:
                    continue
                started = time.perf_counter()
                predictions = fit_cmap(split, folder, method, seed, args.workdir / "runs")
                record = {"kind": "cmap", "method": method, "direction": split.name, "seed": seed,
                          **scores(labels, predictions), "seconds": time.perf_counter() - started}  # fmt: skip
                append_record(scores_path, record)
                print(json.dumps(record), flush=True)
                write_report(read_records(scores_path), args.output)
    records = read_records(scores_path)
    victoria = next(split for split in SPLITS if split.name == "victoria")
    if (args.workdir / "victoria" / "test").is_dir():
        records += unseen_group_records(victoria, args.workdir / "victoria", args.workdir / "runs")
    write_report(records, args.output)


if __name__ == "__main__":
    sys.exit(main())
