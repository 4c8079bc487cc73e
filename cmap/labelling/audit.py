"""``cmap audit``: the labelled samples of a store whose given label is doubtful, ranked, with the
suggested label and the evidence; per-class noise estimates; optionally a cleaned copy of the store.

Two methods (``--method``):

- ``som`` (the default without ``--probabilities``): a self-organising map of the samples, as R
  sits' ``sits_som_clean_samples`` (:mod:`cmap.labelling.som`): a sample is doubtful when its label
  is rare on its neuron and the neuron's neighbourhood. No classifier, seconds; on the shared data
  it flagged flipped labels with higher precision than confident learning and its retrain recovered
  more (``benchmarks/results/samples.md``).
- ``confident_learning``: cross-validated class probabilities of every labelled sample, from ``cmap
  cv``'s ``oof_probabilities.csv`` (``--probabilities``: a deep model, every seed's mean) or from a
  random forest fitted here on the same folds (:mod:`cmap.labelling.peer`); cleanlab's
  ``find_label_issues`` (Northcutt et al. 2021) flags the samples whose given label the out-of-fold
  probabilities contradict, beyond each class's own confidence threshold.

Either way the flags are ranked by self-confidence (the given label's probability, or its share in
the neighbourhood), lowest first.

Outputs: ``OUTPUT`` (CSV: ``row``, ``sample_id``, ``rank``, ``label``, ``suggested_label``,
``self_confidence``, ``suggested_probability``, ``agreement`` (the share of the out-of-fold models, trees
or seeds, that predict the given label; with ``som``, the given label's share on the sample's own
neuron), plus ``longitude``/``latitude`` with ``--coordinates``), a GeoPackage beside it with
``--coordinates``, and ``<OUTPUT stem>_classes.csv``: per class, the labelled and flagged samples
and the estimated share of wrong labels (cleanlab's, or the flagged share with ``som``).
``--clean_store OUT`` writes a new store with the flagged samples removed (``--action remove``) or
relabelled with the suggested label (``--action relabel``); the original store is only read.

::

    cmap audit runs/stores/mato_grosso audit.csv                        # a self-organising map
    cmap audit runs/stores/mato_grosso audit.csv --probabilities runs/cv_mato_grosso/oof_probabilities.csv
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmap.labelling.tables import check_table_output, read_coordinates, sample_ids, write_csv, write_outputs
from cmap.outputs import InputError, MissingInput, check_outputs


@dataclass
class Audit:
    """Out-of-fold evidence and flags of the labelled rows of a store (arrays over those rows)."""

    rows: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    agreement: np.ndarray
    flagged: np.ndarray  # indices into rows, ranked (most doubtful first)
    noise: np.ndarray  # per class: estimated share of its given labels that are wrong


def parse(args: list[str], prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description="the doubtful labels of a store, ranked")
    parser.add_argument("store", type=Path, help="the labelled store")
    parser.add_argument("output", type=Path, help="CSV of the flagged samples (a .gpkg beside it with --coordinates)")
    parser.add_argument(
        "--method",
        choices=["som", "confident_learning"],
        help="som (default) or confident_learning (the default with --probabilities)",
    )
    parser.add_argument("--probabilities", type=Path, help="cmap cv's oof_probabilities.csv (else --model peer)")
    parser.add_argument("--model", choices=["peer"], default="peer", help="out-of-fold model when no --probabilities")
    parser.add_argument("--folds", type=int, default=5, help="folds of the peer (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the map, or of the peer's folds and forest")
    parser.add_argument("--coordinates", type=Path, help="table of sample_id (or row), longitude, latitude")
    parser.add_argument("--crs", default="EPSG:4326", help="CRS of the coordinates (default %(default)s)")
    parser.add_argument("--clean_store", type=Path, help="write a cleaned copy of the store here")
    parser.add_argument("--action", choices=["remove", "relabel"], default="remove", help="for --clean_store")
    options = parser.parse_args(args)
    check_table_output(options.output)  # before the folds run
    if options.method == "som" and options.probabilities:
        raise InputError("--probabilities is read by --method confident_learning, not by --method som")
    options.method = options.method or ("confident_learning" if options.probabilities else "som")
    return options


def read_probabilities(path: Path, ids: np.ndarray, labels: np.ndarray, class_names: list[str]) -> tuple:
    """Probabilities (N, K) and agreement (N,) of the store's rows from ``cmap cv``'s table (NaN where absent)."""
    if not path.is_file():
        raise MissingInput(
            f"{path}: out-of-fold probabilities not found (--probabilities: cmap cv's oof_probabilities.csv)"
        )
    table = pd.read_csv(path, dtype={"sample_id": str})
    columns = [f"probability/{name}" for name in class_names]
    missing = [name for name in ["row", "sample_id", "label", *columns] if name not in table.columns]
    if missing:
        raise InputError(f"{path}: columns {missing} missing: expected cmap cv's oof_probabilities.csv of this store")
    rows = table["row"].to_numpy()
    if ((rows < 0) | (rows >= len(ids))).any() or (
        table["sample_id"].to_numpy() != ids[np.clip(rows, 0, len(ids) - 1)]
    ).any():
        bad = int(
            np.flatnonzero(
                (rows < 0) | (rows >= len(ids)) | (table["sample_id"].to_numpy() != ids[np.clip(rows, 0, len(ids) - 1)])
            )[0]
        )
        raise InputError(
            f"{path}: row {bad}: sample_id {table['sample_id'].iloc[bad]!r} is not the store's row {rows[bad]}"
        )
    given = np.array([class_names[k] for k in labels[rows]])
    if (table["label"].to_numpy() != given).any():
        bad = int(np.flatnonzero(table["label"].to_numpy() != given)[0])
        raise InputError(f"{path}: row {bad}: label {table['label'].iloc[bad]!r}, but the store says {given[bad]!r}")
    probabilities = np.full((len(ids), len(class_names)), np.nan)
    probabilities[rows] = table[columns].to_numpy(np.float64)
    agreement = np.full(len(ids), np.nan)
    fallback = probabilities[rows].argmax(axis=1) == labels[rows]
    agreement[rows] = table["agreement"].to_numpy() if "agreement" in table.columns else fallback
    return probabilities, agreement


def find_issues(
    labels: np.ndarray, probabilities: np.ndarray, filter_by: str = "prune_by_noise_rate"
) -> tuple[np.ndarray, np.ndarray]:
    """Flagged indices (ranked, most doubtful first) and per-class estimated noise (share of wrong
    given labels) by confident learning (cleanlab's ``filter_by`` rule); classes absent from
    ``labels`` get noise 0."""
    from cleanlab.count import compute_confident_joint, estimate_latent
    from cleanlab.filter import find_label_issues

    num_classes = probabilities.shape[1]
    present = np.unique(labels)
    index = np.full(num_classes, -1)
    index[present] = np.arange(len(present))  # cleanlab wants every class 0..K-1 present
    local = probabilities[:, present]
    local = local / np.clip(local.sum(axis=1, keepdims=True), 1e-12, None)
    local_labels = index[labels]
    flagged = find_label_issues(local_labels, local, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    joint = compute_confident_joint(local_labels, local)
    _, _, inverse = estimate_latent(joint, local_labels)  # inverse[j, k]: P(true j | given k)
    noise = np.zeros(num_classes)
    noise[present] = 1 - np.diag(inverse)
    return np.asarray(flagged, dtype=np.int64), noise


def audit(series, class_names: list[str], probabilities: np.ndarray, agreement: np.ndarray) -> Audit:
    """Confident learning over the labelled rows with out-of-fold probabilities."""
    labelled = (series.labels >= 0) & np.isfinite(probabilities).all(axis=1)
    rows = np.flatnonzero(labelled)
    labels = series.labels[rows]
    flagged, noise = find_issues(labels, probabilities[rows])
    return Audit(rows, labels, probabilities[rows], agreement[rows], flagged, noise)


def som_audit(series, num_classes: int, seed: int) -> Audit:
    """The self-organising map's flags over the labelled rows; noise: each class's flagged share."""
    from cmap.labelling.peer import features
    from cmap.labelling.som import som_issues

    rows = np.flatnonzero(series.labels >= 0)
    labels = series.labels[rows]
    flagged, shares, own = som_issues(features(series)[rows], labels, num_classes, seed)
    given = np.bincount(labels, minlength=num_classes)
    noise = np.bincount(labels[flagged], minlength=num_classes) / np.maximum(given, 1)
    return Audit(rows, labels, shares, own[np.arange(len(rows)), labels], flagged, noise)


def class_evidence(options, series, ids: np.ndarray, class_names: list[str]) -> Audit:
    """The audit of ``--method``: the map, or confident learning on read or peer probabilities."""
    if options.method == "som":
        return som_audit(series, len(class_names), options.seed)
    if options.probabilities:
        probabilities, agreement = read_probabilities(options.probabilities, ids, series.labels, class_names)
    else:
        from cmap.labelling.peer import out_of_fold

        probabilities, agreement, _ = out_of_fold(series, len(class_names), options.folds, options.seed)
    return audit(series, class_names, probabilities, agreement)


def flagged_table(result: Audit, ids: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """The flagged samples, ranked: ids, given and suggested labels, the evidence."""
    at = result.flagged
    probabilities = result.probabilities[at]
    suggested = probabilities.argmax(axis=1)
    return pd.DataFrame(
        {
            "row": result.rows[at],
            "sample_id": ids[result.rows[at]],
            "rank": np.arange(1, len(at) + 1),
            "label": [class_names[k] for k in result.labels[at]],
            "suggested_label": [class_names[k] for k in suggested],
            "self_confidence": probabilities[np.arange(len(at)), result.labels[at]],
            "suggested_probability": probabilities.max(axis=1),
            "agreement": result.agreement[at],
        }
    )


def class_table(result: Audit, class_names: list[str]) -> pd.DataFrame:
    """Per class: labelled and flagged samples, estimated share of wrong labels (cleanlab)."""
    labelled = np.bincount(result.labels, minlength=len(class_names))
    flagged = np.bincount(result.labels[result.flagged], minlength=len(class_names))
    return pd.DataFrame(
        {"class": class_names, "labelled": labelled, "flagged": flagged, "estimated_noise": result.noise}
    )


def write_clean_store(store: Path, output: Path, series, metadata: dict, result: Audit, action: str) -> Path:
    """A new store without the flagged samples (``remove``) or with their suggested labels (``relabel``)."""
    from cmap.data.series import PixelSeries
    from cmap.data.store import store_raw_values, store_time_axis, write_store

    flagged_rows = result.rows[result.flagged]
    labels = np.array(series.labels, copy=True)
    if action == "relabel":
        labels[flagged_rows] = result.probabilities[result.flagged].argmax(axis=1)
        keep = np.arange(len(series))
    else:
        keep = np.setdiff1d(np.arange(len(series)), flagged_rows)
    ids = None if series.sample_ids is None else np.asarray(series.sample_ids[:])[keep]
    groups = None if series.groups is None else series.groups[keep]
    cleaned = PixelSeries(
        np.asarray(series.values[keep]), np.asarray(series.days[keep]), labels[keep], str(store), groups, ids
    )
    return write_store(
        output,
        cleaned,
        metadata["band_names"],
        metadata["class_names"],
        store_time_axis(metadata),
        store_raw_values(metadata),
    )


def main(args: list[str] | None = None, prog: str = "cmap audit") -> pd.DataFrame:
    """Run ``cmap audit``; returns the flagged samples' table."""
    from cmap.data.store import open_store

    options = parse(list(args or []), prog)
    try:
        import cleanlab  # noqa: F401
        import minisom  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as error:
        raise InputError(
            f'cmap audit needs the labelling extra ({error.name} missing): pip install -e ".[labelling]"'
        ) from None
    if not (options.store / "metadata.json").is_file():
        raise MissingInput(f"{options.store}: not a store (no metadata.json); write one with cmap convert")
    series, metadata = open_store(options.store)
    class_names = list(metadata["class_names"])
    if series.labels is None or (series.labels < 0).all():
        raise InputError(
            f"{options.store / 'labels.npy'}: field labels: the store has no labelled series; an audit needs labels"
        )
    inputs = [options.store] + [path for path in (options.probabilities, options.coordinates) if path]
    if options.clean_store:
        check_outputs([options.clean_store], [*inputs, options.output], lambda _: False, "cleaned store")
    ids = sample_ids(series)
    coordinates = None if options.coordinates is None else read_coordinates(options.coordinates, ids)
    result = class_evidence(options, series, ids, class_names)
    table = flagged_table(result, ids, class_names)
    flagged_rows = result.rows[result.flagged]
    write_outputs(
        table, options.output, inputs, None if coordinates is None else coordinates[flagged_rows], options.crs
    )
    write_csv(class_table(result, class_names), options.output.with_name(f"{options.output.stem}_classes.csv"))
    print(class_table(result, class_names).to_string(index=False, float_format="%.3f"))
    print(
        f"cmap audit: {len(table)} of {len(result.rows)} labelled samples flagged ({options.method}) -> "
        f"{options.output}",
        flush=True,
    )
    if options.clean_store:
        write_clean_store(options.store, options.clean_store, series, metadata, result, options.action)
        print(f"cmap audit: cleaned store ({options.action}) -> {options.clean_store}", flush=True)
    return table
