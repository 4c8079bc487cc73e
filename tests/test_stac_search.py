"""STAC API search (cmap.data.stac_search, pystac-client) for ``cmap extract`` and ``cmap map``, against a
STAC API on the loopback: ``http.server`` in a thread answering ``/`` (a landing page with its
conformance classes) and ``/search`` in pages of ``limit`` items linked by ``next`` (POST bodies with a
token, as Earth Search v1's), filtering by collection and ``eo:cloud_cover`` as an API does.

Its items are the real Planetary Computer item of ../shared/data/sentinel2_l2a_real/stac (tile 06VVN,
baseline 02.12) at five dates (one of them 80 % cloudy), their B04, B08, B11 and SCL assets rewritten
to tiny local COGs at the tile's origin (10 m and 20 m, as the real assets).
"""

import copy
import http.server
import json
import re
import threading
from pathlib import Path

import fiona
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from cmap.cli import main as cmap_main
from cmap.data import open_store
from cmap.data.stac_search import search_parameters
from cmap.outputs import InputError

from .conftest import SHARED_DATA, help_and_modules_loaded, require
from .test_map import fit_checkpoint

REAL_ITEM = SHARED_DATA / "sentinel2_l2a_real" / "stac" / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
CRS = "EPSG:32606"
ORIGIN = (399_960.0, 6_800_040.0)  # the tile's, from the item's proj:transform
DATES = ["20190604", "20190614", "20190629", "20190709", "20190719"]
CLOUDY = "20190709"  # eo:cloud_cover 80: left out by max_cloud_cover 20
BANDS = {"B04": 10, "B08": 10, "B11": 20}
SIZE = 240  # metres: 24 x 24 pixels of 10 m
CROPS = ["barley", "grass"]
SEARCH = "{collections: [sentinel-2-l2a], datetime: 2019-06-01/2019-07-31, max_cloud_cover: 20, limit: 2}"
LANDING = {
    "type": "Catalog", "id": "loopback", "stac_version": "1.0.0", "description": "A STAC API on the loopback",
    "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                   "https://api.stacspec.org/v1.0.0/item-search#query"],
}  # fmt: skip


def crop_of(x: np.ndarray) -> np.ndarray:
    """Stripes of 40 m: the crop index of each easting."""
    return ((np.asarray(x) - ORIGIN[0]) // 40).astype(int) % 2


def write_cog(path: Path, dn: np.ndarray, metres: int) -> str:
    with rasterio.open(path, "w", driver="COG", width=dn.shape[1], height=dn.shape[0], count=1, dtype=dn.dtype,
                       crs=CRS, transform=from_origin(*ORIGIN, metres, metres), nodata=0,
                       compress="deflate") as dataset:  # fmt: skip
        dataset.write(dn, 1)
    return path.as_uri()  # file://: an absolute path in an item of an http API would be a path on its host


def local_items(folder: Path) -> list[dict]:
    """The real item at each date of ``DATES``, its bands and SCL rewritten to tiny local COGs (DN: the
    crops' reflectance * 10000, baseline 02.12; SCL 9, cloud, on one pixel of the second date)."""
    real = json.loads(require(REAL_ITEM).read_text())
    rng = np.random.default_rng(0)
    items = []
    for t, date in enumerate(DATES):
        item = copy.deepcopy(real)
        item["id"] = real["id"].replace("20190629", date)
        item["properties"]["datetime"] = f"{date[:4]}-{date[4:6]}-{date[6:]}T21:25:29.024000Z"
        item["properties"]["eo:cloud_cover"] = 80.0 if date == CLOUDY else 0.3
        (folder / item["id"]).mkdir(parents=True)
        for band, metres in {**BANDS, "SCL": 20}.items():
            size = SIZE // metres
            if band == "SCL":
                dn = np.full((size, size), 4, dtype=np.uint8)
                dn[3, 5] = 9 if t == 1 else 4
            else:
                xs = ORIGIN[0] + metres * (np.arange(size) + 0.5)
                level = np.array([0.05 + 0.02 * t, 0.3 - 0.03 * t])[crop_of(xs)] * (1 + list(BANDS).index(band))
                dn = (level[None, :] * 10_000 + rng.normal(0, 30, (size, size))).clip(1, 10_000).astype(np.uint16)
            asset = item["assets"][band]
            asset["href"] = write_cog(folder / item["id"] / f"{band}.tif", dn, metres)
            asset["proj:shape"], asset["proj:transform"] = (
                [size, size],
                [metres, 0.0, ORIGIN[0], 0.0, -metres, ORIGIN[1]],
            )
        items.append(item)
    return items


class StacApi(http.server.BaseHTTPRequestHandler):
    """``/``: the landing page; ``/search``: the items matching a POST search, ``limit`` per page, the next
    page's token in the ``next`` link's body. ``self.server.items`` are served, ``self.server.requests`` record
    each search request's body."""

    def do_GET(self) -> None:
        base = f"http://{self.headers['Host']}"
        if self.path.rstrip("/") in ("", "/static"):
            landing = dict(LANDING) if self.path.rstrip("/") == "" else {**LANDING, "conformsTo": []}
            search = {"rel": "search", "href": f"{base}/search", "type": "application/geo+json", "method": "POST"}
            landing["links"] = [{"rel": "self", "href": f"{base}/"}, {"rel": "root", "href": f"{base}/"}, search]
            return self.reply(landing)
        self.send_error(404)

    def do_POST(self) -> None:
        if self.path != "/search":
            return self.send_error(404)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        limit = (body.get("query") or {}).get("eo:cloud_cover", {}).get("lte", 100)
        matching = [
            item for item in self.server.items
            if item["collection"] in body.get("collections", []) and item["properties"]["eo:cloud_cover"] <= limit
            and body["datetime"][:10] <= item["properties"]["datetime"][:10] <= body["datetime"].split("/")[1][:10]
        ]  # fmt: skip
        start, size = int(body.get("token", 0)), int(body.get("limit", 10))
        page = {"type": "FeatureCollection", "features": matching[start : start + size], "links": []}
        if start + size < len(matching):
            page["links"].append({"rel": "next", "href": f"http://{self.headers['Host']}/search", "method": "POST",
                                  "body": {**body, "token": str(start + size)}})  # fmt: skip
        self.reply(page)

    def reply(self, content: dict) -> None:
        data = json.dumps(content).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def api(tmp_path):
    """The loopback STAC API serving the local items; yields (its URL, the server)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StacApi)
    server.items, server.requests = local_items(tmp_path / "cogs"), []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server
    finally:
        server.shutdown()
        server.server_close()


def points_table(path: Path) -> pd.DataFrame:
    """Training points at every other 10 m pixel centre of the area, labelled by their stripe."""
    xs, ys = np.meshgrid(ORIGIN[0] + 5 + 20 * np.arange(12), ORIGIN[1] - 5 - 20 * np.arange(12))
    points = pd.DataFrame({"x": xs.ravel(), "y": ys.ravel(), "crop": np.array(CROPS)[crop_of(xs.ravel())]})
    points.to_csv(path, index=False)
    return points


def write_parcels(path: Path) -> Path:
    """Two fields of the area, in the tiles' CRS; together they span x + 20..220 m, y - 200..-20 m of the origin."""
    schema = {"geometry": "Polygon", "properties": {"name": "str"}}
    with fiona.open(path, "w", driver="GPKG", crs=CRS, schema=schema) as layer:
        for name, (x0, y0, x1, y1) in {"north": (20, -60, 120, -20), "south": (100, -200, 220, -120)}.items():
            x0, x1, y0, y1 = ORIGIN[0] + x0, ORIGIN[0] + x1, ORIGIN[1] + y0, ORIGIN[1] + y1
            ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
            layer.write({"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"name": name}})
    return path


def test_a_search_follows_pages_saves_its_items_and_maps_as_the_saved_items_do(api, tmp_path, capsys):
    url, server = api
    points = points_table(tmp_path / "points.csv")
    store = tmp_path / "store"
    cmap_main(["extract", url, str(tmp_path / "points.csv"), str(store), "--search", SEARCH, "--bands", *BANDS,
               "--label_field", "crop", "--x_column", "x", "--y_column", "y", "--crs", CRS])  # fmt: skip
    out = capsys.readouterr().out
    saved = tmp_path / "store_stac_items.json"
    assert f"{url}: 4 STAC items in 2 pages, saved to {saved}" in out and f"--rasters {saved}" in out
    # What pystac-client asked: the search's keywords, the points' footprint as the bbox, then the next page.
    first, second = server.requests
    assert first["collections"] == ["sentinel-2-l2a"] and first["limit"] == 2
    assert first["query"] == {"eo:cloud_cover": {"lte": 20}}
    assert first["datetime"].startswith("2019-06-01") and "/2019-07-31" in first["datetime"]
    footprint = transform_bounds(CRS, "EPSG:4326", points.x.min(), points.y.min(), points.x.max(), points.y.max())
    np.testing.assert_allclose(first["bbox"], footprint, atol=1e-9)
    assert second == {**first, "token": "2"}
    content = json.loads(saved.read_text())
    ids = [feature["id"] for feature in content["features"]]
    assert ids == [item["id"] for item in server.items if CLOUDY not in item["id"]]
    assert content["cmap:search"]["url"] == url and content["cmap:search"]["parameters"]["bbox"] == first["bbox"]
    # The store: every point at the four clear dates (one masked by SCL on the second), read with offset 0.
    series, metadata = open_store(store)
    values = np.asarray(series.values)
    assert values.shape == (len(points), 4, 3) and metadata["class_names"] == CROPS
    # The cloud (SCL 9) covers 2 x 2 pixels of 10 m (rows 6-7, columns 10-11): one point, at the second date.
    cloudy = np.flatnonzero(((points.x - ORIGIN[0]) // 10 == 10) & ((ORIGIN[1] - points.y) // 10 == 6))
    assert np.argwhere(np.isnan(values).any(axis=-1)).tolist() == [[cloudy[0], 1]]
    assert np.isnan(values[cloudy[0], 1]).all()
    assert "skipped" not in out and not (store / "skipped_points.csv").exists()  # every point kept: no list
    checkpoint = fit_checkpoint(store, tmp_path / "model", steps=3)
    # cmap map through the search (its area: the parcels' footprint), then through its saved items with the API
    # gone: the same map, byte for byte.
    parcels = write_parcels(tmp_path / "parcels.gpkg")
    common = ["--checkpoint", str(checkpoint), "--progress", "false", "--threads", "1", "--window_size", "16"]
    searched = ["--rasters", url, "--search", SEARCH, "--parcels", str(parcels)]
    cmap_main(["map", *common, *searched, "--output", str(tmp_path / "searched.tif")])
    assert len(server.requests) == 4 and (tmp_path / "searched_parcels.gpkg").is_file()
    area = transform_bounds(CRS, "EPSG:4326", ORIGIN[0] + 20, ORIGIN[1] - 200, ORIGIN[0] + 220, ORIGIN[1] - 20)
    np.testing.assert_allclose(server.requests[2]["bbox"], area, atol=1e-9)
    items = tmp_path / "searched_stac_items.json"
    assert json.loads(items.read_text())["features"] == content["features"]
    server.shutdown()
    cmap_main(["map", *common, "--rasters", str(items), "--output", str(tmp_path / "saved.tif")])
    for name in ("{}.tif", "{}_probs.tif"):
        searched, saved_map = (tmp_path / name.format(stem) for stem in ("searched", "saved"))
        assert searched.read_bytes() == saved_map.read_bytes(), name
    with rasterio.open(tmp_path / "saved.tif") as classes:
        assert classes.crs == CRS and classes.transform == from_origin(*ORIGIN, 10, 10) and classes.shape == (24, 24)
    # An output that is not a map is refused before the search (the API is down now: a search would fail
    # differently), and no item list is written beside it.
    (tmp_path / "notes.tif").write_text("mine")
    with pytest.raises(SystemExit):
        cmap_main(["map", *common, "--rasters", url, "--search", SEARCH, "--output", str(tmp_path / "notes.tif")])
    assert "notes.tif: exists and is not a crop map written by cmap" in capsys.readouterr().err
    assert not (tmp_path / "notes_stac_items.json").exists() and (tmp_path / "notes.tif").read_text() == "mine"


def one_line_error(capsys, arguments: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cmap_main(arguments)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_search_mistakes_are_one_line_each(api, tmp_path, capsys):
    url, server = api
    points_table(tmp_path / "points.csv")

    def extract(rasters: str, search: str) -> list[str]:
        labels = ["--label_field", "crop", "--x_column", "x", "--y_column", "y", "--crs", CRS]
        return ["extract", rasters, str(tmp_path / "points.csv"), str(tmp_path / "store"), "--search", search,
                "--bands", *BANDS, *labels]  # fmt: skip

    for rasters, search, message in (
        (url, "{collection: sentinel-2-l2a}", r"--search: unknown keys \['collection'\]; expected some of"),
        (url, "{collections: [sentinel-2-l2a], datetime: 2030-01-01/2030-12-31}", "the STAC API search found no item"),
        (url, "{collections: [sentinel-2-l2a], max_cloud_cover: 120}", "max_cloud_cover is 120, expected a percent"),
        (f"{url}static/", "{collections: [sentinel-2-l2a]}", "not a STAC API with item search"),
        ("http://127.0.0.1:9/", "{collections: [sentinel-2-l2a]}", "the STAC API search failed"),
        (str(tmp_path), "{collections: [sentinel-2-l2a]}", "--search needs the URL of a STAC API"),
    ):
        line = one_line_error(capsys, extract(rasters, search))
        assert line.startswith("cmap extract: error: ") and re.search(message, line), line
    assert not (tmp_path / "store").exists() and not (tmp_path / "store_stac_items.json").exists()
    # An output that is not a store is refused before the search: the API is not asked, nothing is written.
    requests = len(server.requests)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "notes.txt").write_text("mine")
    line = one_line_error(capsys, extract(url, "{collections: [sentinel-2-l2a]}"))
    assert "store exists and is not a cmap series store" in line and len(server.requests) == requests
    assert not (tmp_path / "store_stac_items.json").exists()
    with pytest.raises(SystemExit):
        cmap_main(extract(url, "[sentinel-2-l2a]"))
    assert "expected a YAML mapping of search keywords" in capsys.readouterr().err


def test_search_keywords_become_pystac_client_parameters():
    """max_cloud_cover through the Query extension, else a CQL2 filter; YAML dates as ISO text; the area."""
    both, query_only, filter_only = (lambda name: True), (lambda name: name == "QUERY"), (lambda name: name == "FILTER")
    area = [-148.87, 61.32, -148.86, 61.33]
    search = {"collections": ["sentinel-2-l2a"], "max_cloud_cover": 20, "query": {"s2:mgrs_tile": {"eq": "06VVN"}}}
    parameters = search_parameters(search, area, query_only)
    assert parameters == {"collections": ["sentinel-2-l2a"], "bbox": area,
                          "query": {"s2:mgrs_tile": {"eq": "06VVN"}, "eo:cloud_cover": {"lte": 20}}}  # fmt: skip
    assert search_parameters(search, area, both)["query"] == parameters["query"]
    cql2 = search_parameters({"max_cloud_cover": 20, "bbox": [0, 0, 1, 1]}, None, filter_only)
    assert cql2 == {"bbox": [0, 0, 1, 1], "filter_lang": "cql2-json",
                    "filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 20]}}  # fmt: skip
    with pytest.raises(InputError, match="give max_cloud_cover inside your filter"):
        search_parameters({"max_cloud_cover": 20, "filter": {"op": "="}}, area, filter_only)
    dates = yaml.safe_load("{datetime: [2022-05-01, 2022-09-30]}")
    assert search_parameters(dates, area, both)["datetime"] == "2022-05-01/2022-09-30"
    assert search_parameters({"intersects": {"type": "Point", "coordinates": [0, 0]}}, None, both) == {
        "intersects": {"type": "Point", "coordinates": [0, 0]}
    }
    with pytest.raises(InputError, match=r"--search: no area: give its bbox .* or --bounds with --grid_crs"):
        search_parameters({"collections": ["sentinel-2-l2a"]}, None, both)


def test_cmap_map_help_lists_search_without_importing_the_stac_client():
    """--search is one of cmap map's options, and its --help still imports neither pystac-client nor torch."""
    output, loaded = help_and_modules_loaded(["map"], ("pystac_client", "pystac", "torch", "lightning"))
    assert "--search SEARCH" in output and "pystac_client.Client.search" in output
    assert loaded == [], output
