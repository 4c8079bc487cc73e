"""``cmap area``: accuracy and error-adjusted class areas of a crop map, from reference samples.

    cmap area --map sinop_map.tif --reference reference_points.csv --output sinop_area.md \
        --label_field label --x_column x --y_column y --crs EPSG:32721

The map (a ``cmap map`` class map: class names in its ``class_names`` tag, nodata 255) is the
stratification; the reference samples (points with a class name: a CSV with coordinate columns, or
any vector file fiona reads) are read with :func:`cmap.data.samples.read_labels`, each takes the map
class of the pixel it falls in, and the map's pixel counts per class give the mapped areas.
:func:`cmap.evaluation.area_adjusted_accuracy` (Olofsson et al. 2014) then gives user's and
producer's accuracies, the overall accuracy and the error-adjusted area of each class, with
confidence intervals. Areas are in hectares when the map's CRS is in metres, in pixels otherwise.

Outputs: ``OUTPUT`` (Markdown: the table and how it was made) and ``OUTPUT`` with suffix ``.csv``
(one row per class, then ``overall``), each written atomically.
"""

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.warp import transform_geom

from cmap.data.raster_files import open_raster
from cmap.data.samples import read_labels
from cmap.evaluation import AreaAccuracy, area_adjusted_accuracy, sample_counts
from cmap.outputs import InputError, check_outputs, write_bytes_atomically

NODATA = 255


def map_classes(path: Path) -> tuple[list[str], np.ndarray, float, str]:
    """The class names of a ``cmap map`` class map, its pixel count per class, the area of one pixel
    and the area's unit (hectares in a CRS of metres, else pixels)."""
    with open_raster(path, " (a class map written by cmap map)") as dataset:
        tags = dataset.tags()
        if "class_names" not in tags:
            raise InputError(f"{path}: no class_names tag: not a class map written by cmap map")
        names = list(json.loads(tags["class_names"]))
        counts = np.zeros(len(names), dtype=np.int64)
        for _, window in dataset.block_windows(1):
            block = dataset.read(1, window=window).ravel()
            counts += np.bincount(block[block != NODATA], minlength=len(names))[: len(names)]
        transform, crs = dataset.transform, dataset.crs
    pixel = abs(transform.a * transform.e - transform.b * transform.d)
    if crs is not None and crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter", "m"):
        return names, counts, pixel / 10_000, "ha"
    return names, counts, 1.0, "pixels"


def reference_samples(map_path: Path, reference: str, names: list[str], **columns: str) -> tuple[np.ndarray, ...]:
    """(map class, reference class) of every reference point; errors name the file and the point."""
    shapes = read_labels(reference, **columns)
    unknown = sorted(set(shapes.labels) - set(names))
    if unknown:
        raise InputError(f"{shapes.source}: reference labels {unknown} are not classes of the map {names}")
    with rasterio.open(map_path) as dataset:
        points = [transform_geom(shapes.crs, dataset.crs, geometry) for geometry in shapes.geometries]
        if any(point["type"] != "Point" for point in points):
            raise InputError(f"{shapes.source}: reference samples must be points")
        xs, ys = zip(*(point["coordinates"][:2] for point in points), strict=True)
        mapped = np.array([value[0] for value in dataset.sample(zip(xs, ys, strict=True), indexes=1)])
        rows, cols = rasterio.transform.rowcol(dataset.transform, xs, ys)
        outside = (np.asarray(rows) < 0) | (np.asarray(rows) >= dataset.height)
        outside |= (np.asarray(cols) < 0) | (np.asarray(cols) >= dataset.width)
    bad = np.flatnonzero(outside | (mapped == NODATA))
    if len(bad):
        raise InputError(
            f"{shapes.source}: {len(bad)} reference points fall outside the map or on nodata, first at row "
            f"{int(bad[0])}; remove them"
        )
    return mapped.astype(np.int64), np.array([names.index(label) for label in shapes.labels])


def check_strata(counts: np.ndarray, pixels: np.ndarray, names: list[str], reference: str) -> None:
    """Every class with mapped pixels has at least 2 reference points on pixels mapped as it (the
    estimators' strata are the map classes, not the reference labels); else one error line saying
    where the points of each such class fell and what to add."""
    on_pixels = counts.sum(axis=1)  # points on pixels mapped as i
    short = [i for i in range(len(names)) if pixels[i] > 0 and on_pixels[i] < 2]
    if not short:
        return
    details = []
    for i in short:
        elsewhere = [f"{counts[m, i]} on {names[m]}" for m in np.flatnonzero(counts[:, i]) if m != i]
        details.append(
            f"{names[i]}: {on_pixels[i]} point(s) on pixels mapped as {names[i]} ({int(pixels[i])} pixels)"
            + (f"; of the {counts[:, i].sum()} labelled {names[i]}, {', '.join(elsewhere)}" if elsewhere else "")
        )
    wanted = ", ".join(names[i] for i in short)
    raise InputError(
        f"{reference}: the area estimators (Olofsson et al. 2014) take the map classes as strata and need at least "
        f"2 reference points on pixels mapped as each class; {'; '.join(details)}. Add reference points on pixels "
        f"mapped as {wanted} (a stratified random sample of the map: points drawn among each mapped class's pixels, "
        "each labelled with what is on the ground)"
    )


def report_table(result: AreaAccuracy, samples: np.ndarray, unit: str) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "class": result.class_names,
            "samples": samples,
            f"mapped_area_{unit}": result.mapped_area,
            f"adjusted_area_{unit}": result.area,
            f"adjusted_area_ci_{unit}": result.area_ci,
            "users_accuracy": result.users_accuracy,
            "users_accuracy_ci": result.users_accuracy_ci,
            "producers_accuracy": result.producers_accuracy,
            "producers_accuracy_ci": result.producers_accuracy_ci,
        }
    )
    overall = {"class": "overall", "samples": int(samples.sum()), "users_accuracy": result.overall_accuracy}
    overall |= {"users_accuracy_ci": result.overall_accuracy_ci, f"mapped_area_{unit}": result.mapped_area.sum()}
    overall |= {f"adjusted_area_{unit}": result.area.sum()}
    return pd.concat([rows, pd.DataFrame([overall])], ignore_index=True)


def area_report(
    map: str,
    reference: str,
    output: str,
    label_field: str = "label",
    x_column: str = "longitude",
    y_column: str = "latitude",
    crs: str = "EPSG:4326",
    confidence: float = 0.95,
) -> Path:
    """Write the accuracy and area report of a class map from reference points.

    Args:
        map: a class map written by ``cmap map`` (uint8 classes, nodata 255, ``class_names`` tag).
        reference: reference points with class names: a CSV (``x_column``, ``y_column`` in ``crs``)
            or a vector file (GeoPackage, Shapefile, GeoJSON).
        output: the Markdown report to write (the CSV goes beside it, suffix ``.csv``).
        label_field: the column / field holding each point's reference class name.
        x_column: CSV only: the x (longitude, easting) column.
        y_column: CSV only: the y (latitude, northing) column.
        crs: CSV only: the CRS of the coordinates.
        confidence: level of the confidence intervals.
    """
    map_path, output_path = Path(map), Path(output)
    if not map_path.is_file():
        raise InputError(f"{map_path}: no such class map")
    targets = [output_path, output_path.with_suffix(".csv")]
    check_outputs(targets, [map_path, Path(reference)], lambda path: path.suffix in (".md", ".csv"), "area report")
    names, pixels, pixel_area, unit = map_classes(map_path)
    mapped, referenced = reference_samples(
        map_path, reference, names, label_field=label_field, x_column=x_column, y_column=y_column, crs=crs
    )
    counts = sample_counts(mapped, referenced, len(names))
    check_strata(counts, pixels, names, reference)
    try:
        result = area_adjusted_accuracy(counts, pixels * pixel_area, names, confidence)
    except ValueError as error:
        raise InputError(f"{reference}: {error}") from error
    table = report_table(result, counts.sum(axis=1), unit)
    csv = io.StringIO()
    table.to_csv(csv, index=False)
    markdown = (
        f"# Accuracy and area of {map_path.name}\n\n"
        f"{int(counts.sum())} reference samples from {reference}, stratified by the map's classes; estimators of "
        f"Olofsson et al. (2014), {100 * confidence:g} % confidence intervals; areas in {unit} "
        f"({pixel_area:g} {unit} per pixel).\n\n{result.table()}\n"
    )
    write_bytes_atomically(targets[1], csv.getvalue().encode())
    write_bytes_atomically(output_path, markdown.encode())
    return output_path


def main(args: list[str] | None = None, prog: str = "python -m cmap.area") -> None:
    """``cmap area``: :func:`area_report` from the command line (or a YAML ``--config``)."""
    from jsonargparse import auto_cli

    print(auto_cli(area_report, args=args, as_positional=False, prog=prog))


if __name__ == "__main__":
    main()
