r"""cmap's crop map of the Sinop MODIS cube, side by side with the R ``sits`` package's.

    python benchmarks/sinop_map.py                       # convert, train (~3-8 min on 2 CPU cores), map, compare
    python benchmarks/sinop_map.py --checkpoint last.ckpt  # map and compare with a trained model
    python benchmarks/sinop_map.py --max_epochs 15       # a shorter training (~1.5 min)

1. Converts the Mato Grosso samples (../shared/data/sits_matogrosso_mod13q1) to NDVI at the cube's
   12 dates (``--keep_bands NDVI --date_step 2``) and trains ``configs/mato_grosso_ndvi_map.yaml``.
2. ``cmap map`` over the 12 JPEG2000 images of ../shared/data/sits_sinop_modis_cube (values below
   -2000 missing, scale 1e-4).
3. Agreement of cmap's classes with the argmax of sits' 9-class probability raster of Sinop, sampled
   at each cube pixel centre (the two grids are not aligned; sits' raster covers part of the cube),
   and accuracy at the 18 labelled points of ``samples_sinop_crop.csv``.
4. The same with sits' Bayesian smoothing (``cmap map --smoothing true``, sits' defaults), and a
   parcel example: a square field of 3 x 3 pixels (~700 m) around each labelled point, whose
   majority class (``cmap map --parcels``) is compared with the point's label.
5. Renders both maps side by side (``--figure``), the map products (``--products_figure``: the
   map with its legend and the parcels, the smoothed map, the entropy and margin uncertainty) and
   prints a Markdown summary.
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

from cmap.data.samples import read_labels
from cmap.mapping import map_rasters
from cmap.mapping.styles import class_colours

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


def train(workdir: Path, store: Path, max_epochs: int | None = None) -> Path:
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
    overrides += ["--trainer.max_epochs", str(max_epochs)] if max_epochs else []
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


def point_fields(workdir: Path, half_width: int = 1) -> Path:
    """A GeoPackage of square fields of (2 * half_width + 1)**2 cube pixels centred on the labelled points."""
    import fiona

    shapes = read_labels(SINOP_CUBE / "samples_sinop_crop.csv")
    path = workdir / "sinop_point_fields.gpkg"
    path.unlink(missing_ok=True)
    with rasterio.open(next(SINOP_CUBE.glob("*_NDVI_*.jp2"))) as cube:
        xs, ys = transform(shapes.crs, cube.crs, *zip(*(g["coordinates"] for g in shapes.geometries), strict=True))
        rows, cols = rowcol(cube.transform, xs, ys)
        schema = {"geometry": "Polygon", "properties": {"point": "int", "label": "str"}}
        with fiona.open(path, "w", driver="GPKG", schema=schema, crs_wkt=cube.crs.to_wkt()) as layer:
            for index, (row, col, label) in enumerate(zip(rows, cols, shapes.labels, strict=True)):
                top, left, size = row - half_width, col - half_width, 2 * half_width + 1
                box = ((top, left), (top, left + size), (top + size, left + size), (top + size, left))
                corners = [cube.transform * (c, r) for r, c in box]
                ring = [*corners, corners[0]]
                layer.write({"geometry": {"type": "Polygon", "coordinates": [ring]},
                             "properties": {"point": index, "label": label}})  # fmt: skip
    return path


def parcel_accuracy(parcels: Path) -> tuple[float, int]:
    """Share of the fields whose majority class is their point's label."""
    import fiona

    with fiona.open(parcels, layer="parcels") as layer:
        pairs = [(feature.properties["class"], feature.properties["label"]) for feature in layer]
    return float(np.mean([predicted == label for predicted, label in pairs])), len(pairs)


def render_products(raw: Path, smoothed: Path, parcels: Path, figure: Path) -> None:
    """The products of ``cmap map`` as a GIS shows them: class map with legend and parcels, smoothed
    map, entropy and margin uncertainty (from the rasters' own class names and GDAL scale)."""
    import fiona
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from cmap.mapping.products import uncertainty_path

    with rasterio.open(raw) as dataset:
        class_names = [dataset.tags(1)[str(i)] for i in range(len(dataset.tags(1)))]
        left, bottom, right, top = dataset.bounds
        raw_classes = np.ma.masked_equal(dataset.read(1), 255)
    with rasterio.open(smoothed) as dataset:
        smoothed_classes = np.ma.masked_equal(dataset.read(1), 255)
    with rasterio.open(uncertainty_path(raw)) as dataset:
        entropy, margin = (np.ma.masked_equal(band, 255) * dataset.scales[0] for band in dataset.read())
    with fiona.open(parcels, layer="parcels") as layer:
        fields = [(feature.geometry["coordinates"][0], feature.properties) for feature in layer]
    colours = np.array(class_colours(len(class_names))) / 255
    extent = (left, right, bottom, top)
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.6), layout="constrained")
    for axis, data, title in (
        (axes[0, 0], raw_classes, "class map (cmap map), parcels: majority class / point label"),
        (axes[0, 1], smoothed_classes, "class map, Bayesian smoothing (--smoothing true)"),
    ):
        axis.imshow(data, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(class_names) - 0.5, extent=extent,
                    interpolation="nearest")  # fmt: skip
        axis.set_title(title, fontsize=10)
    for ring, properties in fields:
        xs, ys = zip(*ring, strict=True)
        right_class = properties["class"] == properties["label"]
        axes[0, 0].plot(xs, ys, color="white" if right_class else "red", linewidth=1.5)
    for axis, data, title in (
        (axes[1, 0], entropy, "uncertainty: normalised entropy (--uncertainty true)"),
        (axes[1, 1], margin, "uncertainty: margin, 1 - (p1 - p2)"),
    ):
        image = axis.imshow(data, cmap="magma", vmin=0, vmax=1, extent=extent, interpolation="nearest")
        axis.set_title(title, fontsize=10)
        fig.colorbar(image, ax=axis, fraction=0.03)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    present = sorted(set(np.unique(raw_classes.compressed())) | set(np.unique(smoothed_classes.compressed())))
    fig.legend(handles=[Patch(color=colours[i], label=class_names[i]) for i in present], loc="outside upper center",
               ncol=min(len(present), 6))  # fmt: skip
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=72)
    from PIL import Image  # matplotlib's own dependency

    with Image.open(figure) as image:  # 128 colours: a third of the file, no visible change
        image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(figure, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint (default: train one)")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "sinop")
    parser.add_argument("--figure", type=Path, default=REPO / "docs" / "sinop_map_vs_sits.png")
    parser.add_argument("--products_figure", type=Path, default=REPO / "docs" / "sinop_map_products.png")
    parser.add_argument("--max_epochs", type=int, help="training epochs (default: the config's 60)")
    args = parser.parse_args()
    start = time.perf_counter()
    store = convert(args.workdir)
    checkpoint = args.checkpoint or train(args.workdir, store, args.max_epochs)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    fields = point_fields(args.workdir)
    output = map_rasters(
        str(checkpoint), str(SINOP_CUBE), str(args.workdir / "sinop_map.tif"), pattern=SINOP_PATTERN, scale=1e-4,
        valid_range=(-2000, 10000), progress=False, uncertainty=True, parcels=str(fields),
    )  # fmt: skip
    map_s = time.perf_counter() - start
    start = time.perf_counter()
    smoothed = map_rasters(
        str(checkpoint), str(SINOP_CUBE), str(args.workdir / "sinop_map_smoothed.tif"), pattern=SINOP_PATTERN,
        scale=1e-4, valid_range=(-2000, 10000), progress=False, smoothing=True, parcels=str(fields),
    )  # fmt: skip
    smoothed_s = time.perf_counter() - start
    comparison, smoothed_comparison = compare_with_sits(output), compare_with_sits(smoothed)
    accuracy, points = point_accuracy(output)
    smoothed_accuracy, _ = point_accuracy(smoothed)
    parcels, smoothed_parcels = (
        output.with_name("sinop_map_parcels.gpkg"),
        smoothed.with_name("sinop_map_smoothed_parcels.gpkg"),
    )
    (parcel_score, parcel_count), (smoothed_parcel_score, _) = (
        parcel_accuracy(parcels),
        parcel_accuracy(smoothed_parcels),
    )
    with rasterio.open(output) as raw_map, rasterio.open(smoothed) as smoothed_map:
        changed = float((raw_map.read(1) != smoothed_map.read(1)).mean())
    forest = random_forest_map(store, args.workdir / "sinop_random_forest.tif")
    forest_comparison, (forest_accuracy, _) = compare_with_sits(forest), point_accuracy(forest)
    render(output, args.figure)
    render_products(output, smoothed, parcels, args.products_figure)
    print(f"| checkpoint | `{checkpoint}` |\n|---|---|")
    print(f"| training (s) | {train_s:.0f} |\n| map (s, 37,485 pixels) | {map_s:.1f} |")
    print(f"| map with smoothing (s) | {smoothed_s:.1f} |")
    print(
        f"| agreement with sits (argmax) | {comparison['agreement']:.3f} "
        f"({comparison['pixels_compared']} pixels compared) |"
    )
    print(f"| accuracy at the labelled points | {accuracy:.3f} ({points} points) |")
    print(
        f"| with smoothing: agreement with sits, accuracy at the points | {smoothed_comparison['agreement']:.3f}, "
        f"{smoothed_accuracy:.3f} ({changed:.3f} of the pixels change class) |"
    )
    print(
        f"| parcels (3 x 3-pixel fields at the points): majority class = label, without / with smoothing | "
        f"{parcel_score:.3f} / {smoothed_parcel_score:.3f} ({parcel_count} fields) |"
    )
    print(
        f"| random forest on the same samples: agreement with sits, accuracy at the points | "
        f"{forest_comparison['agreement']:.3f}, {forest_accuracy:.3f} |"
    )
    print(f"| figures | `{args.figure}`, `{args.products_figure}` |")
    print("\nconfusion (rows: sits, columns: cmap):", *SITS_CLASSES, sep="\n  ")
    print(comparison["confusion"])


if __name__ == "__main__":
    main()
