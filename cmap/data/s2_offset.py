"""The Sentinel-2 L2A BOA offset of a STAC item: one rule for every catalogue (docs/sentinel2.md).

From processing baseline 04.00 (products from 25 January 2022, and every reprocessed product) the
L2A DNs carry ``BOA_ADD_OFFSET`` -1000: reflectance = (DN - 1000) / 10000; before, DN / 10000.
Catalogues say so in different fields, and some of them wrongly, so :func:`boa_offset` checks, in
this order, and the first that answers decides:

1. the catalogue's own "applied" flag: ``earthsearch:boa_offset_applied`` true (Earth Search v1:
   Element 84 subtracted the offset from the DNs already) -> 0;
2. the product: its ``BOA_ADD_OFFSET`` (``cmap:boa_add_offset``, read from MTD_MSIL2A.xml for SAFE
   and COG folders); a collection that reprocessed the whole archive (Earth Search
   ``sentinel-2-c1-l2a``) -> -1000 at every date; its processing baseline (:func:`processing_baseline`:
   ``s2:processing_baseline``, ``processing:version``, then ``_N0214_`` in ``sentinel:product_id``,
   ``s2:product_uri`` or the item id): < 04.00 -> 0, else -1000;
3. only then the asset's declared offset (:func:`asset_offset`: STAC 1.1 ``raster:offset`` /
   ``raster:scale``, or ``raster:bands`` offset / scale), which is not trusted before the product:
   Earth Search v1 writes ``offset: -0.1`` on every reflectance asset whatever the data (its
   maintainers call the field unreliable, element84/earth-search #9, #66). When it contradicts
   step 2, a warning names the item and step 2's offset is used.

Nothing of the three is an error: guessing from the date would shift every reflectance of half the
archive by 0.1.
"""

import re
import warnings

import pystac

from cmap.outputs import InputError

#: BOA_ADD_OFFSET of processing baseline 04.00 and later.
BASELINE_04_OFFSET = -1000.0
#: Collections whose products were all reprocessed with baseline 05.xx: the offset is in every date.
REPROCESSED_COLLECTIONS = re.compile(r"sentinel-2-c1-l2a", re.IGNORECASE)
#: Item properties holding the baseline itself ("04.00"), then product names holding it as ``_N0400_``.
BASELINE_PROPERTIES = ("s2:processing_baseline", "processing:version")
PRODUCT_NAME_PROPERTIES = ("sentinel:product_id", "s2:product_uri")
_BASELINE_IN_NAME = re.compile(r"_N(\d{2})(\d{2})(?:_|\.SAFE$|$)")


def baseline_in_name(name: str) -> float | None:
    """The baseline a product name states (``S2B_MSIL2A_..._N0214_...`` -> 2.14), else None."""
    match = _BASELINE_IN_NAME.search(name)
    return float(f"{match[1]}.{match[2]}") if match else None


def processing_baseline(item: pystac.Item) -> float | None:
    """The processing baseline (4.0 for ``04.00``) from the item's properties or product names, else None."""
    for key in BASELINE_PROPERTIES:
        if item.properties.get(key) not in (None, ""):
            try:
                return float(item.properties[key])
            except (TypeError, ValueError):
                raise InputError(
                    f"STAC item {item.id}: property {key!r} is {item.properties[key]!r}, expected a processing "
                    "baseline such as '04.00'"
                ) from None
    for name in [*(item.properties.get(key) for key in PRODUCT_NAME_PROPERTIES), item.id]:
        baseline = baseline_in_name(str(name or ""))
        if baseline is not None:
            return baseline
    return None


def product_offset(item: pystac.Item) -> tuple[float, str] | None:
    """Step 2 of the rule: the offset the product's metadata implies, and where it was read; else None."""
    if item.properties.get("cmap:boa_add_offset") is not None:
        return float(item.properties["cmap:boa_add_offset"]), "the product's BOA_ADD_OFFSET"
    if REPROCESSED_COLLECTIONS.search(item.collection_id or ""):
        return BASELINE_04_OFFSET, f"collection {item.collection_id} (reprocessed with baseline 05.xx)"
    baseline = processing_baseline(item)
    if baseline is None:
        return None
    return (BASELINE_04_OFFSET if baseline >= 4.0 else 0.0), f"processing baseline {baseline:05.2f}"


def asset_offset(asset: pystac.Asset) -> float | None:
    """The DN offset an asset declares (offset / scale, e.g. -0.1 / 1e-4 -> -1000), else None.

    STAC 1.1 puts ``raster:offset`` and ``raster:scale`` on the asset (or in its ``bands``); STAC 1.0
    in ``raster:bands``. The raster extension's default scale is 1."""
    fields = asset.extra_fields
    entries = [fields, *(fields.get("bands") or [])]
    pairs = [(entry.get("raster:offset"), entry.get("raster:scale")) for entry in entries]
    pairs += [(band.get("offset"), band.get("scale")) for band in fields.get("raster:bands") or []]
    for offset, scale in pairs:
        if offset is not None:
            return float(round(float(offset) / float(scale or 1.0)))
    return None


def boa_offset(item: pystac.Item, asset: pystac.Asset) -> float:
    """The raw offset to add to the DNs of a reflectance ``asset`` of ``item`` (0 or -1000): the module's rule."""
    if item.properties.get("earthsearch:boa_offset_applied") is True:
        return 0.0
    declared = asset_offset(asset)
    product = product_offset(item)
    if product is not None:
        offset, reason = product
        if declared is not None and declared != offset:
            warnings.warn(
                f"STAC item {item.id}: the asset offset {declared:g} (raster:offset or raster:bands) contradicts "
                f"{reason}; the DNs are read with offset {offset:g}",
                stacklevel=2,
            )
        return offset
    if declared is not None:
        return declared
    raise InputError(
        f"STAC item {item.id}: the Sentinel-2 processing baseline is unknown (no s2:processing_baseline, "
        "processing:version, earthsearch:boa_offset_applied, raster:offset or raster:bands offset, no _N0400_ in "
        "sentinel:product_id, s2:product_uri or the id), so the BOA offset of baseline 04.00 and later cannot be "
        "decided; add one of them to the item"
    )
