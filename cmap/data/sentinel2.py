"""Sentinel-2 Level-2A: band names, the scene classification (SCL) mask, the BOA offset, product folders.

What the Level-2A products' conventions mean for a raster stack (:mod:`cmap.data.stac` applies them
to every STAC item it recognises as Sentinel-2 L2A, and to the products found in folders):

- **Band names.** Providers name the same band differently: ``B02`` (ESA, Planetary Computer),
  ``blue`` (Earth Search v1, STAC common names), ``B02_10m`` / ``B02_20m`` (Copernicus Data Space,
  SAFE files). :func:`canonical_band` maps every spelling to the ESA name, so a checkpoint trained
  on ``B02 ... B12`` finds its bands in any of them (the finest resolution when several exist):

  ======== ============= ====== ========================
  ESA      common name   metres other spellings
  ======== ============= ====== ========================
  B01      coastal       60     B1, B01_60m
  B02      blue          10     B2, B02_10m
  B03      green         10     B3
  B04      red           10     B4
  B05      rededge1      20     B5, B05_20m
  B06      rededge2      20     B6
  B07      rededge3      20     B7
  B08      nir           10     B8
  B8A      nir08         20     B08A
  B09      nir09         60     B9
  B11      swir16        20
  B12      swir22        20
  SCL      scl           20     the scene classification
  ======== ============= ====== ========================

- **Scale and no data.** Reflectance = (DN + BOA_ADD_OFFSET) / 10000 (``scale`` 1e-4); DN 0 is no
  data (the JPEG2000 files do not declare it, the COGs do).
- **BOA_ADD_OFFSET.** From processing baseline 04.00 (products from 25 January 2022, and the
  reprocessed archive) DNs carry an offset of +1000: reflectance = (DN - 1000) / 10000. The offset
  is read from the product's own metadata by one rule for every catalogue (:mod:`cmap.data.s2_offset`,
  :func:`boa_offset`), never guessed from the date, and added to the raw values before the scale and
  the valid range, so that products of both kinds give the same reflectances (and a model trained on
  one maps the other).
- **Scene classification.** Pixels whose SCL class is in the masked list are missing dates, every
  band, exactly like a cloud in a training series. Default :data:`MASKED_SCL_CLASSES`: no data,
  saturated or defective, cloud shadows, cloud medium and high probability, thin cirrus, snow
  (:data:`SCL_CLASSES` names them all; ``--masked_classes`` chooses another list).
"""

import datetime
import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac

from cmap.data.s2_offset import baseline_in_name, boa_offset, processing_baseline  # noqa: F401 (this module's API)
from cmap.outputs import InputError

#: ESA band name -> (STAC common name, native resolution in metres).
BANDS: dict[str, tuple[str, int]] = {
    "B01": ("coastal", 60),
    "B02": ("blue", 10),
    "B03": ("green", 10),
    "B04": ("red", 10),
    "B05": ("rededge1", 20),
    "B06": ("rededge2", 20),
    "B07": ("rededge3", 20),
    "B08": ("nir", 10),
    "B8A": ("nir08", 20),
    "B09": ("nir09", 60),
    "B11": ("swir16", 20),
    "B12": ("swir22", 20),
    "SCL": ("scl", 20),
}
#: The bands read by default (``cmap extract`` without ``--bands``): the ten 10 m and 20 m reflectances.
DEFAULT_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: The classes of the Level-2A scene classification layer.
SCL_CLASSES = {
    0: "no data",
    1: "saturated or defective",
    2: "dark area pixels (topographic shadows)",
    3: "cloud shadows",
    4: "vegetation",
    5: "not vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud medium probability",
    9: "cloud high probability",
    10: "thin cirrus",
    11: "snow or ice",
}
MASKED_SCL_CLASSES = (0, 1, 3, 8, 9, 10, 11)
SCALE = 1e-4
NODATA = 0
#: The band_id of BOA_ADD_OFFSET in MTD_MSIL2A.xml: the 13 MSI bands in this order.
MTD_BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")

_COMMON_NAMES = {common: esa for esa, (common, _) in BANDS.items()}
_SPELLING = re.compile(r"^(?:B0?(?P<number>\d{1,2})|B0?8A|SCL)(?:_(?P<metres>10|20|60)m)?$", re.IGNORECASE)


def canonical_band(name: str) -> str | None:
    """The ESA name (``B02``, ``B8A``, ``SCL``) of a Sentinel-2 band spelled ``name``, else None."""
    if name.lower() in _COMMON_NAMES:
        return _COMMON_NAMES[name.lower()]
    match = _SPELLING.match(name)
    if match is None:
        return None
    stem = name.split("_")[0].upper()
    if stem in ("SCL", "B8A", "B08A"):
        return "SCL" if stem == "SCL" else "B8A"
    esa = f"B{int(match['number']):02d}"
    return esa if esa in BANDS else None


def asset_key_band(key: str) -> str | None:
    """The ESA name of the band an asset key spells (:func:`canonical_band`), JPEG2000 copies included
    (Earth Search v1's ``blue-jp2``), else None."""
    return canonical_band(re.sub(r"[-_]jp2$", "", key, flags=re.IGNORECASE))


def is_jpeg2000(key: str, href: str, media_type: str | None) -> bool:
    """An asset in JPEG2000 (``-jp2`` key, ``.jp2`` file, ``image/jp2``): slower to read than a COG of the same band."""
    return key.lower().endswith("jp2") or href.lower().endswith(".jp2") or "jp2" in (media_type or "").lower()


def spelled_resolution(name: str) -> int | None:
    """The resolution a band name states (``B02_20m`` -> 20), else None."""
    match = re.search(r"_(10|20|60)m$", name)
    return int(match[1]) if match else None


def is_sentinel2_l2a(item: pystac.Item) -> bool:
    """An item of a Sentinel-2 Level-2A product: a Sentinel-2 platform (or collection) and an SCL asset
    or an L2A product type."""
    properties = item.properties
    mission = " ".join(
        str(value).lower()
        for value in (properties.get("platform"), properties.get("constellation"), item.collection_id)
        if value
    )
    if not re.search(r"sentinel[-_ ]?2", mission):  # sentinel-2a (Earth Search), Sentinel-2B, "Sentinel 2"...
        return False
    level = str(properties.get("s2:product_type", properties.get("processing:level", ""))).upper()
    return "2A" in level or any(asset_key_band(key) == "SCL" for key in item.assets)


# ---------------------------------------------------------------------------------------------
# Products in folders: SAFE and one folder of COGs per product, as STAC items
# ---------------------------------------------------------------------------------------------


def _tag(element: ElementTree.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]  # without the XML namespace


def _moment(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))


def read_mtd(path: Path) -> dict[str, Any]:
    """A product's MTD_MSIL2A.xml as STAC item properties: ``datetime`` (the product start),
    ``s2:processing_baseline`` and ``cmap:boa_add_offset`` (the offset of the reflectance bands; 0
    before baseline 04.00)."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise InputError(f"{path}: not a readable MTD_MSIL2A.xml ({error})") from error
    fields: dict[str, Any] = {}
    offsets: dict[str, float] = {}
    for element in root.iter():
        tag = _tag(element)
        if tag == "PRODUCT_START_TIME" and element.text:
            fields["start"] = _moment(element.text)
        elif tag == "PROCESSING_BASELINE" and element.text:
            fields["baseline"] = float(element.text)
        elif tag == "BOA_ADD_OFFSET" and element.text:
            offsets[MTD_BAND_IDS[int(element.get("band_id", 0))]] = float(element.text)
    for name in ("start", "baseline"):
        if name not in fields:
            raise InputError(f"{path}: no {'PRODUCT_START_TIME' if name == 'start' else 'PROCESSING_BASELINE'} field")
    reflectance_offsets = {offsets[band] for band in offsets if band != "B10"}
    if len(reflectance_offsets) > 1:
        raise InputError(f"{path}: BOA_ADD_OFFSET differs between bands ({offsets}); cmap expects one offset")
    return {
        "datetime": fields["start"],
        "s2:processing_baseline": f"{fields['baseline']:05.2f}",
        "cmap:boa_add_offset": reflectance_offsets.pop() if reflectance_offsets else 0.0,
    }


def read_tile_metadata(path: Path) -> dict[str, Any]:
    """A tile's metadata (the AWS layout's ``metadata.xml``, Earth Search's ``granule_metadata.xml``,
    a SAFE's ``MTD_TL.xml``) as item properties: ``datetime`` (SENSING_TIME) and
    ``s2:processing_baseline`` (the ``_N05.00`` ending its TILE_ID). It holds no BOA_ADD_OFFSET."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise InputError(f"{path}: not a readable tile metadata file ({error})") from error
    fields = {_tag(element): (element.text or "").strip() for element in root.iter()}
    baseline = re.search(r"_N(\d{2}\.\d{2})$", fields.get("TILE_ID", ""))
    if not fields.get("SENSING_TIME") or baseline is None:
        raise InputError(f"{path}: field SENSING_TIME or TILE_ID (ending _N04.00) is missing: not a tile metadata file")
    return {"datetime": _moment(fields["SENSING_TIME"]), "s2:processing_baseline": baseline[1]}


def read_tile_info(path: Path) -> dict[str, Any]:
    """The AWS layout's ``tileInfo.json`` (Earth Search's ``tileinfo_metadata.json``) as item
    properties: ``datetime`` (``timestamp``) and the baseline of its ``productName`` (``_N0500_``)."""
    try:
        info = json.loads(path.read_text())
        moment, name = _moment(info["timestamp"]), str(info["productName"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"{path}: expected a tileInfo.json with fields timestamp and productName ({error!r})"
        ) from None
    baseline = baseline_in_name(name)
    if baseline is None:
        raise InputError(f"{path}: field productName {name!r} holds no processing baseline (_N0400_)")
    return {"datetime": moment, "s2:processing_baseline": f"{baseline:05.2f}"}


#: A COG folder's product metadata files, the most informative first, and their readers.
PRODUCT_METADATA = (
    ("MTD_MSIL2A.xml", read_mtd),
    ("metadata.xml", read_tile_metadata),
    ("granule_metadata.xml", read_tile_metadata),
    ("tileInfo.json", read_tile_info),
    ("tileinfo_metadata.json", read_tile_info),
)


def read_product_metadata(folder: Path) -> dict[str, Any]:
    """The properties of the first of :data:`PRODUCT_METADATA` in ``folder``; empty when none is there."""
    for name, reader in PRODUCT_METADATA:
        if (folder / name).is_file():
            return reader(folder / name)
    return {}


_DATE_IN_NAME = re.compile(r"(?<!\d)(\d{8})(?:T\d{6})?(?!\d)")
_TILE_IN_NAME = re.compile(r"(?:^|_)T?(\d{2}[A-Z]{3})(?:_|$)")


def _product_item(folder: Path, assets: dict[str, Path], properties: dict[str, Any]) -> pystac.Item:
    item = pystac.Item(
        id=folder.name.removesuffix(".SAFE"),
        geometry=None,
        bbox=None,
        datetime=properties.pop("datetime"),
        properties={"platform": "sentinel-2", "s2:product_type": "S2MSI2A", **properties},
    )
    for key, path in assets.items():
        item.add_asset(key, pystac.Asset(str(path), roles=["data"]))
    return item


def safe_item(safe: Path) -> pystac.Item:
    """A SAFE product folder (``S2B_MSIL2A_..._N0400_..._T31TCJ_....SAFE``) as a STAC item: its bands
    at every resolution (``B02_10m``, ``B02_20m``, ``SCL_20m``...), date and offset from MTD_MSIL2A.xml."""
    mtd = safe / "MTD_MSIL2A.xml"
    if not mtd.is_file():
        raise InputError(f"{safe}: no MTD_MSIL2A.xml (is it a Sentinel-2 Level-2A SAFE product?)")
    properties = read_mtd(mtd)
    assets = {}
    for path in sorted(safe.glob("GRANULE/*/IMG_DATA/R*m/*.jp2")):
        match = re.search(r"_([A-Z0-9]{3})_(\d{2})m\.jp2$", path.name)
        if match and canonical_band(match[1]) is not None:
            assets[f"{canonical_band(match[1])}_{match[2]}m"] = path
    if not assets:
        raise InputError(f"{safe}: no band files GRANULE/*/IMG_DATA/R10m|R20m|R60m/*_B02_10m.jp2 ...")
    tile = _TILE_IN_NAME.search(safe.name.replace(".SAFE", ""))
    return _product_item(
        safe,
        assets,
        {**properties, **({"s2:mgrs_tile": tile[1]} if tile else {})},
    )


def cog_item(folder: Path, files: Sequence[Path] | None = None) -> pystac.Item:
    """A folder of one product's band files (``B02.tif`` ``SCL.tif`` or ``blue.tif`` ``scl.tif``, as
    Earth Search and the Planetary Computer serve them) as a STAC item. The date is the folder name's
    (``S2B_31TCJ_20210504_0_L2A``); date and offset come from the product metadata in the folder
    (:data:`PRODUCT_METADATA`: MTD_MSIL2A.xml, the AWS layout's metadata.xml or tileInfo.json), else
    from the folder name (the processing baseline as ``..._N0400_...``). ``files``: the folder's band files when
    already listed (:func:`find_products`)."""
    assets = {path.stem: path for path in (band_files(folder.iterdir()) if files is None else files)}
    properties = read_product_metadata(folder)
    if "datetime" not in properties:
        date = _DATE_IN_NAME.search(folder.name)
        if date is None:
            raise InputError(f"{folder}: no date YYYYMMDD in the folder name of this Sentinel-2 product")
        properties["datetime"] = datetime.datetime.strptime(date[1], "%Y%m%d").replace(tzinfo=datetime.timezone.utc)
    tile = _TILE_IN_NAME.search(folder.name)
    if tile:
        properties["s2:mgrs_tile"] = tile[1]
    return _product_item(folder, assets, properties)


def is_safe(folder: Path) -> bool:
    return folder.suffix == ".SAFE" or ((folder / "MTD_MSIL2A.xml").is_file() and (folder / "GRANULE").is_dir())


def band_files(entries: Iterable[Path]) -> tuple[Path, ...]:
    """The raster files among a folder's ``entries`` named as a Sentinel-2 band (``B02.tif``, ``blue.tif``,
    ``SCL.tif``), sorted."""
    return tuple(
        sorted(
            path
            for path in entries
            if path.suffix.lower() in (".tif", ".tiff", ".jp2") and canonical_band(path.stem) is not None
        )
    )


@dataclass(frozen=True)
class Product:
    """A Sentinel-2 L2A product found in a folder: ``layout`` ``safe`` (a SAFE folder) or ``cog`` (a
    folder of band files with an SCL band, which are ``files``)."""

    folder: Path
    layout: str
    files: tuple[Path, ...] = ()

    def item(self) -> pystac.Item:
        return safe_item(self.folder) if self.layout == "safe" else cog_item(self.folder, self.files)


def find_product(folder: Path, entries: Sequence[Path] | None = None) -> Product | None:
    """``folder`` as a product (a SAFE folder, or a folder of band files with an SCL band), else None;
    ``entries``: the folder's, when already listed."""
    if is_safe(folder):
        return Product(folder, "safe")
    files = band_files(folder.iterdir() if entries is None else entries)
    return Product(folder, "cog", files) if any(canonical_band(path.stem) == "SCL" for path in files) else None


def find_products(folder: Path) -> list[Product]:
    """The products under ``folder`` (itself one, or its sub-folders), each folder listed once at most;
    empty when there are none."""
    entries = None if is_safe(folder) else sorted(folder.iterdir())
    product = find_product(folder, entries)
    if product is not None:
        return [product]
    return [product for path in entries if path.is_dir() and (product := find_product(path))]


def products_in_folder(folder: Path, products: Sequence[Product] | None = None) -> list[pystac.Item]:
    """The Sentinel-2 L2A products under ``folder`` (:func:`find_products`): ``*.SAFE`` folders and
    folders of band COGs, as STAC items. Empty when there are none. ``products``: what
    :func:`find_products` found in ``folder`` already (it is not scanned again)."""
    return [product.item() for product in (find_products(folder) if products is None else products)]
