"""STAC input: a raster stack from STAC items (a catalogue, an ItemCollection, Sentinel-2 L2A products).

    cmap map --checkpoint last.ckpt --rasters items.json --output map.tif
    cmap extract catalog/ fields.gpkg data/fields --bands B02 B03 B04 B08 B11 B12 --label_field crop

:func:`open_stack` is what ``cmap map --rasters`` and ``cmap extract RASTERS`` call: a STAC source
(:func:`is_stac_source`) becomes a stack of its items (:func:`stack_from_items`), anything else a
folder of rasters (:meth:`~cmap.data.raster.RasterStack.from_folder`). A STAC source is:

- a STAC JSON file: an ItemCollection (a STAC API search result saved to disk), a Catalog or a
  Collection (every item under it), or one Item; or its URL, where the network allows;
- a folder holding ``catalog.json`` or ``collection.json``;
- a folder of Sentinel-2 Level-2A products without STAC metadata: ``*.SAFE`` folders, or one
  folder of band COGs per product (:func:`cmap.data.sentinel2.products_in_folder`).

Items of one day form one date (tiles of one orbit pass are mosaicked). Each band of the stack is
the item's asset of that name (asset key, ``eo:bands`` name or common name; for Sentinel-2 any
spelling of :mod:`cmap.data.sentinel2`'s table, the finest resolution first). Items recognised as
Sentinel-2 L2A also get the SCL mask, the BOA offset, DN 0 as no data and the scale 1e-4.

The target grid: the one grid of every band asset when they share one (a stack read from STAC is
then the stack read from the folder, pixel for pixel); otherwise the lattice of the finest band
asset (``resolution`` to choose another pixel size, ``crs`` another projection), over the union of
the assets' footprints (``bounds`` to crop). Assets off that grid are resampled window by window.

Why pystac and rasterio's WarpedVRT, not odc-stac or stackstac: the map and the samples are read
one window at a time already (memory bounded by the window, one code path for folders and STAC);
what STAC adds is finding hrefs, dates and bands (pystac: pure Python, one dependency) and reading
assets of other resolutions or tiles onto one grid (a GDAL warped VRT per asset, in rasterio which
cmap already uses). odc-stac and stackstac build the same lazy reads on xarray and dask: two large
dependencies and a second scheduler for what one window loop does, and neither knows the
Sentinel-2 offset or the SCL classes without the same code on top.
"""

import datetime
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pystac
from pystac.stac_io import StacIO
from pystac.utils import is_absolute_href, make_absolute_href
from rasterio.crs import CRS
from rasterio.transform import Affine, array_bounds
from rasterio.warp import transform_bounds

from cmap.data import sentinel2, stac_search
from cmap.data.contract import RawValues
from cmap.data.raster import Granule, Layer, RasterStack
from cmap.data.raster_files import is_url, one_line, open_raster, raster_grid
from cmap.outputs import InputError, MissingInput
from cmap.raster_source import RasterSource

CATALOGUE_NAMES = ("catalog.json", "collection.json")


def is_stac_source(source: str | Path) -> bool:
    """A STAC file, URL or catalogue folder, or a folder of Sentinel-2 products (see the module)."""
    return stac_products(source) is not None


def stac_products(source: str | Path) -> list[sentinel2.Product] | None:
    """None when ``source`` is no STAC source (:func:`is_stac_source`); else the Sentinel-2 products of
    a folder of products, found by one look at each folder (:func:`cmap.data.sentinel2.find_products`),
    for :func:`read_items` to read without looking again; [] for a STAC file, URL or catalogue folder."""
    path = Path(source)
    if is_url(source) or path.suffix.lower() == ".json":
        return []
    if not path.is_dir():
        return None
    if any((path / name).is_file() for name in CATALOGUE_NAMES):
        return []
    return sentinel2.find_products(path) or None


def read_items(source: str | Path, products: Sequence[sentinel2.Product] | None = None) -> list[pystac.Item]:
    """The STAC items of ``source`` (a file, URL or folder: see the module), with absolute asset hrefs.

    ``products``: the Sentinel-2 products :func:`stac_products` found in a folder ``source``, which
    is then not scanned again.
    """
    source = str(source)
    path = Path(source)
    if not is_url(source) and not path.exists():
        raise MissingInput(f"{source}: no such STAC file or folder")
    if path.is_dir():
        for name in CATALOGUE_NAMES:
            if (path / name).is_file():
                return read_items(path / name)
        items = sentinel2.products_in_folder(path, products)
        if not items:
            raise InputError(
                f"{source}: neither a STAC catalogue (no {' or '.join(CATALOGUE_NAMES)}) nor Sentinel-2 L2A products "
                "(*.SAFE folders, or folders of band files with an SCL band)"
            )
        return items
    try:
        content = StacIO.default().read_json(source)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: not a readable STAC JSON file ({one_line(error)})") from error
    kind = content.get("type") if isinstance(content, dict) else None
    try:
        if kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(content, preserve_dict=False))
        elif kind == "Feature":
            items = [pystac.Item.from_dict(content, href=source, preserve_dict=False)]
        elif kind in ("Catalog", "Collection"):
            catalogue = pystac.read_file(source)
            items = list(catalogue.get_items(recursive=True))
        else:
            raise InputError(
                f"{source}: field 'type' is {kind!r}, expected a STAC 'FeatureCollection' (ItemCollection), "
                "'Catalog', 'Collection' or 'Feature' (Item)"
            )
    except (pystac.STACError, pystac.STACTypeError, KeyError, TypeError, ValueError) as error:  # missing fields
        raise InputError(f"{source}: not a valid STAC document ({type(error).__name__}: {one_line(error)})") from error
    if not items:
        raise InputError(f"{source}: the STAC {kind} holds no item")
    for item in items:  # relative hrefs of an ItemCollection are relative to its file
        for asset in item.assets.values():
            absolute = asset.get_absolute_href()
            asset.href = absolute if absolute else make_absolute_href(asset.href, source)
            if not is_url(asset.href) and not is_absolute_href(asset.href):
                asset.href = str(Path(asset.href).resolve())
    return items


def item_date(item: pystac.Item) -> datetime.date:
    """The acquisition day of an item (``datetime``, else ``start_datetime``)."""
    moment = item.datetime or item.common_metadata.start_datetime
    if moment is None:
        raise InputError(f"STAC item {item.id}: no datetime or start_datetime")
    return moment.date()


def find_asset(item: pystac.Item, band: str, sentinel2_item: bool) -> tuple[str, pystac.Asset] | None:
    """The asset of ``item`` holding ``band``: its key is ``band``, or its one band entry (``eo:bands``, or
    STAC 1.1 ``bands``) is named ``band`` (name or common name), or (Sentinel-2) its key or band entry
    spells the same band (``B02_10m``, ``blue``, ``blue-jp2``); the finest resolution first, then a COG
    before its JPEG2000 copy."""
    if band in item.assets:
        return band, item.assets[band]
    named = [(key, asset) for key, asset in item.assets.items() if band in eo_band_names(asset)]
    if not named and sentinel2_item and (wanted := sentinel2.canonical_band(band)) is not None:
        named = [
            (key, asset)
            for key, asset in item.assets.items()
            if wanted in {sentinel2.asset_key_band(key), *map(sentinel2.canonical_band, eo_band_names(asset))}
        ]
    if not named:
        return None
    return min(
        named,
        key=lambda pair: (
            sentinel2.spelled_resolution(pair[0]) or asset_resolution(pair[1]) or 0,
            sentinel2.is_jpeg2000(pair[0], pair[1].href, pair[1].media_type),
        ),
    )


def eo_band_names(asset: pystac.Asset) -> tuple[str, ...]:
    """The name and common name of an asset's one band entry (``eo:bands``, or STAC 1.1 ``bands`` with
    ``eo:common_name``); none for multi-band assets."""
    entries = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    return (
        tuple(entries[0][key] for key in ("name", "common_name", "eo:common_name") if entries[0].get(key))
        if len(entries) == 1
        else ()
    )


def asset_resolution(asset: pystac.Asset) -> float | None:
    gsd = asset.extra_fields.get("gsd")
    transform = asset.extra_fields.get("proj:transform")
    return float(gsd) if gsd else abs(float(transform[0])) if transform else None


def asset_grid(item: pystac.Item, asset: pystac.Asset) -> dict[str, Any]:
    """The grid of an asset: from its projection extension fields when complete, else its file's header.

    The transform and shape must be the asset's own (an item-level transform describes one of its
    resolutions only); the CRS may be the item's."""
    fields = {**item.properties, **asset.extra_fields}
    code = fields.get("proj:code") or (f"EPSG:{fields['proj:epsg']}" if fields.get("proj:epsg") else None)
    crs_text = code or fields.get("proj:wkt2")
    if crs_text and asset.extra_fields.get("proj:transform") and asset.extra_fields.get("proj:shape"):
        height, width = asset.extra_fields["proj:shape"]
        return {"crs": CRS.from_user_input(crs_text), "transform": Affine(*asset.extra_fields["proj:transform"][:6]),
                "width": int(width), "height": int(height)}  # fmt: skip
    with open_raster(asset.href, f" (STAC item {item.id})") as dataset:
        return raster_grid(dataset)


def target_grid(
    grids: list[dict[str, Any]],
    resolution: float | None = None,
    crs: str | None = None,
    bounds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The grid a stack is read on: the assets' one grid when they share one and nothing else is asked;
    else the lattice of the finest asset in ``crs`` (default: the first asset's), with pixels of
    ``resolution`` (default: that asset's), covering ``bounds`` (in ``crs``; default: every asset)."""
    first = grids[0]
    if resolution is None and crs is None and bounds is None and all(grid == first for grid in grids):
        return dict(first)
    target_crs = CRS.from_user_input(crs) if crs is not None else first["crs"]
    same_crs = [grid for grid in grids if grid["crs"] == target_crs]
    if not same_crs and resolution is None:
        raise InputError(f"no asset is in the CRS {target_crs}: give the resolution of the target grid")
    anchor = min(same_crs, key=lambda grid: abs(grid["transform"].a)) if same_crs else None
    size = float(resolution) if resolution is not None else abs(anchor["transform"].a)
    x0, y0 = (anchor["transform"].c, anchor["transform"].f) if anchor else (0.0, 0.0)
    if bounds is None:
        boxes = [
            transform_bounds(grid["crs"], target_crs, *array_bounds(grid["height"], grid["width"], grid["transform"]))
            for grid in grids
        ]
        bounds = (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )
    left, bottom, right, top = (float(value) for value in bounds)
    if not (left < right and bottom < top):
        raise InputError(f"bounds {list(bounds)}: expected [left, bottom, right, top] with left < right, bottom < top")
    # Snap outwards onto the anchor's lattice (rounded first: coordinates on the lattice stay on it).
    col0 = math.floor(round((left - x0) / size, 6))
    col1 = math.ceil(round((right - x0) / size, 6))
    row0 = math.floor(round((y0 - top) / size, 6))
    row1 = math.ceil(round((y0 - bottom) / size, 6))
    return {"crs": target_crs, "transform": Affine(size, 0.0, x0 + col0 * size, 0.0, -size, y0 - row0 * size),
            "width": col1 - col0, "height": row1 - row0}  # fmt: skip


def stack_from_items(
    items: Sequence[pystac.Item],
    bands: Sequence[str] | None = None,
    scale: float | None = None,
    offset: float | None = None,
    valid_range: tuple[float, float] | None = None,
    resolution: float | None = None,
    crs: str | None = None,
    bounds: Sequence[float] | None = None,
    masked_classes: Sequence[int] | None = None,
    resampling: str = "nearest",
    source: str = "STAC items",
) -> RasterStack:
    """A :class:`~cmap.data.raster.RasterStack` of STAC items (see the module for the bands and the grid).

    ``bands``: the bands to read, in order (a checkpoint's band names); default: Sentinel-2's
    :data:`~cmap.data.sentinel2.DEFAULT_BANDS` for Sentinel-2 L2A items, else required.
    ``scale``, ``offset`` default to 1e-4 and 0 for Sentinel-2 L2A, else 1 and 0.
    ``masked_classes``: SCL classes that make a date missing (default
    :data:`~cmap.data.sentinel2.MASKED_SCL_CLASSES`); ``[]`` masks nothing.
    """
    if not items:
        raise InputError(f"{source}: no STAC item")
    is_s2 = [sentinel2.is_sentinel2_l2a(item) for item in items]
    if any(is_s2) and not all(is_s2):
        other = items[is_s2.index(False)].id
        raise InputError(f"{source}: item {other} is not Sentinel-2 L2A while others are; give items of one kind")
    s2 = all(is_s2)
    if bands is None:
        if not s2:
            raise InputError(f"{source}: name the bands to read (--bands); items' assets: {sorted(items[0].assets)}")
        bands = sentinel2.DEFAULT_BANDS
    bands = list(bands)
    masked = tuple(sentinel2.MASKED_SCL_CLASSES if masked_classes is None else masked_classes)
    by_date: dict[datetime.date, list[Granule]] = {}
    grids = []
    for item in sorted(items, key=lambda item: (item_date(item), item.id)):
        layers, offsets = [], set()
        for band in bands:
            found = find_asset(item, band, s2)
            if found is None:
                raise InputError(
                    f"STAC item {item.id}: no asset for band {band!r} (asset keys: {sorted(item.assets)}"
                    + ("; Sentinel-2 band names: cmap.data.sentinel2" if s2 else "")
                    + ")"
                )
            key, asset = found
            layers.append(Layer(asset.href, 1))
            grids.append(asset_grid(item, asset))
            if s2:
                offsets.add(sentinel2.boa_offset(item, asset))
        if len(offsets) > 1:
            raise InputError(f"STAC item {item.id}: bands carry different BOA offsets {sorted(offsets)}")
        mask = None
        if s2 and masked:
            found = find_asset(item, "SCL", True)
            if found is None:
                raise InputError(
                    f"STAC item {item.id}: no SCL asset to mask clouds (asset keys: {sorted(item.assets)}); "
                    "pass --masked_classes '[]' to read it without a cloud mask"
                )
            mask = Layer(found[1].href, 1)
        granule = Granule(
            tuple(layers), item.id, mask, masked if mask else (),
            raw_offset=offsets.pop() if offsets else 0.0, nodata=sentinel2.NODATA if s2 else None,
        )  # fmt: skip
        by_date.setdefault(item_date(item), []).append(granule)
    dates = sorted(by_date)
    return RasterStack(
        [by_date[date] for date in dates], dates, bands,
        (sentinel2.SCALE if s2 else 1.0) if scale is None else scale, 0.0 if offset is None else offset,
        valid_range, target_grid(grids, resolution, crs, bounds), resampling,
    )  # fmt: skip


def stack_from_stac(
    source: str | Path,
    bands: Sequence[str] | None = None,
    products: Sequence[sentinel2.Product] | None = None,
    **options: Any,
) -> RasterStack:
    """:func:`stack_from_items` of :func:`read_items` (``source`` named in errors; ``products`` as there)."""
    return stack_from_items(read_items(source, products), bands, source=str(source), **options)


def open_stack(
    source: RasterSource,
    bands: Sequence[str] | None,
    raw_values: RawValues | None = None,
    items_path: str | Path | None = None,
    area: Sequence[float] | None = None,
) -> RasterStack:
    """The stack ``cmap map`` and ``cmap extract`` read: STAC (:func:`stac_products`) or a folder of rasters.

    Raw values: explicit ``scale``, ``offset``, ``valid_range`` first, then ``raw_values`` (a
    checkpoint's convention), then the input's own (Sentinel-2 L2A: 1e-4), then 1, 0 and none.

    A STAC API search (``source.search``) is run first and its items saved to ``items_path`` (where the
    output's are, :func:`cmap.data.stac_search.items_path`), then read from there; ``area``: the search's
    bbox in degrees when it names none (default: ``bounds`` in ``grid_crs``).
    """
    if source.search is not None:
        if items_path is None:
            raise InputError(f"{source.rasters}: a STAC API search needs a file to save its items in")
        if area is None and source.bounds is not None and source.grid_crs is not None:
            area = transform_bounds(CRS.from_user_input(source.grid_crs), "EPSG:4326", *source.bounds)
        saved = stac_search.save_search(source.rasters, dict(source.search), Path(items_path), area)
        source = replace(source, rasters=str(saved), search=None)
    scale, offset, valid_range = source.scale, source.offset, source.valid_range
    if raw_values is not None:
        scale = raw_values.scale if scale is None else scale
        offset = raw_values.offset if offset is None else offset
        valid_range = raw_values.valid_range if valid_range is None else valid_range
    products = stac_products(source.rasters)  # one look at a folder of products, passed on
    if products is not None:
        return stack_from_stac(
            source.rasters, bands, products, scale=scale, offset=offset, valid_range=valid_range,
            resolution=source.resolution, masked_classes=source.masked_classes, resampling=source.resampling,
            crs=source.grid_crs, bounds=source.bounds,
        )  # fmt: skip
    given = source.stac_options_given()
    if given:
        raise InputError(
            f"{source.rasters}: a folder of rasters is read on its own grid, without a class mask; {', '.join(given)} "
            "are for STAC and Sentinel-2 inputs"
        )
    return RasterStack.from_folder(
        source.rasters,
        source.pattern,
        bands,
        1.0 if scale is None else scale,
        0.0 if offset is None else offset,
        valid_range,
    )
