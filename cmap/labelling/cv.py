"""``cmap cv``: k-fold cross-validation of a config on a store in one command (as R sits'
``sits_kfold_validate``).

For every seed and fold, one ``cmap fit`` of the config through LightningCLI in this process
(:class:`~cmap.lightning_cli.CMapCLI`, with ``--data.init_args.fold k --data.init_args.num_folds F
--seed_everything S``): the folds are the data module's own (:func:`~cmap.data.splits.kfold_split`:
whole groups when the store has groups, stratified by class otherwise; dealt by the data module's
``seed``, 0 unless the config sets it), so the figures are those of ``benchmarks/accuracy.py``. The
trained model then predicts its held-out fold. Outputs, in ``OUTPUT``:

- ``cv_report.md``, ``cv_scores.csv`` (per seed, fold and class), ``cv_pooled.csv`` (pooled per seed),
  ``cv_confusion.csv`` and ``cv_report.png``;
- ``oof_probabilities.csv``: every sample's out-of-fold class probabilities (mean over seeds),
  keyed by ``row`` and ``sample_id`` (the store's ids, or its row numbers), which ``cmap audit`` reads;
- ``runs/seed{S}_fold{K}/``: each fit's run folder and its ``oof.npz``. A fold already done (its
  ``oof.npz`` present) is not trained again: an interrupted ``cmap cv`` resumes where it stopped.

::

    cmap cv runs/stores/mato_grosso runs/cv_mato_grosso --config configs/default.yaml --seeds 0 1 2 --threads 1
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from cmap.config_limits import load_yaml_file
from cmap.labelling.tables import sample_ids, write_csv
from cmap.outputs import InputError, MissingInput, check_outputs


def parse(args: list[str], prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description="k-fold cross-validation of a config on a store")
    parser.add_argument("store", type=Path, help="the labelled store (cmap convert)")
    parser.add_argument("output", type=Path, help="folder of the report, the out-of-fold table and the runs")
    parser.add_argument(
        "--config", type=Path, default=Path("configs/default.yaml"), help="the recipe (default: %(default)s)"
    )
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seed_everything of each repetition (default 0)"
    )
    parser.add_argument(
        "--only_folds", type=int, nargs="+", default=None, help="train these folds only (a partial run)"
    )
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads of each fit")
    parser.epilog = "after --: more LightningCLI arguments for every fit, e.g. -- --trainer.max_epochs 80"
    split = args.index("--") if "--" in args else len(args)
    options = parser.parse_args(args[:split])
    options.overrides = args[split + 1 :]
    if options.folds < 2:
        raise InputError(f"--folds must be >= 2, got {options.folds}")
    if not options.config.is_file():
        raise MissingInput(f"{options.config}: config not found (--config)")
    return options


def fit_arguments(options: argparse.Namespace, fold: int, seed: int, root: Path) -> list[str]:
    """``cmap fit`` arguments of one fold: the config (with ``cmap.data.SeriesStore`` when it holds no
    data module, as the default recipe), the store, the fold, the seed and a quiet trainer."""
    config = load_yaml_file(options.config) or {}  # bounded as every config cmap reads
    data = [] if config.get("data") else ["--data", "cmap.data.SeriesStore"]
    if ((config.get("data") or {}).get("init_args") or {}).get("test_path"):
        data += ["--data.init_args.test_path", "null"]
    arguments = [
        "fit",
        "--config",
        str(options.config),
        *data,
        "--data.init_args.path",
        str(options.store),
        "--data.init_args.fold",
        str(fold),
        "--data.init_args.num_folds",
        str(options.folds),
        "--seed_everything",
        str(seed),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]
    if options.threads:
        arguments += ["--threads", str(options.threads)]
    return arguments + options.overrides


def run_fold(options: argparse.Namespace, fold: int, seed: int) -> dict[str, np.ndarray]:
    """One fit on every fold but ``fold``, and its probabilities of the held-out fold's series
    (``rows``: their store rows); saved as ``oof.npz`` in the fold's run folder, or read from it."""
    import torch

    from cmap.lightning_cli import CMapCLI

    root = options.output / "runs" / f"seed{seed}_fold{fold}"
    saved = root / "oof.npz"
    if saved.is_file():
        print(f"cmap cv: seed {seed} fold {fold}: done before, read from {saved}", flush=True)
        return dict(np.load(saved, allow_pickle=False))
    cli = CMapCLI(args=fit_arguments(options, fold, seed, root))
    data = cli.datamodule
    outputs = cli.trainer.predict(cli.model, datamodule=data)
    probabilities = torch.cat([output["probabilities"] for output in outputs]).float().numpy()
    from cmap.data.splits import kfold_split

    rows = kfold_split(data._series, options.folds, fold, data.seed)[1]  # the rows of the data module's test split
    labels = data.datasets["test"].labels
    if len(rows) != len(probabilities):
        raise RuntimeError(f"fold {fold}: {len(probabilities)} predictions for {len(rows)} held-out rows")
    result = {"rows": rows, "probabilities": probabilities, "labels": labels, "class_names": np.array(data.class_names)}
    root.mkdir(parents=True, exist_ok=True)
    partial = root / ".oof.partial.npz"
    np.savez(partial, **result)
    partial.replace(saved)
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    print(
        f"cmap cv: seed {seed} fold {fold}: OA {accuracy:.4f} on {len(rows)} held-out series ({cli.trainer.log_dir})",
        flush=True,
    )
    return result


def collect(
    runs: dict[tuple[int, int], dict], num_series: int
) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray, list[str]]:
    """Probabilities (N, K) per seed (NaN where not held out), labels (N,) and folds (N,: -1 = in no fold)."""
    class_names = [str(name) for name in next(iter(runs.values()))["class_names"]]
    labels, folds = np.full(num_series, -1), np.full(num_series, -1)
    probabilities: dict[int, np.ndarray] = {}
    for (seed, fold), run in runs.items():
        table = probabilities.setdefault(seed, np.full((num_series, len(class_names)), np.nan))
        table[run["rows"]] = run["probabilities"]
        labels[run["rows"]], folds[run["rows"]] = run["labels"], fold
    return probabilities, labels, folds, class_names


def oof_table(
    ids: np.ndarray, probabilities: dict[int, np.ndarray], labels: np.ndarray, folds: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """Every held-out sample: row, sample_id, label, fold, predicted class, confidence, probabilities
    (mean over seeds)."""
    held = np.flatnonzero(folds >= 0)
    mean = np.mean([p[held] for p in probabilities.values()], axis=0)
    table = pd.DataFrame(
        {
            "row": held,
            "sample_id": ids[held],
            "label": [class_names[k] for k in labels[held]],
            "fold": folds[held],
            "predicted": [class_names[k] for k in mean.argmax(axis=1)],
            "confidence": mean.max(axis=1),
            # the share of seeds whose model predicts the given label: cmap audit's out-of-fold agreement
            "agreement": np.mean([p[held].argmax(axis=1) == labels[held] for p in probabilities.values()], axis=0),
        }
    )
    for k, name in enumerate(class_names):
        table[f"probability/{name}"] = mean[:, k]
    return table


def main(args: list[str] | None = None, prog: str = "cmap cv") -> pd.DataFrame:
    """Run ``cmap cv``; returns the pooled scores (one row per seed)."""
    from cmap.data.store import open_store
    from cmap.labelling import scores

    options = parse(list(args or []), prog)
    if not (options.store / "metadata.json").is_file():
        raise MissingInput(f"{options.store}: not a store (no metadata.json); write one with cmap convert")
    series = open_store(options.store)[0]
    if series.labels is None or (series.labels < 0).all():
        raise InputError(
            f"{options.store}: labels.npy: the store has no labels; cross-validation needs labelled series"
        )
    check_outputs(
        [options.output], [options.store, options.config], lambda path: path.is_dir(), "cross-validation folder"
    )
    folds_to_run = options.only_folds or list(range(options.folds))
    runs = {(seed, fold): run_fold(options, fold, seed) for seed in options.seeds for fold in folds_to_run}
    probabilities, labels, folds, class_names = collect(runs, len(series))
    seeds = " ".join(map(str, options.seeds))
    title = f"cmap cv: {options.config} on {options.store}, {options.folds} folds, seeds {seeds}"
    if options.only_folds:
        title += f" (folds {' '.join(map(str, folds_to_run))} only)"
    folds_table = scores.fold_table(probabilities, labels, folds, class_names)
    pooled = scores.pooled_table(probabilities, labels, folds, len(class_names))
    held = folds >= 0
    matrix = sum(
        scores.confusion(labels[held], p[held].argmax(axis=1), len(class_names)) for p in probabilities.values()
    )
    out = options.output
    write_csv(folds_table, out / "cv_scores.csv")
    write_csv(pooled, out / "cv_pooled.csv")
    write_csv(
        pd.DataFrame(matrix, index=class_names, columns=class_names).rename_axis("reference").reset_index(),
        out / "cv_confusion.csv",
    )
    write_csv(oof_table(sample_ids(series), probabilities, labels, folds, class_names), out / "oof_probabilities.csv")
    from cmap.outputs import write_bytes_atomically

    write_bytes_atomically(
        out / "cv_report.md", scores.report_markdown(folds_table, pooled, matrix, class_names, title).encode()
    )
    scores.plot(matrix, class_names, folds_table, out / "cv_report.png")
    print(pooled.to_string(index=False, float_format="%.4f"))
    print(
        f"cmap cv: report {out / 'cv_report.md'}, out-of-fold probabilities {out / 'oof_probabilities.csv'}", flush=True
    )
    return pooled
