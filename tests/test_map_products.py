"""Map products: rasters GDAL reads without the .qml, uncertainty, smoothing without seams, parcels,
and maps made by several processes (equal to one process's, resumed after a kill)."""

import ctypes
import glob
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
import torch

from cmap.mapping import map_rasters
from cmap.mapping.parts import parts_path
from cmap.mapping.products import attributes_path, probabilities_path, uncertainty_path
from cmap.mapping.writer import UNIT, MapWriter
from cmap.parcels import summarise_parcels
from cmap.postprocessing import BayesianSmoothing, bayesian_smoothing, uncertainty_bands

from . import test_map
from .conftest import require
from .test_map import SINOP, SINOP_PATTERN

# The tiny Sinop model of test_map (fixtures, shared by name)
mato_grosso_ndvi12, ndvi_checkpoint = test_map.mato_grosso_ndvi12, test_map.ndvi_checkpoint

SINOP_OPTIONS = {"pattern": SINOP_PATTERN, "scale": 1e-4, "valid_range": (-2000, 10000), "progress": False}


def sinop_map(checkpoint: Path, output: Path, **options) -> Path:
    return map_rasters(str(checkpoint), str(require(SINOP)), str(output), **{**SINOP_OPTIONS, **options})


def read_all(output: Path) -> dict[str, np.ndarray]:
    """Every band of the class map and of the probability and uncertainty rasters beside it."""
    rasters = {}
    for path in (output, probabilities_path(output), uncertainty_path(output)):
        if path.exists():
            with rasterio.open(path) as dataset:
                rasters[path.name.removeprefix(output.stem)] = dataset.read()
    return rasters


class GDALBand:
    """Band 1 of a raster read through the GDAL C library in rasterio's wheel: what ``gdalinfo``
    shows (rasterio has no API for category names or attribute tables)."""

    def __init__(self, path: Path) -> None:
        library = glob.glob(os.path.join(os.path.dirname(rasterio.__file__), "..", "rasterio.libs", "libgdal*"))
        self.gdal = gdal = ctypes.CDLL(library[0] if library else "libgdal.so")
        gdal.GDALAllRegister()
        for name, result, arguments in [
            ("GDALOpen", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]),
            ("GDALClose", None, [ctypes.c_void_p]),
            ("GDALGetRasterBand", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]),
            ("GDALGetDefaultRAT", ctypes.c_void_p, [ctypes.c_void_p]),
            ("GDALGetRasterCategoryNames", ctypes.POINTER(ctypes.c_char_p), [ctypes.c_void_p]),
            ("GDALGetRasterScale", ctypes.c_double, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]),
            ("GDALRATGetRowCount", ctypes.c_int, [ctypes.c_void_p]),
            ("GDALRATGetColumnCount", ctypes.c_int, [ctypes.c_void_p]),
            ("GDALRATGetNameOfCol", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int]),
            ("GDALRATGetValueAsString", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]),
        ]:
            getattr(gdal, name).restype, getattr(gdal, name).argtypes = result, arguments
        self.dataset = gdal.GDALOpen(str(path).encode(), 0)
        assert self.dataset, path
        self.band = gdal.GDALGetRasterBand(self.dataset, 1)

    def attribute_table(self) -> list[dict[str, str]]:
        table = self.gdal.GDALGetDefaultRAT(self.band)
        if not table:
            return []
        columns = [
            self.gdal.GDALRATGetNameOfCol(table, c).decode() for c in range(self.gdal.GDALRATGetColumnCount(table))
        ]
        return [
            {name: self.gdal.GDALRATGetValueAsString(table, row, c).decode() for c, name in enumerate(columns)}
            for row in range(self.gdal.GDALRATGetRowCount(table))
        ]

    def categories(self) -> list[str]:
        # GeoTIFF loads its .aux.xml lazily: gdalinfo asks for other things first, and so does this.
        self.attribute_table()
        names = self.gdal.GDALGetRasterCategoryNames(self.band)
        found = []
        while names and names[len(found)]:
            found.append(names[len(found)].decode())
        return found

    def scale(self) -> float:
        return self.gdal.GDALGetRasterScale(self.band, None)

    def close(self) -> None:
        self.gdal.GDALClose(self.dataset)


def test_gdal_reads_class_names_colours_and_probability_scale_without_the_qml(ndvi_checkpoint, tmp_path):
    output = sinop_map(ndvi_checkpoint, tmp_path / "map" / "sinop.tif", uncertainty=True, window_size=100)
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "sinop.qml", "sinop.tif", "sinop.tif.aux.xml", "sinop_probs.tif", "sinop_uncertainty.tif",
    ]  # fmt: skip
    output.with_suffix(".qml").unlink()
    with rasterio.open(output) as classes:
        class_names, colours = [classes.tags(1)[str(i)] for i in range(9)], classes.colormap(1)
    assert len(class_names) == 9 and "Forest" in class_names
    band = GDALBand(output)
    try:
        # Categories and the attribute table list exactly the classes (the GeoTIFF palette has 256 entries).
        assert band.categories() == class_names
        table = band.attribute_table()
        assert [row["class"] for row in table] == class_names and [row["value"] for row in table] == list(
            map(str, range(9))
        )
        assert [tuple(int(row[c]) for c in ("red", "green", "blue", "alpha")) for row in table] == [
            colours[i] for i in range(9)
        ]
    finally:
        band.close()
    # The map copied alone (no .aux.xml): the class names are still in the band's metadata.
    alone = tmp_path / "alone" / "sinop.tif"
    alone.parent.mkdir()
    shutil.copy(output, alone)
    with rasterio.open(alone) as classes:
        assert [classes.tags(1)[str(i)] for i in range(9)] == class_names
    band = GDALBand(alone)
    assert band.categories() == [] and band.attribute_table() == []
    band.close()
    # Probabilities and uncertainty: GDAL's scale 0.01 (a GIS reads 0..1), bands named.
    for path, names in ((probabilities_path(output), class_names), (uncertainty_path(output), ["entropy", "margin"])):
        band = GDALBand(path)
        assert band.scale() == 0.01
        band.close()
        with rasterio.open(path) as dataset:
            assert list(dataset.descriptions) == names and dataset.scales == (0.01,) * len(names)
            # One unit per raster: that of the scaled values (0..1), in the file's tags and on every band.
            assert dataset.tags()["scale"] == "0.01" and dataset.units == (dataset.tags()["unit"],) * len(names)
            assert dataset.tags()["unit"] == UNIT


def test_uncertainty_is_the_entropy_and_margin_of_the_probabilities(ndvi_checkpoint, tmp_path):
    certain, uniform = torch.tensor([1.0, 0.0, 0.0]), torch.full((3,), 1 / 3)
    torch.testing.assert_close(uncertainty_bands(torch.stack([certain, uniform], dim=1)), torch.tensor([[0, 1.0]] * 2))
    rasters = read_all(sinop_map(ndvi_checkpoint, tmp_path / "sinop.tif", uncertainty=True))
    probabilities = rasters["_probs.tif"] / 100
    entropy = -(probabilities * np.log(np.where(probabilities > 0, probabilities, 1))).sum(axis=0) / math.log(9)
    top = np.sort(probabilities, axis=0)[::-1]
    expected = np.stack([entropy, 1 - (top[0] - top[1])]) * 100
    # From whole-percent probabilities, so within a few percent of the bands computed before rounding.
    assert np.abs(rasters["_uncertainty.tif"] - expected).max() <= 5
    assert rasters["_uncertainty.tif"].std(axis=(1, 2)).min() > 0  # not constant (a barely trained model: near 1)


def direct_smoothing(probabilities: np.ndarray, valid: np.ndarray, smoothing: BayesianSmoothing) -> np.ndarray:
    """sits' Bayesian smoothing written pixel by pixel (missing and out-of-grid neighbours left out)."""
    logits = np.log(np.clip(probabilities, 1e-4, 1 - 1e-4) / (1 - np.clip(probabilities, 1e-4, 1 - 1e-4)))
    result = np.full(probabilities.shape, np.nan)
    classes, height, width = probabilities.shape
    radius = smoothing.window // 2
    for row in range(height):
        for col in range(width):
            if not valid[row, col]:
                continue
            rows, cols = slice(max(0, row - radius), row + radius + 1), slice(max(0, col - radius), col + radius + 1)
            for k in range(classes):
                neighbours = np.sort(logits[k, rows, cols][valid[rows, cols]])[::-1]
                used = neighbours[: math.ceil(smoothing.neighbour_fraction * len(neighbours))]
                variance = used.var(ddof=1) if len(used) > 1 else 0.0
                weight = variance / (variance + smoothing.smoothness)
                result[k, row, col] = weight * logits[k, row, col] + (1 - weight) * used.mean()
    result = 1 / (1 + np.exp(-result))
    return result / result.sum(axis=0)


def test_bayesian_smoothing_is_sits_rule_and_removes_isolated_pixels():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([0.5, 0.5, 0.5], size=(13, 11)).transpose(2, 0, 1)
    valid = rng.random((13, 11)) > 0.15
    smoothing = BayesianSmoothing(window=5, neighbour_fraction=0.5, smoothness=2.0)
    smoothed = bayesian_smoothing(torch.from_numpy(probabilities).float(), torch.from_numpy(valid), smoothing, 4)
    np.testing.assert_allclose(smoothed.numpy(), direct_smoothing(probabilities, valid, smoothing), atol=2e-5)
    assert smoothed[:, ~torch.from_numpy(valid)].isnan().all()
    # Salt and pepper: one pixel of class 1 inside a field of class 0 takes its field's class.
    field = np.tile(np.array([0.8, 0.1, 0.1])[:, None, None], (1, 9, 9))
    field[:, 4, 4] = [0.3, 0.6, 0.1]
    smoothed = BayesianSmoothing()(torch.from_numpy(field).float(), torch.ones(9, 9, dtype=torch.bool))
    assert (smoothed.argmax(dim=0) == 0).all()


def test_a_smoothed_map_has_no_seams_at_window_edges(ndvi_checkpoint, tmp_path):
    """Windows are read with a halo: a map made with 64-pixel windows (12 windows on the 147 x 255
    Sinop cube) equals one made with a single 4096-pixel window, every band of every raster."""
    options = {"smoothing": True, "uncertainty": True, "cog": False}
    small = read_all(sinop_map(ndvi_checkpoint, tmp_path / "w64.tif", window_size=64, **options))
    whole = read_all(sinop_map(ndvi_checkpoint, tmp_path / "w4096.tif", window_size=4096, **options))
    assert small.keys() == whole.keys() == {".tif", "_probs.tif", "_uncertainty.tif"}
    for name in small:
        np.testing.assert_array_equal(small[name], whole[name], err_msg=name)
    raw = read_all(sinop_map(ndvi_checkpoint, tmp_path / "raw.tif", window_size=64, uncertainty=True, cog=False))
    changed = (raw[".tif"] != small[".tif"]).mean()
    assert 0 < changed < 0.5  # smoothing changes some pixels' classes, not most
    # Smoothing makes neighbourhoods more uniform: fewer pixels differ from their right neighbour.
    assert (small[".tif"][0, :, 1:] != small[".tif"][0, :, :-1]).sum() < (
        raw[".tif"][0, :, 1:] != raw[".tif"][0, :, :-1]
    ).sum()


def test_parcels_get_the_majority_class_shares_and_mean_probabilities(ndvi_checkpoint, tmp_path, monkeypatch):
    with rasterio.open(next(require(SINOP).glob("*_NDVI_*.jp2"))) as dataset:
        crs, transform = dataset.crs, dataset.transform

    def rectangle(row: int, col: int, rows: int, cols: int) -> dict:
        """A polygon along pixel edges: the pixels [row, row + rows) x [col, col + cols)."""
        corners = [
            transform * (c, r) for r, c in ((row, col), (row, col + cols), (row + rows, col + cols), (row + rows, col))
        ]
        return {"type": "Polygon", "coordinates": [[*corners, corners[0]]]}

    fields = [("a", (10, 20, 10, 10)), ("b", (15, 25, 10, 8)), ("c", (100, 200, 7, 30))]  # a and b overlap
    polygons = tmp_path / "fields.gpkg"
    schema = {"geometry": "Polygon", "properties": {"name": "str"}}
    with fiona.open(polygons, "w", driver="GPKG", schema=schema, crs_wkt=crs.to_wkt()) as layer:
        for name, box in fields:
            layer.write({"geometry": rectangle(*box), "properties": {"name": name}})
        outside = rectangle(1000, 1000, 5, 5)
        layer.write({"geometry": outside, "properties": {"name": "outside"}})
    opened, fiona_open = [], fiona.open
    monkeypatch.setattr(
        fiona, "open", lambda path, *args, **kwargs: (opened.append(Path(path)), fiona_open(path, *args, **kwargs))[1]
    )
    output = sinop_map(ndvi_checkpoint, tmp_path / "map" / "sinop.tif", parcels=str(polygons))
    assert opened.count(polygons) == 1  # checked before the map, summarised after it: one read
    monkeypatch.undo()
    # The same summary from the finished map, the polygons read by summarise_parcels itself.
    again = summarise_parcels(output, polygons, tmp_path / "again.gpkg", probabilities_path(output))
    with (
        fiona.open(again, layer="parcels") as layer,
        fiona.open(output.with_name("sinop_parcels.gpkg"), layer="parcels") as first,
    ):
        assert [dict(f.properties) for f in layer] == [dict(f.properties) for f in first] and layer.crs == first.crs
    rasters = read_all(output)
    with fiona.open(output.with_name("sinop_parcels.gpkg"), layer="parcels") as layer:
        parcels = {feature.properties["name"]: dict(feature.properties) for feature in layer}
        class_names = [
            name.removeprefix("pixels_") for name in layer.schema["properties"] if name.startswith("pixels_")
        ]
    assert len(class_names) == 9 and list(parcels) == ["a", "b", "c", "outside"]
    for name, (row, col, rows, cols) in fields:
        classes = rasters[".tif"][0, row : row + rows, col : col + cols].ravel()
        counts = np.bincount(classes, minlength=9)
        parcel = parcels[name]
        assert parcel["pixels"] == rows * cols and parcel["nodata_pixels"] == 0
        assert [parcel[f"pixels_{c}"] for c in class_names] == counts.tolist()
        assert parcel["class"] == class_names[counts.argmax()] and parcel["class_index"] == counts.argmax()
        assert parcel["class_share"] == pytest.approx(counts.max() / counts.sum())
        mean = rasters["_probs.tif"][:, row : row + rows, col : col + cols].reshape(9, -1).mean(axis=1) / 100
        np.testing.assert_allclose([parcel[f"probability_{c}"] for c in class_names], mean, atol=1e-9)
    assert parcels["outside"]["pixels"] == 0 and parcels["outside"]["class"] is None


def run_map(output: Path, checkpoint: Path, *options: str, script: Path | None = None, **kwargs):
    """``cmap map`` of the Sinop cube in a new process (with ``script``, that script instead of ``-m cmap.mapping``)."""
    arguments = ["--checkpoint", str(checkpoint), "--rasters", str(require(SINOP)), "--output", str(output),
                 "--pattern", SINOP_PATTERN, "--scale", "1e-4", "--valid_range", "[-2000, 10000]", "--window_size",
                 "64", "--progress", "false", "--smoothing", "true", "--uncertainty", "true", "--cog", "false",
                 "--accelerator", "cpu", *options]  # fmt: skip
    command = [sys.executable, str(script)] if script else [sys.executable, "-m", "cmap.mapping"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [*command, *arguments], capture_output=True, text=True, timeout=300, env=environment, **kwargs
    )


TWO_PROCESSES = ("--devices", "2", "--strategy", "ddp")


@pytest.fixture(scope="module")
def one_process_map(ndvi_checkpoint, tmp_path_factory) -> dict[str, np.ndarray]:
    output = tmp_path_factory.mktemp("one") / "sinop.tif"
    result = run_map(output, ndvi_checkpoint)
    assert result.returncode == 0, result.stderr[-3000:]
    return read_all(output)


def test_two_processes_make_the_map_of_one(ndvi_checkpoint, one_process_map, tmp_path):
    output = tmp_path / "sinop.tif"
    result = run_map(output, ndvi_checkpoint, *TWO_PROCESSES)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 0 of 2: 6 windows to classify" in result.stderr
    assert "process 1 of 2: 6 windows to classify" in result.stderr
    two = read_all(output)
    assert two.keys() == one_process_map.keys() and len(two) == 3
    for name in two:
        np.testing.assert_array_equal(two[name], one_process_map[name], err_msg=name)
    assert not parts_path(output).exists() and attributes_path(output).exists()


KILL_AFTER_TWO_WINDOWS = """
import os, signal
from cmap.mapping.command import main
from cmap.mapping.writer import MapWriter

original = MapWriter.write_on_batch_end
written = []

def write_then_kill(self, trainer, *args, **kwargs):
    original(self, trainer, *args, **kwargs)
    written.append(1)
    if trainer.global_rank == 0 and len(written) == 2:  # the job is killed: every process at once
        os.killpg(os.getpgrp(), signal.SIGKILL)

MapWriter.write_on_batch_end = write_then_kill
main()
"""


def test_a_killed_two_process_map_resumes_and_equals_the_uninterrupted_one(ndvi_checkpoint, one_process_map, tmp_path):
    script = tmp_path / "killed_map.py"
    script.write_text(KILL_AFTER_TWO_WINDOWS)
    output = tmp_path / "out" / "sinop.tif"
    killed = run_map(output, ndvi_checkpoint, *TWO_PROCESSES, script=script, start_new_session=True)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not output.exists() and all(p.name.startswith(".") for p in output.parent.iterdir())
    written = len(list(parts_path(output).glob("window-*.npz")))
    assert 2 <= written < 12
    resumed = run_map(output, ndvi_checkpoint, *TWO_PROCESSES)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    to_do = [int(count) for count in re.findall(r"process \d of 2: (\d+) windows to classify", resumed.stderr)]
    assert len(to_do) == 2 and sum(to_do) == 12 - written  # the finished windows were not classified again
    rasters = read_all(output)
    for name in one_process_map:
        np.testing.assert_array_equal(rasters[name], one_process_map[name], err_msg=name)
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "sinop.qml", "sinop.tif", "sinop.tif.aux.xml", "sinop_probs.tif", "sinop_uncertainty.tif",
    ]  # fmt: skip


def test_parts_of_another_command_are_not_reused(ndvi_checkpoint, tmp_path, monkeypatch):
    """A map resumed with other options (here: smoothing) classifies every window again."""
    output = tmp_path / "sinop.tif"
    original, calls = MapWriter.write_on_batch_end, []

    def write_then_fail(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("stopped")

    monkeypatch.setattr(MapWriter, "write_on_batch_end", write_then_fail)
    with pytest.raises(RuntimeError, match="stopped"):
        sinop_map(ndvi_checkpoint, output, window_size=64)
    monkeypatch.setattr(MapWriter, "write_on_batch_end", original)
    sinop_map(ndvi_checkpoint, output, window_size=64, smoothing=True, cog=False)
    smoothed = read_all(output)
    sinop_map(ndvi_checkpoint, tmp_path / "fresh.tif", window_size=64, smoothing=True, cog=False)
    for name, data in read_all(tmp_path / "fresh.tif").items():
        np.testing.assert_array_equal(smoothed[name], data, err_msg=name)


@pytest.mark.parametrize(
    "problem, message",
    [
        ("point", r"fields.gpkg: feature 1 is a Point, expected a Polygon or MultiPolygon"),
        ("clash", r"fields.gpkg: fields \['pixels'\] would be overwritten by the parcel summary; rename them"),
    ],
)
def test_bad_parcels_are_named_before_any_map_is_made(ndvi_checkpoint, tmp_path, problem, message):
    polygons = tmp_path / "fields.gpkg"
    ring = [(-6.07e6, -1.30e6), (-6.06e6, -1.30e6), (-6.06e6, -1.29e6), (-6.07e6, -1.30e6)]
    properties = {"name": "str", **({"pixels": "int"} if problem == "clash" else {})}
    schema = {"geometry": "Unknown", "properties": properties}
    with fiona.open(
        polygons, "w", driver="GPKG", schema=schema, crs_wkt=rasterio.crs.CRS.from_epsg(4326).to_wkt()
    ) as layer:
        values = {"name": "a", **({"pixels": 1} if problem == "clash" else {})}
        layer.write({"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": values})
        if problem == "point":
            layer.write({"geometry": {"type": "Point", "coordinates": ring[0]}, "properties": values})
    output = tmp_path / "map" / "sinop.tif"
    with pytest.raises(ValueError, match=message):
        sinop_map(ndvi_checkpoint, output, parcels=str(polygons))
    assert not output.parent.exists() or not any(output.parent.iterdir())
