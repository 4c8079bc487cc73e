"""``cmap suggest`` with cmap's own network in the loop, as a user runs it: each round ``cmap fit`` of the
default recipe (``configs/default.yaml``) on the labelled series, then ``cmap suggest`` (its default,
``--diversity gradients`` in 64 principal components; ``--components 0``; ``--diversity clusters``) of
the next 5 x classes series of the pool, against random picks at the same budget; test OA of each
round's model. From 10 labels per class, 5 rounds: :mod:`samples_active`'s protocol, with the network
instead of the logistic regression on MiniRocket features. Datasets as :mod:`samples_data` splits them
(Mato Grosso: fold 0 of the 5 stratified folds as test set, the rest as pool; UCR Crop: its training
file as pool).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/samples_network.py [--dataset "UCR Crop"] [--draws 5]
[--threads 1]``: writes ``benchmarks/results/samples_network.md`` (Mato Grosso; another dataset:
``samples_network_<dataset>.md``) and its figures in the ``.json`` beside it (a draw already measured
there is read back, not trained again). One fit of a few hundred series takes one to two minutes at
one thread (the recipe trains at least 2,000 steps).
"""

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from samples_data import LOADERS, REPO

from cmap.data import convert
from cmap.data.series import PixelSeries
from cmap.data.splits import per_class_subset
from cmap.data.store import write_store

#: random picks, and cmap suggest with its default (gradients in 64 principal components) or with the options
#: after "cmap suggest" (--components 0: the last layer's inputs as they are).
STRATEGIES = ("random", "cmap suggest", "cmap suggest --diversity clusters", "cmap suggest --components 0")


def fit_and_score(train: Path, test: Path, test_series, root: Path, seed: int, threads: int):
    """``cmap fit`` of the default recipe on ``train`` (``test``: the store of ``test_series``); its last
    checkpoint and test OA."""
    from cmap.labelling.suggest import predict
    from cmap.lightning_cli import CMapCLI

    arguments = ["fit", "--config", str(REPO / "configs/default.yaml"), "--data", "cmap.data.SeriesStore",
                 "--data.init_args.path", str(train), "--data.init_args.test_path", str(test),
                 "--seed_everything", str(seed), "--trainer.default_root_dir", str(root), "--threads", str(threads),
                 "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
    cli = CMapCLI(args=arguments)
    probabilities = predict(cli.model.eval(), test_series, np.arange(len(test_series)), 256)[0]
    checkpoint = next(root.rglob("last.ckpt"))
    return checkpoint, float((probabilities.argmax(axis=1) == test_series.labels).mean())


@dataclasses.dataclass
class Dataset:
    """A pool and a test set, with what their stores are written with (bands, classes, time axis, scale)."""

    name: str
    pool: PixelSeries
    test: PixelSeries
    converted: convert.Converted


def one_draw(draw: int, strategy: str, data: Dataset, work: Path, threads: int) -> list[float]:
    """Test OA per round of one draw of ``strategy``."""
    from cmap.cli import main as cmap_main

    pool, test, converted = data.pool, data.test, data.converted
    k = len(converted.class_names)

    def write(folder: Path, series) -> Path:
        write_store(folder, series, converted.band_names, converted.class_names, converted.time_axis,
                    converted.raw_values, overwrite=True)  # fmt: skip
        return folder

    test_store = write(work / "test", test)
    labelled, rng, scores = per_class_subset(pool.labels, 10, draw), np.random.default_rng(draw), []
    for round_ in range(6):
        step = work / f"{strategy.replace(' ', '_').replace('-', '')}_draw{draw}_round{round_}"
        train_store = write(step / "train", pool.subset(labelled))
        checkpoint, accuracy = fit_and_score(train_store, test_store, test, step / "run", draw, threads)
        scores.append(accuracy)
        print(f"{data.name}, network: {strategy} draw {draw} round {round_}: {len(labelled)} labels, OA {accuracy:.4f}")
        if round_ == 5:
            break
        if strategy == "random":
            candidates = np.setdiff1d(np.arange(len(pool)), labelled)
            new = rng.choice(candidates, 5 * k, replace=False)
        else:  # the pool with the labelled series' labels and -1 elsewhere: cmap suggest's candidates
            hidden = np.full(len(pool), -1)
            hidden[labelled] = pool.labels[labelled]
            candidates_store = write(step / "pool", dataclasses.replace(pool, labels=hidden))
            suggestions = step / "next.csv"
            options = ["--n", str(5 * k), *strategy.split()[2:]]
            cmap_main(["suggest", str(checkpoint), str(candidates_store), str(suggestions), *options])
            new = pd.read_csv(suggestions)["row"].to_numpy()
        labelled = np.concatenate([labelled, new])
    return scores


def report(measured: dict, data: Dataset, output: Path) -> list[str]:
    classes = len(data.converted.class_names)
    budget = [(10 + 5 * i) * classes for i in range(6)]
    split = {"Mato Grosso": "fold 0 of 5 as test set"}.get(data.name, "its test file as test set")
    option = "" if data.name == "Mato Grosso" else f" --dataset '{data.name}'"
    lines = [
        "# `cmap suggest` with cmap's network in the loop",
        "",
        f"{data.name} ({split}, {len(data.test)} series; {len(data.pool)} series as pool), from 10 labels per "
        "class, 5 rounds of 5 per class; each round `cmap fit` of `configs/default.yaml` on the labelled series "
        "(seed = draw) and `cmap suggest` (its default, `--diversity gradients` in 64 principal components of the "
        "last layer's inputs; `--components 0`: in the inputs as they are; or `--diversity clusters`) or "
        f"random picks. Command: `OMP_NUM_THREADS=1 python benchmarks/samples_network.py{option} --threads 1`; "
        f"per-draw figures in `{output.with_suffix('.json').name}`.",
        "",
        "| strategy | draws | " + " | ".join(f"{n} labels" for n in budget) + " | final gain (per draw) |",
        "|---" * 9 + "|",
    ]
    draws = sorted(set(measured["random"]) & set(measured.get("cmap suggest", {})))
    random_final = np.array([measured["random"][d][-1] for d in draws])
    for strategy in [s for s in STRATEGIES if set(draws) <= set(measured.get(s, {}))]:
        curves = np.array([measured[strategy][d] for d in draws])
        gain = (curves[:, -1] - random_final) * 100
        per_draw = "" if strategy == "random" else f"{gain.mean():+.2f} ({', '.join(f'{g:+.2f}' for g in gain)})"
        mean = curves.mean(axis=0)
        lines.append(f"| {strategy} | {len(draws)} | " + " | ".join(f"{v:.4f}" for v in mean) + f" | {per_draw} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["Mato Grosso", "UCR Crop"], default="Mato Grosso")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=STRATEGIES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None, help="default: results/samples_network[_<dataset>].md")
    options = parser.parse_args()
    suffix = "" if options.dataset == "Mato Grosso" else "_" + options.dataset.lower().replace(" ", "_")
    output = options.output or REPO / f"benchmarks/results/samples_network{suffix}.md"
    figures = output.with_suffix(".json")
    measured = json.loads(figures.read_text()) if figures.is_file() else {}
    data = Dataset(options.dataset, *LOADERS[options.dataset]())
    with tempfile.TemporaryDirectory() as work:
        for draw in range(options.draws):
            for strategy in [s for s in STRATEGIES if s in options.strategies]:
                if str(draw) not in measured.setdefault(strategy, {}):
                    measured[strategy][str(draw)] = one_draw(draw, strategy, data, Path(work), options.threads)
                    figures.write_text(json.dumps(measured, indent=1) + "\n")
    lines = report(measured, data, output)
    output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
