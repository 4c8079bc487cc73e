r"""cmap's crop map of the Sinop MODIS cube, side by side with the R ``sits`` package's.

    python benchmarks/sinop_map.py                       # convert, train (~3-8 min on 2 CPU cores), map, compare
    python benchmarks/sinop_map.py --checkpoint last.ckpt  # map and compare with a trained model

1. Converts the Mato Grosso samples (../shared/data/sits_matogrosso_mod13q1) to NDVI at the cube's
   12 dates (``--keep_bands NDVI --date_step 2``) and trains ``configs/mato_grosso_ndvi_map.yaml``.
2. ``cmap map`` over the 12 JPEG2000 images of ../shared/data/sits_sinop_modis_cube (values below
   -2000 missing, scale 1e-4).
3. Agreement of cmap's classes with the argmax of sits' 9-class probability raster of Sinop, sampled
   at each cube pixel centre (the two grids are not aligned; sits' raster covers part of the cube),
   and accuracy at the 18 labelled points of ``samples_sinop_crop.csv``.
4. Renders both maps side by side (``--figure``) and prints a Markdown summary.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from common import REPO, SHARED_DATA, SINOP_CUBE, SINOP_PATTERN
from rasterio.transform import rowcol, xy
from rasterio.warp import transform

from cmap.data.raster import read_labels
from cmap.map import class_colours, map_rasters

SITS_PROBABILITIES = SINOP_CUBE / "sinop_2014_probs_2013-09-01_2014-08-30_v1.tif"
#: Band order of sits' probability raster (sits R/sits_cube.R documents it for this file).
SITS_CLASSES = [
    "Cerrado", "Fallow_Cotton", "Forest", "Pasture", "Soy_Corn", "Soy_Cotton", "Soy_Fallow", "Soy_Millet",
    "Soy_Sunflower",
]  # fmt: skip


def convert(workdir: Path) -> Path:
    store = workdir / "stores" / "mato_grosso_ndvi12"
    if not (store / "metadata.json").exists():
        source = SHARED_DATA / "sits_matogrosso_mod13q1" / "br_mt_1_8K_9classes_6bands.rda"
        convert = [sys.executable, "-m", "cmap.data", "convert", "mato_grosso", str(source), str(store)]
        subprocess.run([*convert, "--keep_bands", "NDVI", "--date_step", "2", "--overwrite"], check=True)
    return store


def train(workdir: Path, store: Path) -> Path:
    root = workdir / "mato_grosso_ndvi_map"
    fit = [sys.executable, "-m", "cmap.cli", "fit", "--config", str(REPO / "configs" / "mato_grosso_ndvi_map.yaml")]
    overrides = [
        "--data.init_args.path",
        str(store),
        "--trainer.default_root_dir",
        str(root),
        "--test_after_fit",
        "true",
    ]
    subprocess.run([*fit, *overrides, "--trainer.enable_progress_bar", "false"], check=True)
    return max(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)


def compare_with_sits(cmap_map: Path) -> dict[str, float]:
    """Agreement with sits' argmax at cmap's pixel centres that fall on sits' valid pixels."""
    with rasterio.open(cmap_map) as ours, rasterio.open(SITS_PROBABILITIES) as theirs:
        classes, class_names = ours.read(1), ours.tags()["class_names"]
        assert ours.crs == theirs.crs, "the two maps are in different CRS"
        rows, cols = np.indices(classes.shape)
        xs, ys = xy(ours.transform, rows.ravel(), cols.ravel())
        their_rows, their_cols = rowcol(theirs.transform, xs, ys)
        their_rows, their_cols = np.asarray(their_rows), np.asarray(their_cols)
        inside = (their_rows >= 0) & (their_rows < theirs.height) & (their_cols >= 0) & (their_cols < theirs.width)
        probabilities = theirs.read()  # (9, h, w) uint16, x 1e4
        nodata = theirs.nodata
    assert SITS_CLASSES == json.loads(class_names), "class orders differ"
    sampled = probabilities[:, their_rows[inside], their_cols[inside]]
    valid = (sampled != nodata).all(axis=0) & (classes.ravel()[inside] != 255)
    theirs_class = sampled[:, valid].argmax(axis=0)
    ours_class = classes.ravel()[inside][valid]
    confusion = np.zeros((len(SITS_CLASSES),) * 2, dtype=int)
    np.add.at(confusion, (theirs_class, ours_class), 1)
    return {
        "pixels_compared": int(valid.sum()),
        "agreement": float((theirs_class == ours_class).mean()),
        "confusion": confusion,
    }


def random_forest_map(store: Path, output: Path) -> Path:
    """The same comparison's reference: a random forest (scikit-learn, 300 trees) on the same training
    series, over the same cube; missing dates get the pixel's mean NDVI."""
    from sklearn.ensemble import RandomForestClassifier

    from cmap.data import open_store
    from cmap.data.raster import RasterStack, pixel_series

    series, metadata = open_store(store)
    train = np.asarray(series.values[np.arange(len(series))])[:, :, 0]
    forest = RandomForestClassifier(300, n_jobs=2, random_state=0).fit(train, series.labels)
    stack = RasterStack.from_folder(SINOP_CUBE, SINOP_PATTERN, ["NDVI"], 1e-4, 0.0, (-2000, 10000))
    pixels = pixel_series(stack.read())[:, :, 0]
    pixels = np.where(np.isnan(pixels), np.nanmean(pixels, axis=1, keepdims=True), pixels)
    classes = forest.predict(pixels).astype(np.uint8).reshape(stack.shape)
    with rasterio.open(output, "w", driver="GTiff", dtype="uint8", count=1, nodata=255, **stack.profile) as dataset:
        dataset.write(classes, 1)
        dataset.update_tags(class_names=json.dumps(metadata["class_names"]))
    return output


def point_accuracy(cmap_map: Path) -> tuple[float, int]:
    shapes = read_labels(SINOP_CUBE / "samples_sinop_crop.csv")
    with rasterio.open(cmap_map) as ours:
        xs, ys = transform(shapes.crs, ours.crs, *zip(*(g["coordinates"] for g in shapes.geometries), strict=True))
        names = json.loads(ours.tags()["class_names"])
        predicted = [names[v[0]] for v in ours.sample(zip(xs, ys, strict=True))]
    return float(np.mean([p == t for p, t in zip(predicted, shapes.labels, strict=True)])), len(predicted)


def render(cmap_map: Path, figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = np.array(class_colours(len(SITS_CLASSES))) / 255
    cmap = ListedColormap(colours)
    with rasterio.open(cmap_map) as ours, rasterio.open(SITS_PROBABILITIES) as theirs:
        classes = np.ma.masked_equal(ours.read(1), 255)
        left, bottom, right, top = ours.bounds
        probabilities = theirs.read()
        theirs_classes = np.ma.masked_where((probabilities == theirs.nodata).any(0), probabilities.argmax(0))
        t_left, t_bottom, t_right, t_top = theirs.bounds
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.7, 1, 1]})
    ours_extent, theirs_extent = (left, right, bottom, top), (t_left, t_right, t_bottom, t_top)
    for axis, data, extent, view, title in (
        (axes[0], classes, ours_extent, ours_extent, "cmap, whole Sinop cube (dashed: sits' extent)"),
        (axes[1], classes, ours_extent, theirs_extent, "cmap, on sits' extent"),
        (axes[2], theirs_classes, theirs_extent, theirs_extent, "R sits example (argmax of its probabilities)"),
    ):
        axis.imshow(data, cmap=cmap, vmin=-0.5, vmax=len(SITS_CLASSES) - 0.5, extent=extent, interpolation="nearest")
        axis.set_title(title, fontsize=10)
        axis.set_xlim(view[0], view[1])
        axis.set_ylim(max(view[2], bottom), view[3])
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0].plot([t_left, t_right, t_right, t_left, t_left], [t_bottom, t_bottom, t_top, t_top, t_bottom], "k--")
    fig.legend(
        handles=[Patch(color=colours[i], label=name) for i, name in enumerate(SITS_CLASSES)],
        loc="lower center",
        ncol=5,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.96))
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint (default: train one)")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "sinop")
    parser.add_argument("--figure", type=Path, default=REPO / "docs" / "sinop_map_vs_sits.png")
    args = parser.parse_args()
    start = time.perf_counter()
    store = convert(args.workdir)
    checkpoint = args.checkpoint or train(args.workdir, store)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    output = map_rasters(
        str(checkpoint), str(SINOP_CUBE), str(args.workdir / "sinop_map.tif"), pattern=SINOP_PATTERN, scale=1e-4,
        valid_range=(-2000, 10000), progress=False,
    )  # fmt: skip
    map_s = time.perf_counter() - start
    comparison = compare_with_sits(output)
    accuracy, points = point_accuracy(output)
    forest = random_forest_map(store, args.workdir / "sinop_random_forest.tif")
    forest_comparison, (forest_accuracy, _) = compare_with_sits(forest), point_accuracy(forest)
    render(output, args.figure)
    print(f"| checkpoint | `{checkpoint}` |\n|---|---|")
    print(f"| training (s) | {train_s:.0f} |\n| map (s, 37,485 pixels) | {map_s:.1f} |")
    print(
        f"| agreement with sits (argmax) | {comparison['agreement']:.3f} "
        f"({comparison['pixels_compared']} pixels compared) |"
    )
    print(f"| accuracy at the labelled points | {accuracy:.3f} ({points} points) |")
    print(
        f"| random forest on the same samples: agreement with sits, accuracy at the points | "
        f"{forest_comparison['agreement']:.3f}, {forest_accuracy:.3f} |"
    )
    print(f"| figure | `{args.figure}` |")
    print("\nconfusion (rows: sits, columns: cmap):", *SITS_CLASSES, sep="\n  ")
    print(comparison["confusion"])


if __name__ == "__main__":
    main()
