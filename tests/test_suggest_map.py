"""``cmap suggest --map MAP.tif OUTPUT``: the pixels of a crop map to label next, from the class probabilities
beside it. A real ``cmap map`` of the Sinop MODIS cube (a tiny classifier fitted on Mato Grosso's NDVI),
read back by ``cmap extract`` after a "field campaign" fills the label column; and small probability
rasters written in the map product's exact format for the selection's edge cases and bad inputs."""

import json
import subprocess
import sys
from pathlib import Path

import fiona
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as warp

from cmap.cli import main as cmap_main
from cmap.data import open_store
from cmap.data.convert import read_mato_grosso
from cmap.data.raster import RasterStack
from cmap.labelling import map_candidates
from cmap.labelling.selection import uncertainty
from cmap.mapping import map_rasters
from cmap.mapping.products import probabilities_path

from .conftest import SHARED_DATA, require
from .test_labelling import digest, one_line_error
from .test_map import SINOP, SINOP_PATTERN, fit_checkpoint

CLASSES = ["maize", "soy", "wheat"]


@pytest.fixture(scope="module")
def sinop_map(tmp_path_factory) -> Path:
    """A real ``cmap map`` of the Sinop cube (its probabilities beside it), by a classifier fitted on Mato
    Grosso's samples at the cube's band and dates."""
    source = require(SHARED_DATA / "sits_matogrosso_mod13q1") / "br_mt_1_8K_9classes_6bands.rda"
    store = read_mato_grosso(source).select(["NDVI"], date_step=2).write(tmp_path_factory.mktemp("store") / "mg")
    checkpoint = fit_checkpoint(store, tmp_path_factory.mktemp("model"))
    output = tmp_path_factory.mktemp("map") / "sinop.tif"
    map_rasters(str(checkpoint), str(require(SINOP)), str(output), pattern=SINOP_PATTERN, scale=1e-4,
                valid_range=(-2000, 10000), window_size=64, progress=False)  # fmt: skip
    return output


def write_probabilities(map_path, percent: np.ndarray, class_names=CLASSES, **profile) -> Path:
    """``percent`` (K, H, W) as cmap map writes its ``MAP_probs.tif``: uint8 percent, GDAL scale 0.01, bands
    named by class, the class names in the tags, nodata 255 (10 m pixels, UTM 31N)."""
    bands, height, width = percent.shape
    options = {"driver": "GTiff", "dtype": "uint8", "nodata": 255, "crs": "EPSG:32631", **profile}
    path = probabilities_path(map_path)
    with rasterio.open(path, "w", width=width, height=height, count=bands,
                       transform=from_origin(500_000.0, 4_800_000.0, 10.0, 10.0), **options) as dataset:  # fmt: skip
        dataset.write(percent.astype(options["dtype"]))
        dataset.update_tags(class_names=json.dumps(class_names))
        for band, name in enumerate(class_names[:bands], start=1):
            dataset.set_band_description(band, name)
        dataset.scales = [0.01] * bands
    return path


def random_percent(shape=(30, 40), seed=0) -> np.ndarray:
    """(3, H, W) whole percents summing to 100 per pixel."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 101, shape)
    second = (rng.random(shape) * (100 - first)).astype(int)
    return np.stack([first, second, 100 - first - second]).astype(np.uint8)


def pairwise(points: np.ndarray) -> np.ndarray:
    return np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)) + np.eye(len(points)) * 1e12


def test_suggest_from_a_real_map_gives_uncertain_spread_pixels_that_cmap_extract_reads_back(sinop_map, tmp_path):
    before = digest(sinop_map.parent)
    output = tmp_path / "next.csv"
    cmap_main(["suggest", "--map", str(sinop_map), str(output), "--n", "20"])  # default: clusters, margin
    table = pd.read_csv(output, keep_default_na=False)
    with rasterio.open(probabilities_path(sinop_map)) as dataset:
        percent, class_names, crs = dataset.read(), json.loads(dataset.tags()["class_names"]), dataset.crs
        height, width, affine = dataset.height, dataset.width, dataset.transform
    assert len(table) == 20 and (table["rank"] == np.arange(1, 21)).all()
    pixels = table[["pixel_row", "pixel_column"]].to_numpy()
    assert len({tuple(pixel) for pixel in pixels}) == 20
    assert (pixels >= 0).all() and (pixels[:, 0] < height).all() and (pixels[:, 1] < width).all()
    # Every value is the raster's at that pixel, and the most uncertain pixel of the whole map (first in
    # raster order among ties) is taken: it is the most uncertain of its cluster.
    chosen = percent[:, pixels[:, 0], pixels[:, 1]].T / 100
    assert np.allclose(table[[f"probability/{name}" for name in class_names]].to_numpy(), chosen)
    assert (table["predicted"] == [class_names[k] for k in chosen.argmax(axis=1)]).all()
    scores = uncertainty(percent.reshape(len(class_names), -1).T / 100, "margin")
    assert np.allclose(table["uncertainty"], scores[pixels[:, 0] * width + pixels[:, 1]])
    assert tuple(divmod(int(np.argmax(scores)), width)) in {tuple(pixel) for pixel in pixels}
    # Pixel centres in the map's CRS; longitude / latitude transform back onto them.
    xs, ys = rasterio.transform.xy(affine, pixels[:, 0], pixels[:, 1], offset="center")
    assert np.allclose(table["x"], xs) and np.allclose(table["y"], ys)
    back_x, back_y = warp("EPSG:4326", crs, table["longitude"].tolist(), table["latitude"].tolist())
    assert np.abs(np.array(back_x) - xs).max() < 0.01 and np.abs(np.array(back_y) - ys).max() < 0.01
    assert (-56.5 < table["longitude"]).all() and (table["longitude"] < -54.5).all()  # Sinop, Mato Grosso
    with fiona.open(output.with_suffix(".gpkg")) as layer:
        assert rasterio.crs.CRS.from_wkt(layer.crs_wkt) == crs
        features = list(layer)
    assert np.allclose([f.geometry.coordinates for f in features], table[["x", "y"]].to_numpy())
    assert [f.properties["sample_id"] for f in features] == list(table["sample_id"])
    # --diversity distance keeps its distance in map units (metres here: 231 m pixels).
    spread = tmp_path / "spread.csv"
    cmap_main(["suggest", "--map", str(sinop_map), str(spread), "--n", "15", "--diversity", "distance",
               "--min_distance", "3000"])  # fmt: skip
    assert pairwise(pd.read_csv(spread)[["x", "y"]].to_numpy()).min() >= 3000
    # The field campaign fills `label`; cmap extract reads the GeoPackage back as training points, one
    # series per suggested pixel: the cube's values at that pixel.
    labels = tmp_path / "visited.gpkg"
    with fiona.open(output.with_suffix(".gpkg")) as layer:
        with fiona.open(labels, "w", driver="GPKG", crs_wkt=layer.crs_wkt, schema=layer.schema) as visited:
            for feature in layer:
                properties = dict(feature.properties, label=feature.properties["predicted"])
                visited.write(fiona.Feature(geometry=feature.geometry, properties=properties))
    cmap_main(["extract", str(SINOP), str(labels), str(tmp_path / "visited"), "--pattern", SINOP_PATTERN])
    series, metadata = open_store(tmp_path / "visited")
    assert len(series) == 20
    assert [metadata["class_names"][k] for k in series.labels[:]] == list(table["predicted"])
    cube = RasterStack.from_folder(SINOP, SINOP_PATTERN, ["NDVI"]).read()  # (T, C, H, W)
    values = np.asarray(series.values[np.arange(20)])[:, :, 0]
    expected = cube[:, 0, pixels[:, 0], pixels[:, 1]].T
    assert np.array_equal(np.where(np.isnan(values), 0, values), np.where(np.isnan(expected), 0, expected))
    # The CSV too, by its longitude / latitude (EPSG:4326): the same pixels, the same series.
    table.assign(label=table["predicted"]).to_csv(tmp_path / "visited.csv", index=False)
    cmap_main(["extract", str(SINOP), str(tmp_path / "visited.csv"), str(tmp_path / "from_csv"), "--pattern",
               SINOP_PATTERN])  # fmt: skip
    from_csv = open_store(tmp_path / "from_csv")[0]
    assert np.array_equal(np.asarray(from_csv.values[np.arange(20)]), np.asarray(series.values[np.arange(20)]),
                          equal_nan=True)  # fmt: skip
    assert digest(sinop_map.parent) == before  # the map's files are only read


def test_nodata_and_empty_pixels_are_no_candidates_and_windows_do_not_change_the_choice(tmp_path, monkeypatch, capsys):
    percent = random_percent()
    percent[:, :10, :] = 255  # nodata
    percent[:, 10:, :5] = 0  # no probabilities at all
    map_path = tmp_path / "map.tif"
    write_probabilities(map_path, percent, tiled=True, blockxsize=16, blockysize=16)  # as cmap map: tiled
    candidates = 20 * 35

    def suggested(name: str, *options: str) -> pd.DataFrame:
        cmap_main(["suggest", "--map", str(map_path), str(tmp_path / name), *options])
        return pd.read_csv(tmp_path / name, keep_default_na=False)

    whole = {
        "clusters": suggested("clusters.csv", "--n", "25"),
        "distance": suggested("distance.csv", "--n", "25", "--diversity", "distance", "--measure", "entropy"),
        "balanced": suggested("balanced.csv", "--n", "24", "--diversity", "distance", "--balanced"),
    }
    for table in whole.values():
        assert (table["pixel_row"] >= 10).all() and (table["pixel_column"] >= 5).all()
        assert table["sample_id"].is_unique and (table["label"] == "").all()
    assert (whole["balanced"]["predicted"].value_counts() <= 8).all()
    auto = pairwise(whole["distance"][["x", "y"]].to_numpy()).min()
    assert auto >= 10.0  # the auto distance: at least one pixel apart
    # One 16 x 16 block per read (6 windows, across rows and columns): merged window by window, the pool
    # gives the same pixels as the whole raster in one read.
    monkeypatch.setattr(map_candidates, "READ_BYTES", 1)
    with rasterio.open(probabilities_path(map_path)) as dataset:
        assert [(w.col_off, w.row_off) for w in map_candidates.read_windows(dataset)] == [
            (0, 0), (16, 0), (32, 0), (0, 16), (16, 16), (32, 16)
        ]  # fmt: skip
    assert suggested("windows.csv", "--n", "25").equals(whole["clusters"])
    windows = suggested("windows_distance.csv", "--n", "25", "--diversity", "distance", "--measure", "entropy")
    assert windows.equals(whole["distance"])
    pool = map_candidates.read_pool(probabilities_path(map_path), "margin", 50)
    assert pool.candidates == candidates and len(pool.scores) == 50
    scores = uncertainty(percent.reshape(3, -1).T / 100, "margin")
    scores[(percent == 255).any(0).ravel() | (percent.max(0) == 0).ravel()] = -1
    assert list(pool.index) == list(np.lexsort((np.arange(scores.size), -scores))[:50])
    message = one_line_error(capsys, ["suggest", "--map", str(map_path), str(tmp_path / "many.csv"), "--n", "701"])
    assert "--n 701" in message and f"{candidates} candidate pixels" in message
    assert not (tmp_path / "many.csv").exists() and not (tmp_path / "many.gpkg").exists()


def test_outputs_replace_their_own_but_not_other_files(tmp_path, capsys):
    map_path = tmp_path / "map.tif"
    write_probabilities(map_path, random_percent())
    output = tmp_path / "next.csv"
    cmap_main(["suggest", "--map", str(map_path), str(output), "--n", "5"])
    cmap_main(["suggest", "--map", str(map_path), str(output), "--n", "7"])  # its own: replaced
    assert len(pd.read_csv(output)) == 7
    with fiona.open(output.with_suffix(".gpkg")) as layer:
        assert len(layer) == 7
    foreign = tmp_path / "notes.csv"
    foreign.write_text("my,notes\n")
    message = one_line_error(capsys, ["suggest", "--map", str(map_path), str(foreign), "--n", "5"])
    assert "notes.csv" in message and "not a sample table" in message
    assert foreign.read_text() == "my,notes\n" and not foreign.with_suffix(".gpkg").exists()


@pytest.mark.parametrize(
    ("output", "arguments", "expected"),
    [
        ("next.csv", ["--diversity", "gradients"], ["--diversity gradients", "features", "--map"]),
        ("next.csv", ["--space", "embedding"], ["--space embedding", "features"]),
        ("next.csv", ["--balanced"], ["--balanced", "--diversity distance"]),
        ("next.csv", ["--diversity", "distance", "--min_distance", "far"], ["--min_distance", "far"]),
        ("next.csv", ["--coordinates", "xy.csv"], ["--coordinates", "--map"]),
        ("next.csv", ["--n", "0"], ["--n must be >= 1"]),
        ("next.csv", ["extra.csv"], ["only OUTPUT is positional"]),
        ("next.gpkg", [], ["next.gpkg", "OUTPUT is the CSV"]),
    ],
)
def test_wrong_combinations_are_one_error_line_and_write_nothing(tmp_path, capsys, output, arguments, expected):
    map_path = tmp_path / "map.tif"
    write_probabilities(map_path, random_percent())
    before = digest(tmp_path)
    message = one_line_error(capsys, ["suggest", "--map", str(map_path), str(tmp_path / output), *arguments])
    assert all(part in message for part in expected), message
    assert digest(tmp_path) == before


def test_a_missing_or_foreign_probability_raster_is_named(tmp_path, capsys):
    output = tmp_path / "out" / "next.csv"
    message = one_line_error(capsys, ["suggest", "--map", str(tmp_path / "map.tif"), str(output)])
    assert "map_probs.tif" in message and "not found" in message
    write_probabilities(tmp_path / "map.tif", random_percent())
    message = one_line_error(capsys, ["suggest", "--map", str(tmp_path / "map_probs.tif"), str(output)])
    assert "map_probs_probs.tif" in message and "not its probabilities" in message
    write_probabilities(tmp_path / "float.tif", random_percent() / 100, dtype="float32")
    message = one_line_error(capsys, ["suggest", "--map", str(tmp_path / "float.tif"), str(output)])
    assert "float_probs.tif" in message and "float32" in message and "uint8" in message
    write_probabilities(tmp_path / "two.tif", random_percent()[:2], class_names=CLASSES)
    message = one_line_error(capsys, ["suggest", "--map", str(tmp_path / "two.tif"), str(output)])
    assert "two_probs.tif" in message and "class_names" in message and "2 bands" in message
    corrupt = random_percent()
    corrupt[1, 3, 4] = 180
    write_probabilities(tmp_path / "corrupt.tif", corrupt)
    message = one_line_error(capsys, ["suggest", "--map", str(tmp_path / "corrupt.tif"), str(output)])
    assert "corrupt_probs.tif" in message and "band 2 row 3 column 4 holds 180" in message
    assert not output.parent.exists() or not any(output.parent.iterdir())


def test_the_map_path_imports_neither_torch_nor_lightning(tmp_path):
    """No network runs: a fresh ``cmap suggest --map`` leaves torch and Lightning unloaded (fast, light)."""
    map_path = tmp_path / "map.tif"
    write_probabilities(map_path, random_percent())
    script = (
        "import sys, cmap.cli\n"
        f"cmap.cli.main(['suggest', '--map', {str(map_path)!r}, {str(tmp_path / 'next.csv')!r}, '--n', '5'])\n"
        "print(sorted(name for name in ('torch', 'lightning') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]" and len(pd.read_csv(tmp_path / "next.csv")) == 5
