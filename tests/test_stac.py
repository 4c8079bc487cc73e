"""STAC and Sentinel-2 L2A input (cmap.data.stac, cmap.data.sentinel2) for cmap map and cmap extract.

The Sinop MODIS cube, written as a STAC catalogue, must map exactly as its folder does. Sentinel-2
L2A collections are generated small, with the real products' names, grids and value conventions:
two 10 m / 20 m tiles of UTM zone 31N overlapping by 80 m, DN = reflectance * 10000 (+ 1000 from
processing baseline 04.00), DN 0 no data, an SCL band at 20 m.
"""

import datetime
import functools
import http.server
import io
import json
import multiprocessing
import pickle
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from cmap.cli import main as cmap_main
from cmap.data import __main__ as cmap_data
from cmap.data import open_store
from cmap.data import sentinel2 as s2
from cmap.data.raster import RasterStack
from cmap.data.stac import is_stac_source, open_stack, read_items, stack_from_stac, target_grid
from cmap.mapping import map_rasters
from cmap.mapping.command import build_parser as map_command_parser
from cmap.mapping.products import probabilities_path
from cmap.outputs import InputError
from cmap.raster_source import RasterSource

from .conftest import require
from .test_map import (  # noqa: F401
    SINOP,
    SINOP_PATTERN,
    fit_checkpoint,
    mato_grosso_ndvi12,
    ndvi_checkpoint,
    synthetic_stack,
)

# ---------------------------------------------------------------------------------------------
# The Sinop cube as STAC
# ---------------------------------------------------------------------------------------------


def sinop_items() -> list[pystac.Item]:
    """One item per date of the Sinop cube, asset ``NDVI`` pointing at the original JPEG2000 file."""
    items = []
    for path in sorted(require(SINOP).glob("TERRA_MODIS_012010_NDVI_*.jp2")):
        date = datetime.datetime.fromisoformat(path.stem[-10:]).replace(tzinfo=datetime.timezone.utc)
        item = pystac.Item(f"MOD13Q1_012010_{date:%Y%m%d}", None, None, date, {"platform": "terra"})
        item.add_asset("NDVI", pystac.Asset(str(path), media_type=pystac.MediaType.JPEG2000, roles=["data"]))
        items.append(item)
    return items


def sinop_tiles(folder: Path, overlap: int = 20) -> list[pystac.Item]:
    """The Sinop cube cut into two GeoTIFF tiles per date (west, east) overlapping by ``overlap`` pixels,
    without nodata (as the JPEG2000 originals): each is off the cube's grid, read through a warped VRT
    whose alpha band marks its footprint, and the two are mosaicked."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for item in sinop_items():
        with rasterio.open(item.assets["NDVI"].href) as dataset:
            half = dataset.width // 2
            for name, window in (
                ("west", Window(0, 0, half + overlap, dataset.height)),
                ("east", Window(half - overlap, 0, dataset.width - half + overlap, dataset.height)),
            ):
                path = folder / f"{item.id}_{name}.tif"
                with rasterio.open(
                    path,
                    "w",
                    driver="GTiff",
                    width=int(window.width),
                    height=dataset.height,
                    count=1,
                    dtype="int16",
                    crs=dataset.crs,
                    transform=dataset.window_transform(window),
                ) as tile:
                    tile.write(dataset.read(1, window=window), 1)
                tile_item = pystac.Item(f"{item.id}_{name}", None, None, item.datetime, {})
                tile_item.add_asset("NDVI", pystac.Asset(path.name))  # relative to the ItemCollection's file
                items.append(tile_item)
    return items


def sinop_catalogue(folder: Path) -> Path:
    catalogue = pystac.Catalog("sinop", "The Sinop MODIS NDVI cube of R sits")
    catalogue.add_items(sinop_items())
    catalogue.normalize_and_save(str(folder), pystac.CatalogType.SELF_CONTAINED)
    return folder


def test_the_sinop_cube_read_from_stac_is_the_cube_read_from_its_folder(tmp_path):
    folder = RasterStack.from_folder(require(SINOP), SINOP_PATTERN, ["NDVI"], 1e-4, 0.0, (-2000, 10000))
    catalogue = sinop_catalogue(tmp_path / "catalogue")
    assert is_stac_source(catalogue) and not is_stac_source(SINOP)
    stack = stack_from_stac(catalogue, ["NDVI"], scale=1e-4, valid_range=(-2000, 10000))
    assert stack.dates == folder.dates and stack.profile == folder.profile
    np.testing.assert_array_equal(stack.read(), folder.read())
    tiles = tmp_path / "tiles" / "items.json"
    tiles.parent.mkdir()
    tiles.write_text(json.dumps(pystac.ItemCollection(sinop_tiles(tiles.parent)).to_dict(transform_hrefs=False)))
    stack = stack_from_stac(tiles, ["NDVI"], scale=1e-4, valid_range=(-2000, 10000))
    assert [len(granules) for granules in stack.granules] == [2] * 12 and stack.profile == folder.profile
    np.testing.assert_array_equal(stack.read(), folder.read())
    window = Window(100, 40, 64, 64)  # across the two tiles' overlap (columns 107 to 147)
    np.testing.assert_array_equal(stack.read(window), folder.read(window))


def test_the_sinop_map_from_its_stac_catalogue_equals_the_map_from_its_folder(ndvi_checkpoint, tmp_path):  # noqa: F811
    catalogue = sinop_catalogue(tmp_path / "catalogue")
    collection = tmp_path / "tiles" / "search.json"  # a STAC API search saved to disk: an ItemCollection, two tiles
    collection.parent.mkdir()
    collection.write_text(
        json.dumps(pystac.ItemCollection(sinop_tiles(collection.parent)).to_dict(transform_hrefs=False))
    )
    maps = []
    for name, rasters, options in (
        ("folder", require(SINOP), {"pattern": SINOP_PATTERN}),
        ("catalogue", catalogue, {}),
        ("collection", collection, {}),
    ):
        output = tmp_path / name / "sinop.tif"
        map_rasters(str(ndvi_checkpoint), str(rasters), str(output), scale=1e-4, valid_range=(-2000, 10000),
                    window_size=64, progress=False, **options)  # fmt: skip
        with rasterio.open(output) as classes, rasterio.open(probabilities_path(output)) as probabilities:
            maps.append((classes.read(), probabilities.read(), classes.profile))
    for classes, probabilities, profile in maps[1:]:
        np.testing.assert_array_equal(classes, maps[0][0])
        np.testing.assert_array_equal(probabilities, maps[0][1])
        assert profile["crs"] == maps[0][2]["crs"] and profile["transform"] == maps[0][2]["transform"]
    assert (maps[0][0] != 255).all() and len(np.unique(maps[0][0])) > 1


# ---------------------------------------------------------------------------------------------
# Sentinel-2 L2A conventions
# ---------------------------------------------------------------------------------------------


def test_band_names_of_every_provider_map_to_the_esa_names():
    spellings = {"B02": "B02", "B2": "B02", "blue": "B02", "B02_10m": "B02", "b02": "B02", "B8A": "B8A",
                 "B08A": "B8A", "nir08": "B8A", "B8A_20m": "B8A", "swir22": "B12", "SCL_20m": "SCL", "scl": "SCL",
                 "B08": "B08", "nir": "B08", "coastal": "B01"}  # fmt: skip
    assert {name: s2.canonical_band(name) for name in spellings} == spellings
    assert [s2.canonical_band(name) for name in ("NDVI", "B10", "visual", "AOT", "B13")] == [None] * 5
    assert s2.MASKED_SCL_CLASSES == (0, 1, 3, 8, 9, 10, 11)


def l2a_item(item_id: str, properties: dict, raster_bands: list | None = None) -> pystac.Item:
    item = pystac.Item(item_id, None, None, datetime.datetime(2022, 3, 1, tzinfo=datetime.timezone.utc),
                       {"platform": "sentinel-2a", **properties})  # fmt: skip
    extra = {"raster:bands": raster_bands} if raster_bands else {}
    item.add_asset("B04", pystac.Asset("B04.tif", extra_fields=extra))
    item.add_asset("SCL", pystac.Asset("SCL.tif"))
    return item


@pytest.mark.parametrize(
    "item_id, properties, raster_bands, expected",
    [
        ("S2A_MSIL2A_20220301T105000_N0400_R051_T31TCJ_20220301T130000", {}, None, -1000),  # baseline in the name
        ("x", {"s2:processing_baseline": "03.01"}, None, 0),
        ("x", {"s2:processing_baseline": "05.09"}, None, -1000),
        ("x", {"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True}, None, 0),
        ("x", {}, [{"scale": 0.0001, "offset": -0.1}], -1000),  # Earth Search v1's raster:bands
        ("x", {"cmap:boa_add_offset": -1000.0}, None, -1000),  # from MTD_MSIL2A.xml
    ],
)
def test_the_boa_offset_comes_from_the_products_metadata(item_id, properties, raster_bands, expected):
    item = l2a_item(item_id, properties, raster_bands)
    assert s2.is_sentinel2_l2a(item)
    assert s2.boa_offset(item, item.assets["B04"]) == expected


def test_an_unknown_processing_baseline_is_an_error_not_a_guess():
    item = l2a_item("S2A_31TCJ_20220301_0_L2A", {})
    with pytest.raises(InputError, match=r"S2A_31TCJ_20220301_0_L2A: the Sentinel-2 processing baseline is unknown"):
        s2.boa_offset(item, item.assets["B04"])


def test_the_target_grid_is_the_finest_lattice_over_every_asset():
    ten = {"crs": rasterio.CRS.from_epsg(32631), "transform": from_origin(300_000, 4_900_000, 10, 10), "width": 32,
           "height": 32}  # fmt: skip
    twenty = {**ten, "transform": from_origin(300_240, 4_900_000, 20, 20), "width": 16, "height": 16}
    assert target_grid([ten, ten]) == ten
    grid = target_grid([twenty, ten])  # the 10 m lattice, over both footprints
    assert grid["transform"] == ten["transform"] and (grid["width"], grid["height"]) == (56, 32)
    coarse = target_grid([twenty, ten], resolution=20)
    assert coarse["transform"] == from_origin(300_000, 4_900_000, 20, 20) and coarse["width"] == 28
    cropped = target_grid([twenty, ten], bounds=(300_015, 4_899_800, 300_100, 4_899_990))
    assert cropped["transform"] == from_origin(300_010, 4_899_990, 10, 10)
    assert (cropped["width"], cropped["height"]) == (9, 19)


# ---------------------------------------------------------------------------------------------
# A generated two-tile, two-resolution Sentinel-2 L2A collection
# ---------------------------------------------------------------------------------------------

CRS = "EPSG:32631"
TILES = {"31TCJ": 300_000.0, "31TDJ": 300_240.0}  # x origins: 320 m tiles overlapping by 80 m
TOP = 4_900_000.0
TILE_METRES = 320
DATES = ["2021-12-01", "2021-12-21", "2022-01-10", "2022-01-30", "2022-02-19", "2022-03-11"]
#: Reflectance profiles (B04, B08, B11) x date of the two crops, in stripes 80 m wide.
PROFILES = {
    "maize": [[0.10, 0.09, 0.07, 0.05, 0.04, 0.04], [0.20, 0.25, 0.32, 0.40, 0.45, 0.45],
              [0.25, 0.24, 0.22, 0.20, 0.18, 0.18]],
    "wheat": [[0.05, 0.05, 0.06, 0.08, 0.10, 0.12], [0.42, 0.40, 0.35, 0.28, 0.22, 0.20],
              [0.18, 0.19, 0.21, 0.23, 0.25, 0.26]],
}  # fmt: skip
CROPS = list(PROFILES)
BANDS = {"B04": 10, "B08": 10, "B11": 20}  # ESA name -> metres
#: A pixel under an SCL cloud (in 31TCJ only), and its date: the 20 m SCL pixel masks it and its 3 neighbours.
CLOUD_X, CLOUD_Y, CLOUD_DATE = 300_105.0, 4_899_855.0, 2


def crop_at(x: np.ndarray) -> np.ndarray:
    """The crop index of easting ``x``: stripes of 80 m."""
    return ((x - 300_000) // 80).astype(int) % 2


def baseline(date: str) -> str:
    return "04.00" if date >= "2022-01-25" else "03.01"  # ESA's switch to 04.00: 25 January 2022


def product_rasters(tile: str, t: int, variant: str = "cloud") -> dict[str, tuple[np.ndarray, object]]:
    """DN arrays and transforms of one product: ESA band name -> (uint16 array, transform).

    ``variant`` of the cloudy pixel: ``cloud`` (bright DNs, SCL 9), ``missing`` (DN 0, SCL 4).
    """
    x0, offset = TILES[tile], (1000 if baseline(DATES[t]) >= "04.00" else 0)
    rng = np.random.default_rng(t * 10 + list(TILES).index(tile))
    out = {}
    for band, metres in {**BANDS, "SCL": 20}.items():
        size = TILE_METRES // metres
        xs = x0 + metres * (np.arange(size) + 0.5)
        transform = from_origin(x0, TOP, metres, metres)
        if band == "SCL":
            dn = np.full((size, size), 4, dtype=np.uint8)  # vegetation
        else:
            profile = np.array([PROFILES[crop][list(BANDS).index(band)][t] for crop in CROPS])
            reflectance = profile[crop_at(xs)][None, :].repeat(size, axis=0) + rng.normal(0, 0.005, (size, size))
            dn = (np.clip(reflectance, 0.001, 1) * 10_000 + offset).round().astype(np.uint16)
        if t == CLOUD_DATE and tile == "31TCJ":
            row, col = rasterio.transform.rowcol(transform, CLOUD_X, CLOUD_Y)
            if band == "SCL":
                dn[row, col] = 9 if variant == "cloud" else 4
            else:
                dn[row, col] = 8000 + offset if variant == "cloud" else 0
        out[band] = (dn, transform)
    return out


def product_id(tile: str, t: int) -> str:
    date = DATES[t].replace("-", "")
    return f"S2A_MSIL2A_{date}T105031_N{baseline(DATES[t]).replace('.', '')}_R051_T{tile}_{date}T130000"


def write_band(path: Path, dn: np.ndarray, transform, driver: str = "GTiff") -> Path:
    """A tiled DEFLATE GeoTIFF with nodata 0 (as the providers' COGs), or a lossless JPEG2000 without nodata (SAFE)."""
    if driver == "GTiff":
        options = {"nodata": 0, "tiled": True, "compress": "deflate"}
    else:
        options = {"REVERSIBLE": "YES", "QUALITY": 100}
    with rasterio.open(path, "w", driver=driver, width=dn.shape[1], height=dn.shape[0], count=1, dtype=dn.dtype,
                       crs=CRS, transform=transform, **options) as dataset:  # fmt: skip
        dataset.write(dn, 1)
    return path


def write_collection(folder: Path, variant: str = "cloud", asset_keys: str = "esa") -> Path:
    """Two tiles x six dates of COGs and their STAC ItemCollection (relative hrefs, projection fields,
    Planetary Computer style keys ``B04``, or Earth Search's common names ``red`` with ``asset_keys='common'``)."""
    items = []
    for tile in TILES:
        for t, date in enumerate(DATES):
            item_id = product_id(tile, t)
            when = datetime.datetime.fromisoformat(f"{date}T10:50:31+00:00")
            item = pystac.Item(item_id, None, None, when, {
                "platform": "sentinel-2a", "constellation": "sentinel-2", "s2:product_type": "S2MSI2A",
                "s2:processing_baseline": baseline(date), "s2:mgrs_tile": tile, "proj:epsg": 32631})  # fmt: skip
            (folder / item_id).mkdir(parents=True, exist_ok=True)
            for band, (dn, transform) in product_rasters(tile, t, variant).items():
                key = band if asset_keys == "esa" else s2.BANDS[band][0]
                write_band(folder / item_id / f"{key}.tif", dn, transform)
                item.add_asset(key, pystac.Asset(f"{item_id}/{key}.tif", media_type=pystac.MediaType.COG, extra_fields={
                    "proj:shape": list(dn.shape), "proj:transform": list(transform)[:6]}))  # fmt: skip
            items.append(item)
    path = folder / "items.json"
    path.write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    return path


def write_products(folder: Path, layout: str) -> Path:
    """The same products without STAC: SAFE folders (JPEG2000 at 10, 20 and 60 m, MTD_MSIL2A.xml), or a
    folder of COGs per product named like Earth Search's (common-name files, baseline in the name)."""
    for tile in TILES:
        for t, date in enumerate(DATES):
            rasters = product_rasters(tile, t)
            if layout == "cog":
                product = folder / f"{product_id(tile, t)}"
                product.mkdir(parents=True)
                for band, (dn, transform) in rasters.items():
                    write_band(product / f"{s2.BANDS[band][0]}.tif", dn, transform)
                continue
            safe = folder / f"{product_id(tile, t)}.SAFE"
            stamp = f"T{tile}_{date.replace('-', '')}T105031"
            img = safe / "GRANULE" / f"L2A_T{tile}_A034000_{date.replace('-', '')}T105500" / "IMG_DATA"
            for band, (dn, transform) in rasters.items():
                for metres in (BANDS.get(band, 20), 60):
                    (img / f"R{metres}m").mkdir(parents=True, exist_ok=True)
                    factor = metres // BANDS.get(band, 20)
                    write_band(img / f"R{metres}m" / f"{stamp}_{band}_{metres}m.jp2", dn[::factor, ::factor],
                               transform * transform.scale(factor), driver="JP2OpenJPEG")  # fmt: skip
            offset = -1000 if baseline(date) >= "04.00" else 0
            offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">{offset}</BOA_ADD_OFFSET>' for i in range(13))
            (safe / "MTD_MSIL2A.xml").write_text(
                '<?xml version="1.0" encoding="UTF-8"?>\n<n1:Level-2A_User_Product '
                'xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"><n1:General_Info>'
                f"<Product_Info><PRODUCT_START_TIME>{date}T10:50:31.024Z</PRODUCT_START_TIME>"
                f"<PROCESSING_BASELINE>{baseline(date)}</PROCESSING_BASELINE></Product_Info>"
                '<Product_Image_Characteristics><QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">'
                f"10000</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST><BOA_ADD_OFFSET_VALUES_LIST>{offsets}"
                "</BOA_ADD_OFFSET_VALUES_LIST></Product_Image_Characteristics></n1:General_Info>"
                "</n1:Level-2A_User_Product>\n"
            )
    return folder


def reflectance_at(stack: RasterStack, x: float, y: float) -> np.ndarray:
    """(T, C) values of ``stack`` at the pixel holding (x, y)."""
    row, col = rasterio.transform.rowcol(stack.profile["transform"], x, y)
    return stack.read(rasterio.windows.Window(col, row, 1, 1))[:, :, 0, 0]


def test_a_two_tile_two_resolution_collection_is_read_on_the_10_m_grid_with_offsets_and_scl_masks(tmp_path):
    stack = stack_from_stac(write_collection(tmp_path), list(BANDS))
    # Both tiles, one date per day, the 10 m lattice over their union (560 m x 320 m), reflectance scale.
    assert [str(date) for date in stack.dates] == DATES and [len(g) for g in stack.granules] == [2] * len(DATES)
    assert stack.profile["transform"] == from_origin(300_000, TOP, 10, 10) and stack.shape == (32, 56)
    assert stack.scale == 1e-4 and stack.granules[0][0].masked_classes == s2.MASKED_SCL_CLASSES
    assert [g[0].raw_offset for g in stack.granules] == [0, 0, 0, -1000, -1000, -1000]  # baseline 04.00 from 01-25
    cube = stack.read()
    # A stack crosses to DataLoader worker processes (cmap map --num_workers) and reads the same there.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(stack)).read(), cube)
    assert np.isfinite(cube).sum() == cube.size - 4 * len(BANDS)  # the cloud only (one 20 m SCL pixel)
    # Reflectances, whatever the baseline: the crop profiles (noise 0.005), 10 m and 20 m bands alike.
    xs = 300_000 + 10 * (np.arange(56) + 0.5)
    expected = np.array([PROFILES[crop] for crop in CROPS])[crop_at(xs)]  # (x, C, T)
    profile_error = np.nanmax(np.abs(cube - expected.transpose(2, 1, 0)[:, :, None, :]))
    assert profile_error < 0.03
    # A 20 m band on the 10 m grid: each 20 m pixel fills 2 x 2 pixels (nearest), in the right place.
    with rasterio.open(stack.granules[0][0].layers[2].href) as b11:
        dn = b11.read(1)
    np.testing.assert_allclose(cube[0, 2, :32, :32], np.kron(dn, np.ones((2, 2))) * 1e-4, rtol=1e-6)
    # The cloudy pixel (SCL 9) is missing on its date, every band; a masked class list of [] keeps it.
    assert np.isnan(reflectance_at(stack, CLOUD_X, CLOUD_Y)[CLOUD_DATE]).all()
    unmasked = stack_from_stac(tmp_path / "items.json", list(BANDS), masked_classes=[])
    assert np.allclose(reflectance_at(unmasked, CLOUD_X, CLOUD_Y)[CLOUD_DATE], 0.8)
    # Overlap (x 300240..300320): the first item of the day (31TCJ) wins; 31TDJ fills the rest.
    first, second = (rasterio.open(granule.layers[0].href) for granule in stack.granules[1])
    with first, second:
        np.testing.assert_allclose(cube[1, 0, :, :32], first.read(1) * 1e-4, rtol=1e-6)
        np.testing.assert_allclose(cube[1, 0, :, 32:], second.read(1)[:, 8:] * 1e-4, rtol=1e-6)
        assert not np.array_equal(first.read(1)[:, 24:], second.read(1)[:, :8])  # the tiles' noise differs


def test_common_name_assets_safe_folders_and_cog_folders_give_the_same_stack(tmp_path):
    reference = stack_from_stac(write_collection(tmp_path / "stac"), list(BANDS)).read()
    common = stack_from_stac(write_collection(tmp_path / "common", asset_keys="common"), list(BANDS))
    np.testing.assert_array_equal(common.read(), reference)
    for layout in ("safe", "cog"):
        folder = write_products(tmp_path / layout, layout)
        assert is_stac_source(folder)
        items = read_items(folder)
        assert len(items) == 2 * len(DATES)
        stack = open_stack(RasterSource(str(folder)), ["B04", "B08", "B11"])
        assert stack.profile["transform"] == from_origin(300_000, TOP, 10, 10) and stack.shape == (32, 56)
        if layout == "safe":  # the finest file of each band (B11_20m, not B11_60m), offset from MTD_MSIL2A.xml
            assert stack.granules[0][0].layers[2].href.endswith("_B11_20m.jp2")
            assert [g[0].raw_offset for g in stack.granules] == [0, 0, 0, -1000, -1000, -1000]
        np.testing.assert_array_equal(stack.read(), reference)


def test_a_folder_of_products_is_listed_once(tmp_path, monkeypatch):
    """open_stack lists a folder of COG products and each product folder once: whether it is a STAC
    source, which products and band files it holds are found together and passed on to the items."""
    folder = write_products(tmp_path / "cog", "cog")
    listed, iterdir = [], Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: (listed.append(self), iterdir(self))[1])
    stack = open_stack(RasterSource(str(folder)), ["B04", "B11"])
    assert [len(granules) for granules in stack.granules] == [2] * len(DATES)
    assert len(listed) == 1 + 2 * len(DATES) and len(set(listed)) == len(listed)


def test_a_missing_band_or_scl_asset_is_named(tmp_path):
    collection = write_collection(tmp_path)
    with pytest.raises(InputError, match=r"S2A_MSIL2A_20211201T105031_N0301_R051_T31TCJ_20211201T130000: no asset "
                                         r"for band 'B05' \(asset keys: \['B04', 'B08', 'B11', 'SCL'\]"):  # fmt: skip
        stack_from_stac(collection, ["B04", "B05"])
    with pytest.raises(InputError, match=r"no asset for band 'B02'"):  # the default bands: B02 ... B12
        stack_from_stac(collection)
    content = json.loads(collection.read_text())
    for feature in content["features"]:
        del feature["assets"]["SCL"]
    collection.write_text(json.dumps(content))
    with pytest.raises(InputError, match=r"no SCL asset to mask clouds .* --masked_classes '\[\]'"):
        stack_from_stac(collection, ["B04"])
    assert stack_from_stac(collection, ["B04"], masked_classes=[]).granules[0][0].mask is None
    with pytest.raises(InputError, match=r"rasters: .* resolution, bounds are for STAC and Sentinel-2 inputs"):
        open_stack(RasterSource(str(synthetic_stack(tmp_path / "rasters")), resolution=20, bounds=(0, 0, 1, 1)), None)
    (tmp_path / "broken.json").write_text('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}')
    with pytest.raises(InputError, match=r"broken.json: not a valid STAC document"):
        read_items(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text('{"type": "Topology"}')
    with pytest.raises(InputError, match=r"other.json: field 'type' is 'Topology', expected a STAC"):
        read_items(tmp_path / "other.json")


def test_list_options_are_spelled_alike_in_cmap_extract_and_cmap_map(tmp_path, capsys):
    """The spelling the missing-SCL error suggests (--masked_classes '[]') and cmap map's YAML lists work
    in cmap extract too (its values one by one as well); a forgotten value is an error, not "no mask"."""
    collection = write_collection(tmp_path)
    content = json.loads(collection.read_text())
    for feature in content["features"]:
        del feature["assets"]["SCL"]
    collection.write_text(json.dumps(content))
    with pytest.raises(InputError) as error:
        stack_from_stac(collection, ["B04"])
    suggested = shlex.split(re.search(r"pass (--masked_classes '.*?')", str(error.value))[1])
    map_parser = map_command_parser()
    required = ["--checkpoint", "last.ckpt", "--rasters", "items.json", "--output", "map.tif"]
    assert map_parser.parse_args([*required, *suggested]).masked_classes == []
    parser = cmap_data.build_parser()

    def extract(*options: str):
        return parser.parse_args(["extract", "items.json", "points.csv", "store", *options])

    for spelling, masked in ((suggested, []), (["--masked_classes", "[0, 1, 3]"], [0, 1, 3]),
                             (["--masked_classes", "0", "1", "3"], [0, 1, 3]), ([], None)):  # fmt: skip
        assert extract(*spelling).masked_classes == masked
    assert map_parser.parse_args([*required, "--masked_classes", "[0, 1, 3]"]).masked_classes == [0, 1, 3]
    bounds, expected = "[300000, 4899000, 300200.5, 4899320]", [300000.0, 4899000.0, 300200.5, 4899320.0]
    assert extract("--bounds", bounds).bounds == expected == extract("--bounds", *bounds[1:-1].split(", ")).bounds
    assert list(map_parser.parse_args([*required, "--bounds", bounds]).bounds) == expected
    for wrong, message in ((["--masked_classes"], r"expected a list of integers, e.g. --masked_classes '\[0, 1, 3, 8"),
                           (["--masked_classes", "[1.5]"], r"got '\[1.5\]'"),
                           (["--bounds", "[0, 1]"], r"expected a list of 4 numbers, .* got 2 values")):  # fmt: skip
        with pytest.raises(SystemExit):
            extract(*wrong)
        assert re.search(message, capsys.readouterr().err)


def test_sentinel2_collection_maps_end_to_end_and_a_cloud_is_a_missing_date(tmp_path):
    """cmap extract -> cmap fit -> cmap map over the generated collection; the pixel under SCL cloud on
    one date maps exactly as the same pixel with that date missing (DN 0: no data)."""
    collection = write_collection(tmp_path / "cloud")
    missing = write_collection(tmp_path / "missing", variant="missing")
    # Training points: every other 10 m pixel centre of both tiles, labelled by their stripe.
    xs, ys = np.meshgrid(300_005 + 20 * np.arange(28), TOP - 5 - 20 * np.arange(16))
    points = pd.DataFrame({"x": xs.ravel(), "y": ys.ravel(), "crop": np.array(CROPS)[crop_at(xs.ravel())]})
    points.to_csv(tmp_path / "points.csv", index=False)
    store = tmp_path / "store"
    cmap_main(["extract", str(collection), str(tmp_path / "points.csv"), str(store), "--bands", *BANDS,
               "--label_field", "crop", "--x_column", "x", "--y_column", "y", "--crs", CRS])  # fmt: skip
    series, metadata = open_store(store)
    assert metadata["band_names"] == list(BANDS) and metadata["class_names"] == CROPS
    assert metadata["raw_values"] == {"scale": 1e-4, "offset": 0.0, "valid_range": None}
    assert metadata["time_axis"]["season_start"] == "12-01" and series.values.shape == (len(points), 6, 3)
    # The samples carry the masking: the one cloudy pixel is a missing date there too (a sample sits on it).
    values = np.asarray(series.values)
    cloudy = np.flatnonzero((points.x == CLOUD_X) & (points.y == CLOUD_Y))
    assert len(cloudy) == 1 and np.isnan(values[cloudy[0], CLOUD_DATE]).all()
    assert np.isfinite(values).sum() == values.size - 3
    checkpoint = fit_checkpoint(store, tmp_path / "model", steps=3)
    maps = {}
    for name, source, masked in (("cloud", collection, None), ("missing", missing, None), ("unmasked", collection, [])):
        output = tmp_path / "maps" / f"{name}.tif"
        map_rasters(str(checkpoint), str(source), str(output), masked_classes=masked, window_size=16, progress=False,
                    cog=False)  # fmt: skip
        with rasterio.open(output) as classes, rasterio.open(probabilities_path(output)) as probabilities:
            assert classes.transform == from_origin(300_000, TOP, 10, 10) and classes.shape == (32, 56)
            maps[name] = np.concatenate([classes.read(), probabilities.read()])
    np.testing.assert_array_equal(maps["cloud"], maps["missing"])
    assert (maps["cloud"][0] < len(CROPS)).all()
    # Without the mask, the cloud's bright values reach the model and change that pixel only.
    row, col = rasterio.transform.rowcol(from_origin(300_000, TOP, 10, 10), CLOUD_X, CLOUD_Y)
    changed = (maps["unmasked"] != maps["cloud"]).any(axis=0)
    assert changed[row, col] and changed.sum() <= 4  # at most the 20 m pixel's four 10 m pixels
    # A part of the area (bounds in the grid's CRS, snapped outwards to its pixels): the full map's classes there.
    output = tmp_path / "maps" / "part.tif"
    map_rasters(str(checkpoint), str(collection), str(output), bounds=(300_095, 4_899_805, 300_305, 4_899_905),
                window_size=16, progress=False, cog=False)  # fmt: skip
    with rasterio.open(output) as part, rasterio.open(probabilities_path(output)) as probabilities:
        assert part.transform == from_origin(300_090, 4_899_910, 10, 10) and part.shape == (11, 22)
        np.testing.assert_array_equal(np.concatenate([part.read(), probabilities.read()]), maps["cloud"][:, 9:20, 9:31])


class RangeRequests(http.server.SimpleHTTPRequestHandler):
    """A static file server that answers HTTP range requests, as object stores do (GDAL reads COGs by range)."""

    def send_head(self):
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if match is None or not path.is_file():
            return super().send_head()
        content = path.read_bytes()
        start, end = int(match[1]), int(match[2] or len(content) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(content)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return io.BytesIO(content[start : end + 1])

    def log_message(self, *args) -> None:
        pass


def serve(folder: Path, ports: multiprocessing.Queue) -> None:
    """Serve ``folder`` over HTTP on a free port (put on ``ports``), until killed."""
    with http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(RangeRequests, directory=str(folder))
    ) as s:
        ports.put(s.server_address[1])
        s.serve_forever()


def test_a_collection_behind_a_url_is_read_like_the_local_one(tmp_path):
    collection = write_collection(tmp_path)
    # In another process: GDAL holds the GIL while it opens a URL, so a server thread here would never answer.
    context = multiprocessing.get_context("fork")
    ports = context.Queue()
    server = context.Process(target=serve, args=(tmp_path, ports), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{ports.get(timeout=30)}/items.json"
        stack = stack_from_stac(url, list(BANDS))
        assert stack.granules[0][0].layers[0].href.startswith("http://127.0.0.1:")
        np.testing.assert_array_equal(stack.read(), stack_from_stac(collection, list(BANDS)).read())
    finally:
        server.kill()
        server.join()
