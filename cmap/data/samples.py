"""Training samples from rasters: the pixel series of a raster stack under labelled points or polygons.

:func:`read_labels` reads the labels (a CSV of points, or any vector file fiona reads), checking that
the coordinates lie in their CRS's valid range; :func:`extract_clear_samples` reads the stack's pixels
under them (``cmap extract``), keeping the series with a valid date and listing the shapes left
without any, with their reason (:mod:`cmap.data.skipped_shapes`); :func:`extract_samples` requires
every shape. ``cmap area`` reads its reference points with :func:`read_labels`.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import rasterize
from rasterio.warp import transform, transform_bounds, transform_geom

from cmap.data import skipped_shapes
from cmap.data.raster import RasterStack, pixel_series
from cmap.data.raster_files import one_line
from cmap.data.series import PixelSeries
from cmap.data.time_axis import TimeAxis
from cmap.outputs import InputError, MissingInput


@dataclass
class LabelledShapes:
    """Training labels on the ground: points or polygons with a class name each (see :func:`read_labels`)."""

    geometries: list[dict[str, Any]]  # GeoJSON-like, in ``crs``
    labels: list[str]
    crs: Any
    source: str
    #: the names of the coordinates (a CSV's x and y columns), for lists of these shapes
    coordinate_names: tuple[str, str] = ("x", "y")


def read_labels(
    path: str | Path,
    label_field: str = "label",
    x_column: str = "longitude",
    y_column: str = "latitude",
    crs: str = "EPSG:4326",
) -> LabelledShapes:
    """Points or polygons with labels: a vector file (GeoPackage, Shapefile, GeoJSON... read with
    fiona) or a CSV of points (``x_column``, ``y_column`` in ``crs``, ``label_field``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: no such file of labels")
    if path.suffix.lower() == ".csv":
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (ValueError, UnicodeDecodeError) as error:  # pandas' parser errors are ValueErrors
            raise InputError(f"{path}: not a readable CSV table ({one_line(error)})") from error
        missing = [column for column in (x_column, y_column, label_field) if column not in table]
        if missing:
            raise InputError(f"{path}: columns {missing} are missing (found {list(table.columns)})")
        coordinates = {}
        for column in (x_column, y_column):
            numbers = pd.to_numeric(table[column].str.strip(), errors="coerce")
            bad = np.flatnonzero(~np.isfinite(numbers.to_numpy(dtype=float)))
            if len(bad):
                raise InputError(
                    f"{path}: column {column!r} row {bad[0]} (line {bad[0] + 2}) holds {table[column].iloc[bad[0]]!r}, "
                    "expected a coordinate (a number)"
                )
            coordinates[column] = numbers.to_numpy(dtype=float)
        empty = np.flatnonzero(table[label_field].str.strip().to_numpy() == "")
        if len(empty):
            raise InputError(
                f"{path}: column {label_field!r} row {empty[0]} (line {empty[0] + 2}) is empty, expected a class name"
            )
        check_coordinates(path, coordinates[x_column], coordinates[y_column], crs, (x_column, y_column))
        geometries = [
            {"type": "Point", "coordinates": (float(x), float(y))}
            for x, y in zip(coordinates[x_column], coordinates[y_column], strict=True)
        ]
        labels = table[label_field].str.strip().tolist()
        return LabelledShapes(geometries, labels, crs, str(path), (x_column, y_column))
    with open_vector(path, "labels") as layer:
        if label_field not in layer.schema["properties"]:
            raise InputError(f"{path}: no field {label_field!r} (fields: {list(layer.schema['properties'])})")
        features = list(layer)
        layer_crs = layer.crs
    geometries = [dict(feature.geometry.__geo_interface__) for feature in features]
    return LabelledShapes(
        geometries, [str(feature.properties[label_field]) for feature in features], layer_crs, str(path)
    )


def open_vector(path: Path, what: str) -> Any:
    """The fiona layer of the vector file ``path`` of ``what`` (labels, parcels); else one error line naming it."""
    import fiona

    if not path.is_file():
        raise MissingInput(f"{path}: no such file of {what}")
    try:
        return fiona.open(path)
    except fiona.errors.FionaError as error:
        raise InputError(f"{path}: not a readable vector file of {what} ({one_line(error)})") from error


def vector_footprint(path: str | Path, what: str = "parcels") -> list[float]:
    """``[west, south, east, north]`` in degrees holding every feature of a vector file (``cmap map --parcels``:
    the area of a STAC API search), as :func:`footprint`."""
    with open_vector(Path(path), what) as layer:
        return [float(value) for value in transform_bounds(layer.crs, "EPSG:4326", *layer.bounds)]


def footprint(shapes: LabelledShapes) -> list[float]:
    """``[west, south, east, north]`` in degrees (EPSG:4326) holding every shape: a STAC API search's bbox (their
    bounds in their own CRS, transformed with densified edges, so that edges curved in degrees stay inside)."""
    points = [
        point for geometry in shapes.geometries for point in skipped_shapes.flat_coordinates(geometry["coordinates"])
    ]
    xs, ys = zip(*points, strict=True)
    return [float(value) for value in transform_bounds(shapes.crs, "EPSG:4326", min(xs), min(ys), max(xs), max(ys))]


def check_coordinates(path: Path, xs: np.ndarray, ys: np.ndarray, crs: str, columns: tuple[str, str]) -> None:
    """Points ``xs``, ``ys`` of the file ``path`` (its ``columns``) inside the valid range of ``crs``: longitudes
    in [-180, 180] and latitudes in [-90, 90], of the points themselves (a geographic CRS) or of their
    position on the Earth (a projected one). Else an :class:`InputError` naming the file, the columns, the
    first point out of range, and ``--crs``: projected metres read as degrees (the default EPSG:4326) fail
    here, not as PROJ's "Invalid latitude" deep in a reprojection."""
    try:
        reference = CRS.from_user_input(crs)
    except CRSError as error:
        raise InputError(f"{path}: crs {crs!r} of columns {list(columns)} is not a CRS ({one_line(error)})") from None
    longitudes, latitudes = (xs, ys) if reference.is_geographic else transform(reference, "EPSG:4326", xs, ys)
    longitudes, latitudes = np.asarray(longitudes, dtype=float), np.asarray(latitudes, dtype=float)
    outside = ~(
        np.isfinite(longitudes) & np.isfinite(latitudes) & (np.abs(longitudes) <= 180) & (np.abs(latitudes) <= 90)
    )
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise InputError(
            f"{path}: columns {columns[0]!r}, {columns[1]!r} row {row} (line {row + 2}) hold "
            f"({xs[row]:g}, {ys[row]:g}), outside the valid range of the CRS {crs} "
            f"(longitude -180..180, latitude -90..90); {int(outside.sum())} of {len(xs)} points are: "
            "give the CRS of the coordinates with --crs "
            "(e.g. --crs EPSG:32722 for UTM zone 22S metres)"
        )


@dataclass
class Extraction:
    """What :func:`extract_clear_samples` read: the series of the shapes it kept, and the shapes it skipped.

    ``skipped``: one row per shape without any series (:func:`cmap.data.skipped_shapes.skipped_table`);
    ``dropped_pixels``: pixels of kept polygons that had no valid date (left out of ``series``).
    """

    series: PixelSeries
    class_names: list[str]
    skipped: pd.DataFrame
    dropped_pixels: int = 0


def extract_samples(stack: RasterStack, shapes: LabelledShapes, **options: Any) -> tuple[PixelSeries, list[str]]:
    """The pixel series of ``stack`` under ``shapes`` (:func:`extract_clear_samples`, whose keyword ``options``
    it takes), every shape required: a shape without a series (outside the grid, clouded or without data on
    every date) is an :class:`InputError` naming the shapes and why. Returns the series and the class names."""
    extraction = extract_clear_samples(stack, shapes, **options)
    if len(extraction.skipped):
        raise InputError(skipped_shapes.strict_message(extraction.skipped, shapes.source, len(shapes.geometries)))
    return extraction.series, extraction.class_names


def extract_clear_samples(
    stack: RasterStack,
    shapes: LabelledShapes,
    class_names: Sequence[str] | None = None,
    time_axis: TimeAxis | None = None,
    window_size: int = 1024,
) -> Extraction:
    """The pixel series of ``stack`` under ``shapes``: one per point, one per pixel of a polygon,
    in the order of the shapes; series without any valid date left out, and the shapes left with
    none listed with their reason (outside the grid, masked on every date, no data on every date).

    Each series' group is its shape's index, so splits keep a polygon's pixels together. Class
    names: the sorted names of every shape's label (kept or skipped) unless ``class_names`` fixes
    the order. Days follow ``time_axis`` (default: :meth:`RasterStack.season`). No shape kept at
    all is an :class:`InputError` naming the reasons.
    """
    names = sorted(set(shapes.labels)) if class_names is None else list(class_names)
    unknown = sorted(set(shapes.labels) - set(names))
    if unknown:
        raise InputError(f"{shapes.source}: labels {unknown} are not in the class names {names}")
    index = {name: i for i, name in enumerate(names)}
    grid = ShapesOnGrid.of(stack, shapes)
    values, found = grid.series(stack, window_size)
    clear = np.isfinite(values).all(axis=-1).any(axis=-1)  # a series with at least one valid date
    reasons = {shape: "outside" for shape in sorted(set(range(len(shapes.geometries))) - set(found.tolist()))}
    unclear = sorted(set(found[~clear].tolist()) - set(found[clear].tolist()))
    if unclear:
        reasons.update(zip(unclear, grid.why_no_valid_date(stack, unclear, window_size), strict=True))
    skipped = skipped_shapes.skipped_table(shapes, dict(sorted(reasons.items())))
    if not clear.any():
        raise InputError(skipped_shapes.nothing_kept_message(skipped, shapes.source, len(shapes.geometries)))
    dropped = int((~clear & ~np.isin(found, unclear)).sum())  # pixels of kept polygons without a valid date
    found, values = found[clear], values[clear]
    days = np.broadcast_to(stack.days(time_axis or stack.season()), (len(found), len(stack.dates))).copy()
    labels = np.array([index[shapes.labels[i]] for i in found], dtype=np.int64)
    series = PixelSeries(values, days, labels, shapes.source, found.astype(np.int64))
    return Extraction(series, names, skipped, dropped)


@dataclass
class ShapesOnGrid:
    """Shapes in the CRS of a stack's grid, and the pixel of each point (-1, -1 for polygons)."""

    geometries: list[dict[str, Any]]
    is_point: np.ndarray
    point_rows: np.ndarray
    point_cols: np.ndarray

    @classmethod
    def of(cls, stack: RasterStack, shapes: LabelledShapes) -> "ShapesOnGrid":
        crs, transform = stack.profile["crs"], stack.profile["transform"]
        geometries = [transform_geom(shapes.crs, crs, geometry) for geometry in shapes.geometries]
        # Points take the pixel they fall in (one series each, even when two share a pixel); polygons
        # every pixel whose centre they contain.
        is_point = np.array([geometry["type"] == "Point" for geometry in geometries])
        point_rows, point_cols = np.full(len(geometries), -1), np.full(len(geometries), -1)
        if is_point.any():
            xs, ys = zip(*(geometries[i]["coordinates"][:2] for i in np.flatnonzero(is_point)), strict=True)
            rows, cols = rasterio.transform.rowcol(transform, xs, ys)
            point_rows[is_point], point_cols[is_point] = rows, cols
        return cls(geometries, is_point, point_rows, point_cols)

    def series(
        self, stack: RasterStack, window_size: int, wanted: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """float32 (N, T, C) series of ``stack`` under the shapes (``wanted``: only these, by index) and the
        index of each one's shape (int64 (N,)), in the order of the shapes, then of the pixels."""
        wanted = (
            np.ones(len(self.geometries), dtype=bool)
            if wanted is None
            else np.isin(np.arange(len(self.geometries)), wanted)
        )
        transform = stack.profile["transform"]
        values, shape_ids = [], []
        polygons = [(self.geometries[i], i + 1) for i in np.flatnonzero(~self.is_point & wanted)]
        with stack.open() as datasets:
            for window in stack.windows(window_size):
                height, width = int(window.height), int(window.width)
                rows, cols = self.point_rows - int(window.row_off), self.point_cols - int(window.col_off)
                inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
                points = np.flatnonzero(self.is_point & wanted & inside)
                pixels, ids = [rows[points] * width + cols[points]], [points]
                if polygons:
                    window_transform = rasterio.windows.transform(window, transform)
                    burned = rasterize(polygons, (height, width), transform=window_transform, dtype="int32").ravel()
                    covered = np.flatnonzero(burned)
                    pixels.append(covered)
                    ids.append(burned[covered] - 1)
                pixels = np.concatenate(pixels)
                if len(pixels) == 0:
                    continue
                values.append(pixel_series(stack.read(window, datasets))[pixels])
                shape_ids.append(np.concatenate(ids))
        if not shape_ids:
            return np.empty((0, len(stack.dates), len(stack.band_names)), np.float32), np.empty(0, np.int64)
        found = np.concatenate(shape_ids).astype(np.int64)
        order = np.argsort(found, kind="stable")
        return np.concatenate(values)[order], found[order]

    def why_no_valid_date(self, stack: RasterStack, shapes: list[int], window_size: int) -> list[str]:
        """Why each of ``shapes`` (on the grid, every series without a valid date) has no series:
        ``clouded`` when a date has values once the class masks (Sentinel-2's SCL) are lifted, else
        ``no_data`` (nodata, out of the valid range, outside every granule's footprint)."""
        if not any(granule.mask for granules in stack.granules for granule in granules):
            return ["no_data"] * len(shapes)
        unmasked = replace(
            stack,
            granules=[[replace(granule, mask=None, masked_classes=()) for granule in granules] for granules in
                      stack.granules],
            grid=stack.profile,
        )  # fmt: skip
        values, found = self.series(unmasked, window_size, np.array(shapes))
        with_data = set(found[np.isfinite(values).all(axis=-1).any(axis=-1)].tolist())
        return ["clouded" if shape in with_data else "no_data" for shape in shapes]
