"""Parcels of a crop map: per polygon (a field), its majority class, class shares and mean probabilities.

``cmap map ... --parcels fields.gpkg`` (or :func:`summarise_parcels` on a finished map) reads the
polygons of any vector file fiona reads (GeoPackage, Shapefile, GeoJSON, ...), and writes them, with
their own attributes, to a GeoPackage layer ``parcels`` with:

- ``class``, ``class_index``: the most frequent class of the parcel's pixels (empty, -1 without any);
- ``class_share``: the share of the parcel's mapped pixels in that class;
- ``pixels``: mapped pixels of the parcel (pixel centres inside the polygon, not nodata);
  ``nodata_pixels``: its pixels without a class (no valid date);
- ``pixels_<class>``: pixels of each class;
- ``probability_<class>``: the mean probability of each class over the parcel's pixels (0..1, from the
  probability raster), when the map has one.

Polygons are read in their CRS and transformed to the map's; the output keeps the input geometries
and CRS. Each polygon is rasterised on its own bounding window, so overlapping parcels each count
all their pixels. The layer is written under a temporary name, read back and renamed (:mod:`cmap.outputs`).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.features import geometry_window, rasterize
from rasterio.warp import transform_geom
from rasterio.windows import WindowError

from cmap.outputs import InputError, MissingInput, check_outputs, publish, remove_stale_partials, temporary_path

LAYER = "parcels"


def parcel_fields(class_names: Sequence[str]) -> dict[str, str]:
    """The fields added to each parcel, with their fiona types."""
    return {
        "class": "str",
        "class_index": "int",
        "class_share": "float",
        "pixels": "int",
        "nodata_pixels": "int",
        **{f"pixels_{name}": "int" for name in class_names},
        **{f"probability_{name}": "float" for name in class_names},
    }


def is_cmap_parcels(path: Path) -> bool:
    """A GeoPackage of parcels written by cmap (a ``parcels`` layer with the ``class`` and ``pixels`` fields)."""
    import fiona

    try:
        with fiona.open(path, layer=LAYER) as layer:
            return {"class", "pixels"} <= set(layer.schema["properties"])
    except Exception:  # not a vector file, or no such layer
        return False


@dataclass(frozen=True)
class ParcelPolygons:
    """The polygons of a vector file, read and checked once (:func:`read_parcels`) for the summary
    against a map of ``class_names``: ``cmap map`` reads them before the map and hands them to
    :func:`summarise_parcels` after it."""

    path: Path
    class_names: tuple[str, ...]
    schema: dict[str, Any]
    crs: Any
    features: list[Any]  # fiona features, in the file's order


def summarise_parcels(
    classes: str | Path,
    polygons: str | Path | ParcelPolygons,
    output: str | Path,
    probabilities: str | Path | None = None,
) -> Path:
    """Per polygon of ``polygons``, the class summary of the class map ``classes`` (see the module).

    Args:
        classes: a class map of ``cmap map`` (its class names in its tags).
        polygons: a vector file of polygons (its first layer), read and checked here, or the
            :class:`ParcelPolygons` already read and checked (:func:`read_parcels`, as ``cmap map`` does).
        output: the GeoPackage to write (layer ``parcels``).
        probabilities: the map's probability raster (``*_probs.tif``): adds the mean probabilities.
    """
    import fiona

    classes, output = Path(classes), Path(output)
    path = polygons.path if isinstance(polygons, ParcelPolygons) else Path(polygons)
    check_outputs([output], [classes, path, *([Path(probabilities)] if probabilities else [])],
                  is_cmap_parcels, "parcel layer")  # fmt: skip
    with rasterio.open(classes) as class_map:
        class_names = json.loads(class_map.tags()["class_names"])
        if not isinstance(polygons, ParcelPolygons):
            polygons = read_parcels(path, class_names)
        elif list(polygons.class_names) != class_names:
            raise ValueError(f"{path}: read for the classes {list(polygons.class_names)}, {classes} has {class_names}")
        schema = {
            "geometry": polygons.schema["geometry"],
            "properties": {**polygons.schema["properties"], **parcel_fields(class_names)},
        }
        probability_map = rasterio.open(probabilities) if probabilities else None
        try:
            rows = [
                summarise(feature, class_map, probability_map, class_names, polygons.crs)
                for feature in polygons.features
            ]
        finally:
            if probability_map is not None:
                probability_map.close()
    remove_stale_partials(output)
    temporary = temporary_path(output, ".gpkg")  # the GPKG driver wants the .gpkg extension
    try:
        with fiona.open(temporary, "w", driver="GPKG", layer=LAYER, schema=schema, crs=polygons.crs) as sink:
            sink.writerecords(rows)
        with fiona.open(temporary, layer=LAYER) as written:
            count = sum(1 for _ in written)
        if count != len(rows):
            raise OSError(f"{temporary}: {count} parcels read back, {len(rows)} written")
        publish(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return output


def read_parcels(polygons: str | Path, class_names: Sequence[str]) -> ParcelPolygons:
    """The polygons of a readable vector file whose fields the summary would not overwrite, read once;
    else an :class:`InputError` naming the file and the feature or fields (``cmap map`` runs it
    before any map is made)."""
    import fiona

    polygons = Path(polygons)
    if not polygons.is_file():
        raise MissingInput(f"{polygons}: no such file of parcels")
    try:
        source = fiona.open(polygons)
    except fiona.errors.FionaError as error:
        raise InputError(f"{polygons}: not a readable vector file of parcels ({error})") from error
    with source:
        clashes = sorted(set(parcel_fields(class_names)) & set(source.schema["properties"]))
        if clashes:
            raise InputError(f"{polygons}: fields {clashes} would be overwritten by the parcel summary; rename them")
        features = []
        for index, feature in enumerate(source):
            kind = None if feature.geometry is None else feature.geometry.type
            if kind not in ("Polygon", "MultiPolygon"):
                raise InputError(f"{polygons}: feature {index} is a {kind}, expected a Polygon or MultiPolygon")
            features.append(feature)
        return ParcelPolygons(polygons, tuple(class_names), source.schema, source.crs, features)


def summarise(
    feature: Any, class_map: Any, probability_map: Any | None, class_names: Sequence[str], crs: Any
) -> dict[str, Any]:
    """One parcel's output record: its geometry and properties, and the class summary of its pixels."""
    geometry = dict(feature.geometry.__geo_interface__)
    shape = transform_geom(crs, class_map.crs, geometry)
    counts = np.zeros(len(class_names), dtype=np.int64)
    probability_sums = np.zeros(len(class_names))
    inside = 0
    try:
        window = geometry_window(class_map, [shape])
    except WindowError:  # outside the map
        window = None
    if window is not None and window.width > 0 and window.height > 0:
        burned = rasterize(
            [(shape, 1)],
            out_shape=(int(window.height), int(window.width)),
            transform=class_map.window_transform(window),
            dtype="uint8",
        ).astype(bool)
        values = class_map.read(1, window=window)
        mapped = burned & (values != class_map.nodata)
        inside = int(burned.sum())
        counts = np.bincount(values[mapped], minlength=len(class_names))[: len(class_names)]
        if probability_map is not None and mapped.any():
            probability_sums = probability_map.read(window=window)[:, mapped].sum(axis=1) * 0.01
    pixels = int(counts.sum())
    majority = int(counts.argmax()) if pixels else -1
    properties = {
        **dict(feature.properties),
        "class": class_names[majority] if pixels else None,
        "class_index": majority,
        "class_share": float(counts[majority] / pixels) if pixels else None,
        "pixels": pixels,
        "nodata_pixels": inside - pixels,
        **{f"pixels_{name}": int(count) for name, count in zip(class_names, counts, strict=True)},
        **{
            f"probability_{name}": (float(total / pixels) if pixels and probability_map is not None else None)
            for name, total in zip(class_names, probability_sums, strict=True)
        },
    }
    return {"geometry": geometry, "properties": properties}
