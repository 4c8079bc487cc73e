"""``cmap suggest``: the N series of a store to label next, by a trained classifier (a ``cmap fit``
checkpoint), chosen uncertain and diverse (:mod:`cmap.labelling.selection`):

- ``--diversity gradients`` (the default; BADGE): k-means++ seeding in the gradient embedding of the
  classifier's last layer (its inputs in ``--components`` principal components, 64 by default),
  uncertainty and diversity in one rule (``benchmarks/samples.py``);
- ``--diversity clusters``: the most uncertain (``--measure margin|entropy|least_confidence``, as R
  sits' ``sits_uncertainty_sampling``) of each of N k-means clusters of the 10 N most uncertain, in
  ``--space embedding`` (the encoder's features averaged over the dates) or ``--space coordinates``
  (longitude/latitude from ``--coordinates``);
- ``--diversity distance``: the most uncertain at least ``--min_distance`` apart in ``--space``, and
  with ``--balanced`` at most N / classes of each predicted class.

``cmap suggest --map MAP.tif OUTPUT``: the pixels of a crop map instead, from the class probabilities
beside it (:mod:`cmap.labelling.map_candidates`).

Candidates: the store's unlabelled series (label -1), or every series of a store without labels.
Outputs: ``OUTPUT`` (CSV: ``row``, ``sample_id``, ``rank``, ``predicted``, ``confidence``,
``uncertainty``, the class probabilities, and ``longitude``/``latitude`` with ``--coordinates``) and
a GeoPackage of points beside it with ``--coordinates``: ready for a field campaign or QGIS.

::

    cmap suggest run/checkpoints/last.ckpt data/area_pixels suggestions.csv --n 50 \\
        --coordinates data/area_pixels_xy.csv
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from cmap.labelling.selection import MEASURES, auto_distance, cluster_select, gradient_select, select, uncertainty
from cmap.labelling.tables import check_table_output, read_coordinates, sample_ids, write_outputs
from cmap.outputs import InputError, MissingInput

#: --components' default: 64 principal components of the last layer's inputs, as benchmarks/samples.py's
#: loop counts them (+2.04 / +2.62 over random); with the network in the loop, +1.52 over random against
#: +1.26 with the 256 inputs as they are (benchmarks/results/samples_network.md, 5 draws).
GRADIENT_COMPONENTS = 64


def add_selection_arguments(parser: argparse.ArgumentParser, diversity: str, space: str) -> None:
    """The options of both paths: how many, and how uncertain and diverse (``diversity``, ``space``: defaults)."""
    parser.add_argument("--n", type=int, default=50, help="how many series or pixels (default 50)")
    parser.add_argument(
        "--diversity",
        choices=["gradients", "clusters", "distance"],
        default=diversity,
        help="gradients: k-means++ in the last layer's gradient embedding (BADGE); clusters: the most "
        "uncertain of each k-means cluster of the uncertain; distance: the most uncertain, --min_distance apart "
        f"(default {diversity})",
    )
    parser.add_argument(
        "--measure", choices=MEASURES, default="margin", help="uncertainty of clusters and distance (default margin)"
    )
    parser.add_argument(
        "--space",
        choices=["embedding", "coordinates"],
        default=space,
        help=f"where clusters and distances count (default {space})",
    )
    parser.add_argument(
        "--min_distance",
        default="auto",
        help="with --diversity distance: minimum distance between suggestions in --space; auto: from the data",
    )
    parser.add_argument(
        "--balanced", action="store_true", help="with --diversity distance: at most n / classes per predicted class"
    )


def parse(args: list[str], prog: str) -> argparse.Namespace:
    if any(arg == "--map" or arg.startswith("--map=") for arg in args):
        return parse_map(args, prog)
    parser = argparse.ArgumentParser(
        prog=prog,
        description="the series to label next: uncertain and diverse; or, with --map MAP.tif OUTPUT, the pixels of a "
        "crop map",
    )
    parser.add_argument("checkpoint", type=Path, help="a cmap fit checkpoint of a Classifier")
    parser.add_argument(
        "store", type=Path, help="the candidate series (unlabelled ones, or all of an unlabelled store)"
    )
    parser.add_argument("output", type=Path, help="CSV of the suggestions (a .gpkg beside it with --coordinates)")
    parser.add_argument(
        "--map", type=Path, help="instead of CHECKPOINT STORE: the pixels of a cmap map (its MAP_probs.tif beside it)"
    )
    add_selection_arguments(parser, "gradients", "embedding")
    parser.add_argument(
        "--components",
        type=int,
        default=None,
        help="with --diversity gradients: count the gradient embedding in this many principal components of "
        f"the last layer's inputs, 0: the inputs as they are (default {GRADIENT_COMPONENTS})",
    )
    parser.add_argument("--coordinates", type=Path, help="table of sample_id (or row), longitude, latitude")
    parser.add_argument("--crs", default="EPSG:4326", help="CRS of the coordinates (default %(default)s)")
    parser.add_argument("--batch_size", type=int, default=256)
    options = parser.parse_args(args)
    check_table_output(options.output)  # before the model runs
    if options.map is not None:  # an abbreviation of --map (--ma): not with CHECKPOINT STORE
        raise InputError(f"with --map, only OUTPUT is positional (no CHECKPOINT STORE), got {options.checkpoint}")
    check_selection(options)
    if options.diversity == "gradients" and options.space == "coordinates":
        raise InputError("--space coordinates applies to --diversity clusters or distance, not to gradients")
    if options.components is None:
        options.components = GRADIENT_COMPONENTS if options.diversity == "gradients" else 0
    elif options.components < 0 or (options.components and options.diversity != "gradients"):
        raise InputError(f"--components must be >= 0 and applies to --diversity gradients, got {options.components}")
    if options.space == "coordinates" and options.coordinates is None:
        raise InputError("--space coordinates needs --coordinates TABLE (sample_id or row, longitude, latitude)")
    return options


def parse_map(args: list[str], prog: str) -> argparse.Namespace:
    """``cmap suggest --map MAP.tif OUTPUT``: only OUTPUT is positional; the options that need the network's
    features or a store are one error line each."""
    parser = argparse.ArgumentParser(
        prog=prog, usage="%(prog)s --map MAP.tif OUTPUT [options]", description="the pixels of a crop map to label next"
    )
    parser.add_argument("output", type=Path, nargs="+", help="CSV of the suggestions (and a .gpkg beside it)")
    parser.add_argument("--map", type=Path, required=True, help="a cmap map (its class probabilities beside it)")
    add_selection_arguments(parser, "clusters", "coordinates")
    for store_only in ("--coordinates", "--crs", "--batch_size"):  # refused below, in one line
        parser.add_argument(store_only, help=argparse.SUPPRESS)
    options = parser.parse_args(args)
    if len(options.output) != 1:
        paths = " ".join(map(str, options.output))
        raise InputError(f"with --map, only OUTPUT is positional (no CHECKPOINT STORE), got {paths}")
    options.output = options.output[0]
    check_selection(options)
    given = [name for name in ("coordinates", "crs", "batch_size") if getattr(options, name) is not None]
    if given:
        raise InputError(f"--{given[0]} applies to CHECKPOINT STORE OUTPUT, not to --map (pixels have coordinates)")
    if options.diversity == "gradients" or options.space == "embedding":
        wrong = "--diversity gradients" if options.diversity == "gradients" else "--space embedding"
        raise InputError(
            f"{wrong} needs the network's features, which a map does not keep: with --map use --diversity clusters "
            "or distance, in the map's coordinates (or CHECKPOINT STORE OUTPUT)"
        )
    return options


def check_selection(options: argparse.Namespace) -> None:
    """The checks both paths share: --n, and the options of --diversity distance; ``min_distance``
    becomes a number, or None for ``auto`` (from the data: :func:`~cmap.labelling.selection.auto_distance`)."""
    if options.n < 1:
        raise InputError(f"--n must be >= 1, got {options.n}")
    if options.diversity != "distance" and (options.balanced or options.min_distance != "auto"):
        raise InputError(
            f"--balanced and --min_distance apply to --diversity distance, not to --diversity {options.diversity}"
        )
    if options.min_distance == "auto":
        options.min_distance = None
        return
    try:
        options.min_distance = float(options.min_distance)
    except ValueError:
        raise InputError(f"--min_distance must be a number or auto, got {options.min_distance!r}") from None


def check_inputs(model, metadata: dict, store: Path, checkpoint: Path) -> None:
    """The store's bands and time axis must be the checkpoint's (its input contract)."""
    from cmap.data.store import store_time_axis

    contract = model.input_contract
    if list(metadata["band_names"]) != list(contract.band_names):
        raise InputError(
            f"{store / 'metadata.json'}: field band_names: {metadata['band_names']}, expected the bands of "
            f"{checkpoint}: {list(contract.band_names)}"
        )
    if store_time_axis(metadata) != contract.time_axis:
        raise InputError(
            f"{store / 'metadata.json'}: field time_axis: {store_time_axis(metadata).describe()}, expected the time "
            f"axis of {checkpoint}: {contract.time_axis.describe()}"
        )


def predict(model, series, rows: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Class probabilities (N, K), embeddings (N, D: the encoder's features averaged over valid dates)
    and the last layer's inputs (N, H: what the decoder's final ``linear`` layer reads; None for a
    decoder without one)."""
    import contextlib

    import torch

    from cmap.data.dataset import SeriesDataset, batch_loader
    from cmap.ml.decoders import masked_mean

    loader = batch_loader(SeriesDataset(series, rows, model.input_contract), batch_size)
    probabilities, embeddings, last_inputs = [], [], []
    last_layer = getattr(model.decoder, "linear", None)
    hook = contextlib.nullcontext()
    if isinstance(last_layer, torch.nn.Linear):
        hook = last_layer.register_forward_hook(lambda _, inputs, __: last_inputs.append(inputs[0].float().numpy()))
    with hook:  # a hook handle removes itself on exit
        with torch.no_grad():
            for batch in loader:
                batch = model.on_before_batch_transfer(batch, 0)  # the date range check
                features = model.encoder(batch["values"], batch["days"], batch["mask"])
                logits = model.decoder.decode(features, batch["mask"], batch["days"])
                probabilities.append(torch.softmax(logits.float(), dim=-1).numpy())
                embeddings.append(masked_mean(features, batch["mask"]).float().numpy())
    return (
        np.concatenate(probabilities),
        np.concatenate(embeddings),
        np.concatenate(last_inputs) if last_inputs else None,
    )


def main(args: list[str] | None = None, prog: str = "cmap suggest") -> pd.DataFrame:
    """Run ``cmap suggest``; returns the suggestions' table."""
    options = parse(list(args or []), prog)
    if options.map is not None:  # no network: torch and Lightning are not imported
        from cmap.labelling.map_candidates import suggest_from_map

        return suggest_from_map(
            options.map,
            options.output,
            options.n,
            options.measure,
            options.diversity,
            options.min_distance,
            options.balanced,
        )
    from cmap.data.store import open_store
    from cmap.predictions import load_classifier

    if not options.checkpoint.is_file():
        raise MissingInput(f"{options.checkpoint}: checkpoint not found")
    if not (options.store / "metadata.json").is_file():
        raise MissingInput(f"{options.store}: not a store (no metadata.json); write one with cmap convert")
    series, metadata = open_store(options.store)
    model = load_classifier(options.checkpoint)
    check_inputs(model, metadata, options.store, options.checkpoint)
    rows = np.arange(len(series)) if series.labels is None else np.flatnonzero(series.labels < 0)
    if options.n > len(rows):
        raise InputError(
            f"{options.store}: --n {options.n} but only {len(rows)} candidate series (unlabelled ones: label -1)"
        )
    ids = sample_ids(series)
    coordinates = None if options.coordinates is None else read_coordinates(options.coordinates, ids)
    probabilities, embeddings, last_inputs = predict(model, series, rows, options.batch_size)
    scores = uncertainty(probabilities, options.measure)
    points = embeddings if options.space == "embedding" else coordinates[rows]
    predicted = probabilities.argmax(axis=1)
    if options.diversity == "gradients":
        if last_inputs is None:
            raise InputError(f"{options.checkpoint}: its decoder has no final linear layer: use --diversity clusters")
        chosen = gradient_select(probabilities, last_inputs, options.n, components=options.components)
        rule = "k-means++ in the gradient embedding"
        if options.components:
            rule += f" of {options.components} principal components"
    elif options.diversity == "clusters":
        chosen, rule = cluster_select(scores, options.n, points), f"one per k-means cluster in {options.space}"
    else:
        min_distance = options.min_distance
        if min_distance is None:
            min_distance = auto_distance(points, scores, options.n)
        balance = predicted if options.balanced else None
        chosen = select(scores, options.n, points, min_distance, balance, probabilities.shape[1])
        rule = f"minimum {options.space} distance {min_distance:.4g}"
    class_names = list(model.input_contract.class_names)
    table = pd.DataFrame(
        {
            "row": rows[chosen],
            "sample_id": ids[rows[chosen]],
            "rank": np.arange(1, len(chosen) + 1),
            "predicted": [class_names[k] for k in predicted[chosen]],
            "confidence": probabilities[chosen].max(axis=1),
            "uncertainty": scores[chosen],
        }
    )
    for k, name in enumerate(class_names):
        table[f"probability/{name}"] = probabilities[chosen, k]
    inputs = [options.store, options.checkpoint] + ([options.coordinates] if options.coordinates else [])
    write_outputs(
        table, options.output, inputs, None if coordinates is None else coordinates[rows[chosen]], options.crs
    )
    print(
        f"cmap suggest: {len(table)} of {len(rows)} candidates ({options.measure}, {rule}) -> {options.output}",
        flush=True,
    )
    return table
