"""``cmap suggest --map MAP.tif OUTPUT``: the pixels of a crop map to label next, from the class
probabilities ``cmap map`` wrote beside it (``MAP_probs.tif``: one uint8 band per class, percent with
GDAL's scale 0.01, bands named by class, nodata 255; :mod:`cmap.mapping.products`).

The candidates are the pixels with valid probabilities (no nodata band, not all zero). The raster is
read once, in windows of whole blocks, and only the most uncertain pixels are kept (:func:`read_pool`), so a big
map never needs its K x H x W probabilities in memory: the ``10 N`` most uncertain for
``--diversity clusters`` (what :func:`~cmap.labelling.selection.cluster_select` clusters anyway), the
:data:`DISTANCE_POOL` most uncertain for ``--diversity distance``. Ties keep the raster's order
(row by row), so the result does not depend on the windows. Diversity counts in the pixel centres'
coordinates, in the map's CRS units. The outputs are those of the store path (:mod:`cmap.labelling.tables`)
with ``pixel_row``, ``pixel_column`` for ``row``, the centres' ``x``, ``y`` (map CRS) and ``longitude``,
``latitude`` (EPSG:4326), and an empty ``label`` column for the field campaign to fill, so that
``cmap extract`` reads the points back as training labels.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmap.labelling.selection import auto_distance, cluster_select, select, uncertainty
from cmap.labelling.tables import check_table_output, is_own_table, write_csv, write_points
from cmap.outputs import InputError, MissingInput, check_outputs

#: How many of the most uncertain pixels ``--diversity distance`` chooses among (at least 10 N).
DISTANCE_POOL = 100_000
#: The uint8 probabilities read at once (bytes): windows of whole blocks of about this size.
READ_BYTES = 1 << 20
#: GDAL's block cache while the probabilities are read (bytes).
CACHE_BYTES = 16 << 20


@dataclass
class PixelPool:
    """The most uncertain valid pixels of a probability raster, most uncertain first (ties: raster order)."""

    index: np.ndarray  # (P,) int64 row * width + column
    percent: np.ndarray  # (P, K) uint8 class probabilities in percent
    scores: np.ndarray  # (P,) float64 uncertainty
    candidates: int  # every valid pixel of the raster
    width: int  # of the raster: index // width is the pixel's row


def open_probabilities(map_path: Path) -> tuple[Path, list[str]]:
    """The probability raster beside ``map_path`` and its class names; one error line if it is missing or
    not what ``cmap map`` writes."""
    import rasterio

    from cmap.mapping.products import probabilities_path

    path = probabilities_path(map_path)
    if not path.is_file():
        hint = " (give the class map, not its probabilities)" if map_path.stem.endswith("_probs") else ""
        raise MissingInput(
            f"{path}: not found; expected the class probabilities cmap map writes beside {map_path}{hint} "
            "(unless --probabilities false)"
        )
    try:
        dataset = rasterio.open(path)
    except rasterio.errors.RasterioError as error:
        raise InputError(f"{path}: not a readable raster ({error})") from None
    with dataset:
        try:
            class_names = json.loads(dataset.tags().get("class_names", "null"))
        except json.JSONDecodeError:
            class_names = None
        expected = "a cmap map probability raster: uint8 percent, scale 0.01, one band per class named in class_names"
        if not isinstance(class_names, list) or len(class_names) != dataset.count:
            raise InputError(f"{path}: tag class_names: {class_names!r} for {dataset.count} bands, expected {expected}")
        if set(dataset.dtypes) != {"uint8"} or any(scale != 0.01 for scale in dataset.scales):
            raise InputError(f"{path}: dtype {dataset.dtypes[0]}, scale {dataset.scales[0]}; expected {expected}")
        if any(name is not None for name in dataset.descriptions) and list(dataset.descriptions) != class_names:
            raise InputError(f"{path}: band descriptions {list(dataset.descriptions)}, expected {class_names}")
        if dataset.crs is None:
            raise InputError(f"{path}: no CRS; expected the map's georeferencing (pixel coordinates are written)")
    return path, [str(name) for name in class_names]


def read_windows(dataset) -> list:
    """Windows of whole blocks covering the raster, each about :data:`READ_BYTES` of probabilities."""
    from rasterio.windows import Window

    block_rows, block_columns = dataset.block_shapes[0]
    per_row = READ_BYTES // max(1, dataset.count * block_rows)  # pixels of a block row that fit
    columns = min(dataset.width, max(block_columns, per_row // block_columns * block_columns))
    rows = max(block_rows, READ_BYTES // max(1, dataset.count * columns) // block_rows * block_rows)
    return [
        Window(left, top, min(columns, dataset.width - left), min(rows, dataset.height - top))
        for top in range(0, dataset.height, rows)
        for left in range(0, dataset.width, columns)
    ]


def read_pool(path: Path, measure: str, size: int) -> PixelPool:
    """One pass over the raster ``path``, window by window: the ``size`` most uncertain valid pixels."""
    import rasterio

    # Each block is read once: GDAL's block cache (by default 5 % of the memory) would only keep dead blocks.
    with rasterio.Env(GDAL_CACHEMAX=CACHE_BYTES), rasterio.open(path) as dataset:
        width, nodata = dataset.width, dataset.nodata
        pool = PixelPool(np.zeros(0, np.int64), np.zeros((0, dataset.count), np.uint8), np.zeros(0), 0, width)
        for window in read_windows(dataset):
            percent = dataset.read(window=window).reshape(dataset.count, -1).T  # (h * w, K) uint8
            invalid = (percent == nodata).any(axis=1) if nodata is not None else np.zeros(len(percent), bool)
            valid = np.flatnonzero(~invalid & (percent.max(axis=1) > 0))
            rows, columns = np.divmod(valid, window.width)
            index = (window.row_off + rows) * width + window.col_off + columns
            percent = percent[valid]
            if (percent > 100).any():
                pixel, band = np.argwhere(percent > 100)[0]
                row, column = divmod(int(index[pixel]), width)
                raise InputError(
                    f"{path}: band {band + 1} row {row} column {column} holds {percent[pixel, band]}, "
                    f"expected a percent (0..100) or nodata ({nodata})"
                )
            pool = merge(pool, index, percent, uncertainty(percent / 100.0, measure), size)
    return pool


def merge(pool: PixelPool, index: np.ndarray, percent: np.ndarray, scores: np.ndarray, size: int) -> PixelPool:
    """The ``size`` most uncertain of ``pool`` and a window's pixels, most uncertain first; among ties, the
    first in raster order (row by row), whatever the windows."""
    candidates = pool.candidates + len(index)
    if len(pool.scores) >= size:  # a window's pixel must at least tie with the pool's least uncertain to enter
        keep = scores >= pool.scores[-1]
        index, percent, scores = index[keep], percent[keep], scores[keep]
    index = np.concatenate([pool.index, index])
    scores = np.concatenate([pool.scores, scores])
    order = np.lexsort((index, -scores))[:size]
    percent = np.concatenate([pool.percent, percent])[order]
    return PixelPool(index[order], percent, scores[order], candidates, pool.width)


def pixel_centres(path: Path, rows: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(P, 2) pixel centres in the raster's CRS, (P, 2) longitude / latitude (EPSG:4326) and the CRS (WKT)."""
    import rasterio
    from rasterio.warp import transform

    with rasterio.open(path) as dataset:
        xs, ys = rasterio.transform.xy(dataset.transform, rows, columns, offset="center")
        crs = dataset.crs
    points = np.column_stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)]).reshape(-1, 2)
    longitudes, latitudes = transform(crs, "EPSG:4326", points[:, 0], points[:, 1])
    return points, np.column_stack([longitudes, latitudes]).reshape(-1, 2), crs.to_wkt()


def suggest_from_map(
    map_path: Path,
    output: Path,
    n: int,
    measure: str,
    diversity: str,
    min_distance: float | None = None,
    balanced: bool = False,
) -> pd.DataFrame:
    """``n`` pixels of the map to label next (``diversity`` ``clusters`` or ``distance``; ``min_distance``
    in map units, None: from the data), written to ``output`` (CSV) and a GeoPackage beside it; the table."""
    check_table_output(output)
    path, class_names = open_probabilities(map_path)
    outputs = [output, output.with_suffix(".gpkg")]
    inputs = [map_path, path]
    check_outputs(outputs, inputs, is_own_table, "sample table")
    pool = read_pool(path, measure, 10 * n if diversity == "clusters" else max(10 * n, DISTANCE_POOL))
    if n > pool.candidates:
        raise InputError(
            f"{path}: --n {n} but only {pool.candidates} candidate pixels (with probabilities, not nodata or all zero)"
        )
    rows, columns = np.divmod(pool.index, pool.width)
    points, lonlat, crs = pixel_centres(path, rows, columns)
    probabilities = pool.percent / 100.0
    if diversity == "clusters":
        chosen, rule = cluster_select(pool.scores, n, points), "one per k-means cluster in map coordinates"
    else:
        if min_distance is None:
            min_distance = auto_distance(points, pool.scores, n)
        predicted = probabilities.argmax(axis=1) if balanced else None
        chosen = select(pool.scores, n, points, min_distance, predicted, len(class_names))
        rule = f"minimum distance {min_distance:.4g} map units"
    table = pd.DataFrame(
        {
            "pixel_row": rows[chosen],
            "pixel_column": columns[chosen],
            "sample_id": [f"r{row}c{column}" for row, column in zip(rows[chosen], columns[chosen], strict=True)],
            "rank": np.arange(1, len(chosen) + 1),
            "predicted": [class_names[k] for k in probabilities[chosen].argmax(axis=1)],
            "confidence": probabilities[chosen].max(axis=1),
            "uncertainty": pool.scores[chosen],
        }
    )
    for k, name in enumerate(class_names):
        table[f"probability/{name}"] = probabilities[chosen, k]
    table = table.assign(
        x=points[chosen, 0], y=points[chosen, 1], longitude=lonlat[chosen, 0], latitude=lonlat[chosen, 1], label=""
    )
    write_points(table, points[chosen], outputs[1], crs)
    write_csv(table, output)
    print(
        f"cmap suggest: {n} of {pool.candidates} candidate pixels of {map_path} ({measure}, {rule}) -> {output}",
        flush=True,
    )
    return table
