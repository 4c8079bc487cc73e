"""STAC API search: the items of a catalogue's search (pystac-client), saved as an ItemCollection beside the output.

``--rasters`` names the API (its landing page, as ``pystac_client.Client.open``) and ``--search`` the
search, with ``Client.search``'s own keywords, as YAML::

    cmap map --checkpoint last.ckpt --output map.tif --rasters https://earth-search.aws.element84.com/v1 \\
        --search '{collections: [sentinel-2-l2a], datetime: 2022-05-01/2022-09-30,
                   bbox: [-7.95, 53.0, -7.75, 53.1], max_cloud_cover: 20}'
    cmap extract https://earth-search.aws.element84.com/v1 fields.gpkg data/fields --label_field crop \\
        --search '{collections: [sentinel-2-l2a], datetime: 2022-05-01/2022-09-30, max_cloud_cover: 20}'

Keywords (:data:`SEARCH_KEYS`): ``collections``, ``datetime`` (a range ``start/end``), ``bbox``
(``[west, south, east, north]`` in degrees) or ``intersects`` (a GeoJSON geometry), ``query``,
``filter`` and ``filter_lang`` (the Query and Filter extensions), ``ids``, ``limit`` (items per
page), ``max_items``; and cmap's ``max_cloud_cover`` (percent, ``eo:cloud_cover <=``: the Query
extension where the API has it, else a CQL2 filter). Without ``bbox`` or ``intersects`` the area is
the footprint of what is read: ``cmap extract``'s points or polygons, ``cmap map``'s ``--parcels``,
or its ``--bounds`` in ``--grid_crs``. Every page is followed (``next`` links).

The items found are written, before anything is read, to ``<output>_stac_items.json`` beside the
output (:func:`items_path`; the search's URL and parameters in its ``cmap:search`` field), and the run
reads them from that file: the same command with ``--rasters <that file>`` and no ``--search``
repeats it without the network, and gives the same map byte for byte.
"""

import json
import warnings
from pathlib import Path
from typing import Any

from cmap.data.raster_files import is_url, one_line
from cmap.outputs import InputError, write_bytes_atomically

#: ``pystac_client.Client.search``'s keywords that ``--search`` passes on, and cmap's own ``max_cloud_cover``.
SEARCH_KEYS = (
    "collections", "datetime", "bbox", "intersects", "query", "filter", "filter_lang", "ids", "limit", "max_items",
    "max_cloud_cover",
)  # fmt: skip


def items_path(output: str | Path) -> Path:
    """Where the ItemCollection of a search is saved: ``map_stac_items.json`` beside ``map.tif``,
    ``fields_stac_items.json`` beside the store ``fields``."""
    output = Path(output)
    return output.with_name(f"{output.stem}_stac_items.json")


def search_parameters(search: dict[str, Any], area: list[float] | None, conforms_to: Any) -> dict[str, Any]:
    """``Client.search``'s keywords for ``search`` (``--search``): its own keys checked, ``max_cloud_cover`` as
    a query (or a CQL2 filter where ``conforms_to('QUERY')`` is false), ``area`` (degrees) as the bbox when
    ``search`` names no area."""
    unknown = sorted(set(search) - set(SEARCH_KEYS))
    if unknown:
        raise InputError(f"--search: unknown keys {unknown}; expected some of {list(SEARCH_KEYS)}")
    parameters = {key: value for key, value in search.items() if key != "max_cloud_cover"}
    if "datetime" in parameters:  # YAML reads 2022-05-01 as a date: pystac-client takes ISO text
        moments = parameters["datetime"] if isinstance(parameters["datetime"], list) else [parameters["datetime"]]
        parameters["datetime"] = "/".join(m.isoformat() if hasattr(m, "isoformat") else str(m) for m in moments)
    if "bbox" not in parameters and "intersects" not in parameters:
        if area is None:
            raise InputError(
                "--search: no area: give its bbox [west, south, east, north] in degrees (or intersects, a GeoJSON "
                "geometry), or --bounds with --grid_crs"
            )
        parameters["bbox"] = [float(value) for value in area]
    limit = search.get("max_cloud_cover")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 <= limit <= 100:
            raise InputError(f"--search: max_cloud_cover is {limit!r}, expected a percentage from 0 to 100")
        if conforms_to("QUERY") or not conforms_to("FILTER"):
            parameters["query"] = {**(parameters.get("query") or {}), "eo:cloud_cover": {"lte": limit}}
        elif "filter" in parameters:
            raise InputError("--search: give max_cloud_cover inside your filter (this API has no Query extension)")
        else:
            cloud = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, limit]}
            parameters.update(filter=cloud, filter_lang="cql2-json")
    return parameters


def search_items(url: str, search: dict[str, Any], area: list[float] | None = None) -> tuple[dict[str, Any], int]:
    """The ItemCollection (a dict) of ``search`` on the STAC API at ``url``, every page followed, with the
    search in its ``cmap:search`` field; and the number of pages read."""
    if not is_url(url):
        raise InputError(f"--rasters {url}: --search needs the URL of a STAC API (its landing page)")
    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from pystac_client.warnings import DoesNotConformTo
    from requests import RequestException

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DoesNotConformTo)  # an API without item search: one line, below
            client = Client.open(url)
            if not client.conforms_to("ITEM_SEARCH"):
                raise InputError(
                    f"{url}: not a STAC API with item search (its landing page's conformsTo has no item-search "
                    "class); give a static catalogue or ItemCollection as --rasters, without --search"
                )
            parameters = search_parameters(search, area, client.conforms_to)
            found = client.search(**parameters)
            pages = list(found.pages_as_dicts())
    except (APIError, RequestException, DoesNotConformTo, json.JSONDecodeError) as error:
        raise InputError(f"{url}: the STAC API search failed ({type(error).__name__}: {one_line(error)})") from error
    features = [feature for page in pages for feature in page.get("features", [])]
    if parameters.get("max_items") is not None:
        features = features[: int(parameters["max_items"])]
    if not features:
        raise InputError(f"{url}: the STAC API search found no item ({json.dumps(found.get_parameters())})")
    collection = {
        "type": "FeatureCollection",
        "features": features,
        "cmap:search": {"url": url, "parameters": found.get_parameters()},
    }
    return collection, len(pages)


def save_search(url: str, search: dict[str, Any], path: Path, area: list[float] | None = None) -> Path:
    """Run the search (:func:`search_items`), write its ItemCollection to ``path`` atomically and say so."""
    collection, pages = search_items(url, search, area)
    write_bytes_atomically(path, json.dumps(collection, indent=1).encode())
    print(
        f"{url}: {len(collection['features'])} STAC items in {pages} pages, saved to {path}; the same command with "
        f"--rasters {path} and no --search repeats this run without the network"
    )
    return path
