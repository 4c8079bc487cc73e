"""Real Sentinel-2 L2A material (../shared/data/sentinel2_l2a_real, see its README.txt): every product
metadata file and STAC item is read with the BOA offset its processing baseline implies, by the one
rule of cmap.data.s2_offset; the catalogues without a file there (Earth Search v1, the Copernicus Data
Space's STAC 1.1, collection 1) get items built here from their documented conventions. The real
SAFE's JPEG2000 bands are read as (DN - 1000) / 10000, checked against rasterio's raw DNs.

Band values are written as DN 1500 everywhere: offset 0 reads 0.15, offset -1000 reads 0.05.
"""

import copy
import datetime
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from cmap.data import s2_offset
from cmap.data import sentinel2 as s2
from cmap.data.stac import find_asset, read_items, stack_from_items
from tests.conftest import SHARED_DATA, require

REAL = SHARED_DATA / "sentinel2_l2a_real"
SAFE = REAL / "safe" / "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
EARTH_SEARCH_V0 = REAL / "stac" / "S2A_28QCH_20200714_0_L2A.json"
PLANETARY_COMPUTER = REAL / "stac" / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
PLANETARY_COMPUTER_RASTER = PLANETARY_COMPUTER.with_name(PLANETARY_COMPUTER.stem + "_raster_ext.json")
DN = 1500
REFLECTANCE = {0.0: 0.15, -1000.0: 0.05}


def write_band(path: Path, value: int, crs: str = "EPSG:32631", origin=(300_000.0, 4_900_020.0), size=20.0) -> str:
    """A 4 x 4 GeoTIFF of one ``value`` (uint16 for bands, uint8 for SCL)."""
    dtype = "uint8" if "scl" in path.stem.lower() else "uint16"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype=dtype, crs=crs,
                       transform=from_origin(*origin, size, size)) as dataset:  # fmt: skip
        dataset.write(np.full((1, 4, 4), value, dtype=dtype))
    return str(path)


def read_value(items: list[pystac.Item], band: str) -> float:
    """The one value the stack of ``items`` reads for ``band`` (every pixel must agree)."""
    stack = stack_from_items(items, [band])
    values = np.unique(stack.read())
    assert len(values) == 1, values
    return float(values[0])


# ---------------------------------------------------------------------------------------------
# Product metadata of five baselines, read from COG folders (the date too: the folder name has none)
# ---------------------------------------------------------------------------------------------

METADATA = REAL / "metadata"
REPROCESSED = METADATA / "S2B_MSIL2A_20200914T231559_N0500_R087_T01VCG_20230315T224658"
PRODUCTS = [
    (METADATA / "S2A_MSIL2A_20150826T185436_N0212_R070_T11SLT_20210412T023147" / "MTD_MSIL2A.xml", "2015-08-26", 0),
    (METADATA / "S2B_MSIL2A_20191228T210519_N0212_R071_T01CCV_20201003T104658.SAFE" / "MTD_MSIL2A.xml",
     "2019-12-28", 0),
    (METADATA / "esa_S2B_MSIL2A_20210122T133229_N0214_R081_T22HBD_20210122T155500.SAFE" / "MTD_MSIL2A.xml",
     "2021-01-22", 0),
    (METADATA / "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE" / "MTD_MSIL2A.xml",
     "2022-04-13", -1000),
    (METADATA / "S2A_MSIL2A_20230625T234621_N0509_R073_T01WCP_20230626T022157.SAFE" / "MTD_MSIL2A.xml",
     "2023-06-25", -1000),
    (SAFE / "MTD_MSIL2A.xml", "2022-10-05", -1000),
    # The AWS layout of a 2020 date reprocessed with baseline 05.00: the offset before 2022.
    (REPROCESSED / "metadata.xml", "2020-09-14", -1000),
    (REPROCESSED / "tileInfo.json", "2020-09-14", -1000),
]  # fmt: skip


@pytest.mark.parametrize(
    "metadata, date, offset", PRODUCTS, ids=[f"{p.parent.name[:30]}/{p.name}" for p, *_ in PRODUCTS]
)
def test_every_real_product_metadata_file_gives_its_baselines_offset(metadata, date, offset, tmp_path):
    product = tmp_path / "products" / "product"  # no date or baseline in the name: both from the file
    product.mkdir(parents=True)
    shutil.copy(require(metadata), product / metadata.name)
    write_band(product / "B04.tif", DN), write_band(product / "SCL.tif", 4)
    stack = stack_from_items(read_items(tmp_path / "products"), ["B04"])  # as cmap extract and cmap map read it
    assert [str(day) for day in stack.dates] == [date]
    assert stack.granules[0][0].raw_offset == offset
    assert np.allclose(stack.read(), REFLECTANCE[offset])


def test_the_tile_metadata_of_the_real_safe_names_its_baseline():
    tile = next(require(SAFE).glob("GRANULE/*/MTD_TL.xml"))
    assert s2.read_tile_metadata(tile)["s2:processing_baseline"] == "04.00"
    assert s2.read_mtd(SAFE / "MTD_MSIL2A.xml")["cmap:boa_add_offset"] == -1000


# ---------------------------------------------------------------------------------------------
# Real STAC items: Earth Search v0, the Planetary Computer and its raster-extension variant
# ---------------------------------------------------------------------------------------------


def localised(item_file: Path, folder: Path, bands=("B02", "B8A", "SCL")) -> pystac.Item:
    """The real item with ``bands`` rewritten to 4 x 4 local files at the item's own origin and CRS
    (their grid from the files: the item's proj:shape describes the full tile)."""
    item = read_items(require(item_file))[0]
    crs = item.properties.get("proj:code") or f"EPSG:{item.properties['proj:epsg']}"  # pystac may migrate it
    for band in bands:
        asset = item.assets[band]
        transform = asset.extra_fields.pop("proj:transform")
        asset.extra_fields.pop("proj:shape"), asset.extra_fields.pop("proj:bbox", None)
        value = 4 if band == "SCL" else DN
        asset.href = write_band(folder / f"{band}.tif", value, crs, (transform[2], transform[5]), 60.0)
    return item


@pytest.mark.parametrize(
    "item_file, baseline",
    [(EARTH_SEARCH_V0, 2.14), (PLANETARY_COMPUTER, 2.12), (PLANETARY_COMPUTER_RASTER, 2.12)],
    ids=["earth-search-v0", "planetary-computer", "planetary-computer-raster-ext"],
)
def test_real_stac_items_are_read_with_their_baselines_offset_and_bands(item_file, baseline, tmp_path):
    item = localised(item_file, tmp_path)
    assert s2.is_sentinel2_l2a(item) and s2.processing_baseline(item) == baseline
    # Every band by its ESA name and its common name finds the asset of that band.
    for esa, (common, _) in s2.BANDS.items():
        assert find_asset(item, esa, True)[0] == esa
        assert find_asset(item, common, True)[0] == esa
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no asset offset contradicts the baseline
        assert s2.boa_offset(item, item.assets["B02"]) == 0
        assert read_value([item], "B02") == pytest.approx(0.15) and read_value([item], "B8A") == pytest.approx(0.15)


def test_earth_search_v0_items_carry_the_baseline_only_in_the_product_id():
    item = read_items(require(EARTH_SEARCH_V0))[0]
    assert not {"s2:processing_baseline", "processing:version", "s2:product_uri"} & set(item.properties)
    assert "_N0214_" in item.properties["sentinel:product_id"] and "_N" not in item.id


# ---------------------------------------------------------------------------------------------
# Catalogues without a file in ../shared: items built from their documented conventions
# ---------------------------------------------------------------------------------------------

ES_V1_KEYS = {"B02": "blue", "B04": "red", "B8A": "nir08", "SCL": "scl"}


def earth_search_v1(folder: Path, properties: dict, jp2_only: bool = False, collection="sentinel-2-l2a") -> pystac.Item:
    """An Earth Search v1 item: common-name keys and their ``-jp2`` copies, ``raster:bands`` offset -0.1 on
    every reflectance asset whatever the data, the ``earthsearch:boa_offset_applied`` flag."""
    moment = datetime.datetime(2021, 5, 4, tzinfo=datetime.timezone.utc)
    folder.mkdir(parents=True, exist_ok=True)
    item = pystac.Item("S2B_31TCJ_20210504_0_L2A", None, None, moment,
                       {"platform": "sentinel-2b", "constellation": "sentinel-2", **properties},
                       collection=collection)  # fmt: skip
    for esa, key in ES_V1_KEYS.items():
        bands = [] if esa == "SCL" else [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]
        eo = [] if esa == "SCL" else [{"name": key, "common_name": key}]
        for suffix, value in ([] if jp2_only else [("", DN)]) + [("-jp2", DN if jp2_only else 9999)]:
            path = write_band(folder / f"{key}{suffix}.tif", 4 if esa == "SCL" else value)
            fields = {"raster:bands": bands, "eo:bands": eo, "gsd": 20}
            item.add_asset(key + suffix, pystac.Asset(path, media_type="image/jp2" if suffix else None,
                                                      extra_fields=copy.deepcopy(fields)))  # fmt: skip
    return item


def test_the_earth_search_v1_offset_trap_is_read_by_the_baseline_with_a_warning(tmp_path):
    item = earth_search_v1(tmp_path, {"s2:processing_baseline": "02.14", "earthsearch:boa_offset_applied": False})
    with pytest.warns(UserWarning, match=r"S2B_31TCJ_20210504_0_L2A: the asset offset -1000 .* contradicts "
                                         r"processing baseline 02.14; the DNs are read with offset 0"):  # fmt: skip
        assert read_value([item], "B02") == pytest.approx(0.15)  # not 0.05: DN 1500 has no offset


@pytest.mark.parametrize(
    "properties, reflectance",
    [
        ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": False}, 0.05),
        ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}, 0.15),  # applied already
        ({"earthsearch:boa_offset_applied": False}, 0.05),  # nothing but the asset offset
    ],
)
def test_earth_search_v1_items_agreeing_with_their_assets_are_read_without_warning(properties, reflectance, tmp_path):
    item = earth_search_v1(tmp_path, properties)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_value([item], "B04") == pytest.approx(reflectance)


def test_earth_search_v1_bands_are_found_in_jp2_assets_and_cogs_come_first(tmp_path):
    only_jp2 = earth_search_v1(tmp_path / "jp2", {"s2:processing_baseline": "02.14"}, jp2_only=True)
    assert [find_asset(only_jp2, band, True)[0] for band in ES_V1_KEYS] == [f"{key}-jp2" for key in ES_V1_KEYS.values()]
    with pytest.warns(UserWarning):  # the -0.1 of every asset contradicts baseline 02.14
        assert read_value([only_jp2], "B02") == pytest.approx(0.15)
    both = earth_search_v1(tmp_path / "both", {"s2:processing_baseline": "02.14"})
    assert [find_asset(both, band, True)[0] for band in ES_V1_KEYS] == list(ES_V1_KEYS.values())


def test_collection_1_items_carry_the_offset_at_every_date(tmp_path):
    # 2021 date, no baseline property, a product URI of the original 02.14 product: collection 1 decides.
    properties = {"s2:product_uri": "S2B_MSIL2A_20210504T105619_N0214_R094_T31TCJ_20210504T130000.SAFE"}
    item = earth_search_v1(tmp_path, properties, collection="sentinel-2-c1-l2a")
    assert s2.boa_offset(item, item.assets["blue"]) == -1000
    assert read_value([item], "B02") == pytest.approx(0.05)


@pytest.mark.parametrize(
    "fields, declared",
    [
        ({"raster:offset": -0.1, "raster:scale": 0.0001}, -1000),  # STAC 1.1, asset level (Copernicus Data Space)
        ({"bands": [{"name": "B04", "raster:offset": -0.1, "raster:scale": 0.0001}]}, -1000),  # STAC 1.1, per band
        ({"raster:bands": [{"offset": -0.1, "scale": 0.0001}]}, -1000),  # STAC 1.0 (Earth Search v1)
        ({"raster:bands": [{"offset": 0.0, "scale": 0.0001}]}, 0),  # an explicit 0 is a declaration too
        ({"raster:offset": -1000}, -1000),  # no scale: the raster extension's default, 1
        ({"raster:bands": [{"nodata": 0, "data_type": "uint16"}]}, None),  # Planetary Computer: no offset
        ({}, None),
    ],
)
def test_asset_offsets_are_read_from_stac_1_0_and_1_1_fields(fields, declared):
    assert s2_offset.asset_offset(pystac.Asset("B04.tif", extra_fields=fields)) == declared


def cdse_item(folder: Path, item_id: str, properties: dict) -> dict:
    """A Copernicus Data Space STAC 1.1 item: keys B04_10m B04_20m SCL_20m, bands in ``bands``, offsets in
    asset-level ``raster:offset`` / ``raster:scale`` (no raster:bands, no eo:bands)."""
    assets = {}
    for key, size in (("B04_10m", 10.0), ("B04_20m", 20.0), ("SCL_20m", 20.0)):
        scl = key.startswith("SCL")
        href = write_band(folder / f"{key}.tif" if not scl else folder / "scl_20m.tif", 4 if scl else DN, size=size)
        raster = {} if scl else {"raster:scale": 0.0001, "raster:offset": -0.1}
        bands = [{"name": key.split("_")[0], **({} if scl else {"eo:common_name": "red"})}]
        assets[key] = {"href": href, "type": "image/jp2", "roles": ["data"], "gsd": size, "bands": bands, **raster}
    return {
        "type": "Feature", "stac_version": "1.1.0", "id": item_id, "geometry": None, "links": [], "assets": assets,
        "properties": {"datetime": "2024-06-01T10:56:19Z", "platform": "sentinel-2b", "constellation": "sentinel-2",
                       "product:type": "S2MSI2A", **properties},
        "collection": "sentinel-2-l2a",
    }  # fmt: skip


@pytest.mark.parametrize(
    "item_id, properties",
    [
        ("S2B_MSIL2A_20240601T105619_N0511_R094_T31TCJ_20240601T125901", {"processing:version": "05.11"}),
        ("S2B_MSIL2A_20240601T105619_N0511_R094_T31TCJ_20240601T125901", {}),  # the baseline in the id only
        ("cdse-item", {}),  # nothing but the assets' raster:offset
    ],
)
def test_a_copernicus_data_space_stac_1_1_item_is_read_from_its_own_fields(item_id, properties, tmp_path):
    path = tmp_path / "item.json"
    path.write_text(json.dumps(cdse_item(tmp_path, item_id, properties)))
    item = read_items(path)[0]
    assert s2.is_sentinel2_l2a(item)
    assert find_asset(item, "B04", True)[0] == "B04_10m" and find_asset(item, "red", True)[0] == "B04_10m"
    assert find_asset(item, "SCL", True)[0] == "SCL_20m"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_value([item], "B04") == pytest.approx(0.05)


# ---------------------------------------------------------------------------------------------
# The real SAFE's JPEG2000 bands: (DN - 1000) / 10000, DN 0 no data, SCL clouds masked
# ---------------------------------------------------------------------------------------------

WINDOW = Window(1280, 128, 64, 64)  # 60 m pixels with no data, vegetation and clouds


def raw_dns(band_file: str, window: Window = WINDOW, factor: int = 1) -> np.ndarray:
    with rasterio.open(band_file) as dataset:
        return dataset.read(1, window=Window(*(factor * value for value in window.flatten())))


def test_the_real_safes_jp2_bands_read_as_dn_minus_1000_over_10000():
    item = s2.safe_item(require(SAFE))
    bands = ["B02", "B04", "B8A", "B11"]
    assert [find_asset(item, band, True)[0] for band in bands] == ["B02_60m", "B04_60m", "B8A_60m", "B11_60m"]
    assert find_asset(item, "SCL", True)[0] == "SCL_20m"  # the finest of SCL_20m and SCL_60m
    unmasked = stack_from_items([item], bands, masked_classes=[]).read(WINDOW)[0]
    for c, band in enumerate(bands):
        dn = raw_dns(item.assets[f"{band}_60m"].href)
        expected = np.where(dn == 0, np.nan, (dn.astype(np.float32) - 1000) * np.float32(1e-4))
        np.testing.assert_array_equal(unmasked[c], expected)
        assert (dn == 0).sum() > 100 and (dn > 1000).sum() > 100  # no data and reflectances in the window
    # SCL (20 m) masks the 60 m pixels: where its 3 x 3 block is one class, the pixel is NaN exactly
    # when that class is masked (a cloud) or the DN is 0.
    masked = stack_from_items([item], bands).read(WINDOW)[0]
    scl = raw_dns(item.assets["SCL_20m"].href, factor=3).reshape(64, 3, 64, 3).transpose(0, 2, 1, 3).reshape(64, 64, 9)
    uniform = (scl == scl[..., :1]).all(axis=-1)
    cloud = np.isin(scl[..., 0], s2.MASKED_SCL_CLASSES)
    assert (uniform & cloud & ~np.isnan(unmasked[0])).sum() > 50  # clouds over valid DNs
    np.testing.assert_array_equal(np.isnan(masked[0])[uniform], (cloud | np.isnan(unmasked[0]))[uniform])
