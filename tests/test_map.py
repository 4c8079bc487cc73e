"""Crop maps from raster stacks (cmap.mapping) and training samples from rasters (cmap.data.raster)."""

import json
import subprocess
import sys
from pathlib import Path

import fiona
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from cmap.cli import main as cmap_main
from cmap.data import SeriesStore, open_store, write_store
from cmap.data.contract import TimeAxis
from cmap.data.convert import read_mato_grosso
from cmap.data.raster import RasterStack
from cmap.data.samples import extract_samples, read_labels
from cmap.mapping import map_rasters
from cmap.mapping.products import probabilities_path
from cmap.mapping.writer import MapWriter
from cmap.ml.classifiers import Classifier

from .conftest import SHARED_DATA, fit_tiny_classifier, require

SINOP = SHARED_DATA / "sits_sinop_modis_cube"
SINOP_PATTERN = r"_(?P<band>NDVI)_(?P<date>\d{4}-\d{2}-\d{2})"
SINOP_DATES = ["2013-09-14", "2013-10-16", "2013-11-17", "2013-12-19", "2014-01-17", "2014-02-18",
               "2014-03-22", "2014-04-23", "2014-05-25", "2014-06-26", "2014-07-28", "2014-08-29"]  # fmt: skip


def fit_checkpoint(store: Path, root: Path, steps: int = 3) -> Path:
    """A tiny classifier fitted by ``cmap fit`` for a few steps on ``store``; its last checkpoint."""
    data = SeriesStore(str(store), fold=0)
    root.mkdir(parents=True, exist_ok=True)
    store_data = {"class_path": "cmap.data.SeriesStore", "init_args": {"path": str(store), "fold": 0, "batch_size": 64}}
    return fit_tiny_classifier(root, store_data, len(data.band_names), len(data.class_names), steps)


@pytest.fixture(scope="module")
def mato_grosso_ndvi12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mato Grosso samples at the Sinop cube's band and dates (NDVI, every other composite)."""
    source = require(SHARED_DATA / "sits_matogrosso_mod13q1") / "br_mt_1_8K_9classes_6bands.rda"
    converted = read_mato_grosso(source).select(["NDVI"], date_step=2)
    return converted.write(tmp_path_factory.mktemp("stores") / "mato_grosso_ndvi12")


@pytest.fixture(scope="module")
def ndvi_checkpoint(mato_grosso_ndvi12: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_checkpoint(mato_grosso_ndvi12, tmp_path_factory.mktemp("model"))


def write_raster(path: Path, data: np.ndarray, crs: str = "EPSG:32631", origin=(500_000.0, 4_800_000.0), **kw) -> Path:
    bands, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands, dtype=data.dtype,
                       crs=crs, transform=from_origin(*origin, 10.0, 10.0), **kw) as dataset:  # fmt: skip
        dataset.write(data)
    return path


def synthetic_stack(folder: Path, dates=("2021-04-01", "2021-05-01", "2021-06-01"), shape=(40, 30)) -> Path:
    """Single-band NDVI-like rasters, one per date, named like sits' (``..._NDVI_<date>.tif``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for date in dates:
        write_raster(folder / f"TILE_NDVI_{date}.tif", rng.integers(0, 10000, (1, *shape)).astype(np.int16))
    return folder


def test_sinop_cube_is_read_with_its_dates_grid_and_missing_values():
    stack = RasterStack.from_folder(require(SINOP), SINOP_PATTERN, ["NDVI"], scale=1e-4, valid_range=(-2000, 10000))
    assert [str(d) for d in stack.dates] == SINOP_DATES and stack.band_names == ["NDVI"]
    assert stack.shape == (147, 255) and stack.profile["crs"].to_dict()["proj"] == "sinu"
    cube = stack.read()
    with rasterio.open(stack.paths[2][0]) as dataset:  # 2013-11-17: most of the fill values
        raw = dataset.read(1)
    assert np.array_equal(np.isnan(cube[2, 0]), (raw < -2000) | (raw > 10000)) and np.isnan(cube[2, 0]).sum() > 100
    np.testing.assert_allclose(cube[2, 0][raw > 0][:50], raw[raw > 0][:50] * 1e-4, rtol=1e-6)
    assert stack.days().tolist() == [0, 32, 64, 96, 125, 157, 189, 221, 253, 285, 317, 349]


class RecordingReads:
    """An open raster whose reads are recorded: the array each one was asked to read into (``out``)."""

    def __init__(self, dataset) -> None:
        self.dataset, self.outs = dataset, []

    def read(self, *args, **kwargs):
        self.outs.append(kwargs.get("out"))
        return self.dataset.read(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.dataset, name)


def test_bands_are_read_into_the_window_array_and_every_file_type_converts_as_numpy_does(tmp_path):
    """Each band is read straight into its place in the window's array (no array of its own, copied
    in); int16 converts in GDAL, int32 and float64 (not exactly float32) as NumPy converts them:
    their NaN and infinities are missing, a float64 beyond float32 becomes infinite as before."""
    rng = np.random.default_rng(1)
    values = {
        "A": rng.integers(-30000, 30000, (1, 6, 5)).astype(np.int16),
        "B": np.full((1, 6, 5), 2**24 + 1, dtype=np.int32) * np.arange(1, 6, dtype=np.int32),
        "C": rng.normal(0, 1, (1, 6, 5)),
    }
    values["C"][0, 2, 1:5] = [np.nan, np.inf, -np.inf, 1e300]
    for band, data in values.items():
        write_raster(tmp_path / f"T_{band}_2021-04-01.tif", data)
    stack = RasterStack.from_folder(tmp_path, r"_(?P<band>[A-C])_(?P<date>\d{4}-\d{2}-\d{2})", ["A", "B", "C"])
    opened = stack.open()
    datasets = {key: RecordingReads(opened[key]) for key in stack.layer_keys()}
    window = rasterio.windows.Window(1, 2, 4, 3)
    with np.errstate(over="ignore"):  # 1e300 in float32
        cube = stack.read(window, datasets)
        assert stack.read(window).tobytes() == cube.tobytes()  # datasets opened by read itself
        expected = np.stack([data[0, 2:5, 1:5].astype(np.float32) for data in values.values()])[None]
    expected[0, 2][~np.isfinite(values["C"][0, 2:5, 1:5])] = np.nan
    np.testing.assert_array_equal(cube, expected)
    assert np.isnan(cube[0, 2, 0, :3]).all() and np.isinf(cube[0, 2, 0, 3])  # NaN, inf, -inf missing; 1e300 inf
    outs = [out for dataset in datasets.values() for out in dataset.outs]
    assert len(outs) == 3 and outs[0] is not None and np.shares_memory(outs[0], cube[0, 0])  # the int16 band


def test_map_of_the_sinop_cube_has_the_cube_grid_classes_and_probabilities(ndvi_checkpoint, tmp_path):
    output = tmp_path / "out" / "sinop.tif"
    map_rasters(str(ndvi_checkpoint), str(require(SINOP)), str(output), pattern=SINOP_PATTERN, scale=1e-4,
                valid_range=(-2000, 10000), window_size=64, progress=False)  # fmt: skip
    stack = RasterStack.from_folder(SINOP, SINOP_PATTERN, ["NDVI"])
    class_names = Classifier.load_from_checkpoint(ndvi_checkpoint).class_names
    with rasterio.open(output) as classes, rasterio.open(probabilities_path(output)) as probabilities:
        for dataset in (classes, probabilities):
            assert dataset.crs == stack.profile["crs"] and dataset.transform == stack.profile["transform"]
            assert (dataset.height, dataset.width) == stack.shape and dataset.dtypes[0] == "uint8"
            assert dataset.nodata == 255 and dataset.profile["tiled"] and dataset.compression.name == "deflate"
        assert json.loads(classes.tags()["class_names"]) == class_names
        assert set(classes.colormap(1)) >= set(range(len(class_names)))
        assert list(probabilities.descriptions) == class_names
        # Self-describing without the .qml: class names as band metadata, the probability scale and
        # unit as GDAL's own (a GIS reads 0..1, not 0..100).
        assert [classes.tags(1)[str(i)] for i in range(len(class_names))] == class_names
        assert probabilities.scales == (0.01,) * len(class_names) and probabilities.offsets == (0.0,) * len(class_names)
        assert probabilities.units == ("fraction",) * len(class_names) and probabilities.tags()["unit"] == "fraction"
        mapped, percent = classes.read(1), probabilities.read()
    assert mapped.max() < len(class_names) and (mapped != 255).all()  # every Sinop pixel has a valid date
    # The class is the most probable one; percentages sum to 100 up to rounding.
    assert np.array_equal(mapped, percent.argmax(axis=0)) or (percent.max(0) == np.take_along_axis(
        percent, mapped[None], 0)[0]).all()  # fmt: skip
    assert np.abs(percent.sum(axis=0).astype(int) - 100).max() <= len(class_names) // 2 + 1
    style = output.with_suffix(".qml").read_text()
    assert all(f'label="{name}"' in style for name in class_names)
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "sinop.qml", "sinop.tif", "sinop.tif.aux.xml", "sinop_probs.tif",
    ]  # fmt: skip


def test_a_stack_starting_later_is_mapped_on_the_training_days(ndvi_checkpoint, tmp_path):
    """The Sinop cube without its first image (2013-09-14): the checkpoint's time axis (days since
    09-13, the season start of the Mato Grosso samples) puts each image on its training day."""
    later = tmp_path / "later"
    later.mkdir()
    for path in sorted(require(SINOP).glob("*_NDVI_*.jp2"))[1:]:
        (later / path.name).symlink_to(path)
    assert Classifier.load_from_checkpoint(ndvi_checkpoint).input_contract.time_axis == TimeAxis.from_season_start(
        "09-13"
    )

    def mapped(name: str, **options) -> np.ndarray:
        output = tmp_path / name
        map_rasters(str(ndvi_checkpoint), str(later), str(output), pattern=SINOP_PATTERN, scale=1e-4,
                    valid_range=(-2000, 10000), progress=False, cog=False, **options)  # fmt: skip
        with rasterio.open(output) as classes, rasterio.open(probabilities_path(output)) as probabilities:
            return np.concatenate([classes.read(), probabilities.read()])

    default = mapped("default.tif")
    np.testing.assert_array_equal(default, mapped("aligned.tif", reference_date="2013-09-13"))
    # Days counted from the stack's own first date (what the map did before) shift every date.
    shifted = mapped("shifted.tif", reference_date="2013-10-16")
    assert not np.array_equal(default, shifted)
    # cmap convert's other time-axis options: the checkpoint's season start, and the stack's first date.
    np.testing.assert_array_equal(default, mapped("season.tif", season_start="09-13"))
    np.testing.assert_array_equal(shifted, mapped("series.tif", time_axis="series_start"))


def test_map_windows_do_not_change_the_result_and_nodata_marks_pixels_without_dates(ndvi_checkpoint, tmp_path):
    rasters = synthetic_stack(tmp_path / "rasters")
    for path in rasters.iterdir():  # a hole in every date -> nodata; a hole in one date -> still mapped
        with rasterio.open(path, "r+") as dataset:
            data = dataset.read(1)
            data[:5, :5] = -3000
            if "04-01" in path.name:
                data[10:15, 10:15] = -3000
            dataset.write(data, 1)
    maps = []
    for window_size, cog in ((7, False), (256, True)):
        output = tmp_path / f"map_{window_size}.tif"
        map_rasters(str(ndvi_checkpoint), str(rasters), str(output), pattern=SINOP_PATTERN, scale=1e-4,
                    valid_range=(-2000, 10000), window_size=window_size, cog=cog, progress=False)  # fmt: skip
        with rasterio.open(output) as dataset:
            maps.append(dataset.read(1))
    assert np.array_equal(maps[0], maps[1])
    assert (maps[0][:5, :5] == 255).all() and (maps[0][10:15, 10:15] != 255).all() and (maps[0][5:] != 255).all()


def test_map_command_line(ndvi_checkpoint, tmp_path):
    rasters = synthetic_stack(tmp_path / "rasters")
    output = tmp_path / "cli" / "map.tif"
    options = {"--checkpoint": ndvi_checkpoint, "--rasters": rasters, "--output": output, "--pattern": SINOP_PATTERN,
               "--scale": "1e-4", "--probabilities": "false", "--progress": "false"}  # fmt: skip
    cmap_main(["map", *(str(part) for option in options.items() for part in option)])
    assert output.exists() and not probabilities_path(output).exists()


def test_the_map_command_module_imports_neither_torch_nor_lightning():
    """``cmap map --help`` starts fast: its options are parsed before torch or Lightning is imported."""
    script = (
        "import sys\nimport cmap.mapping.command, cmap.mapping.options, cmap.raster_source\n"
        "print(sorted(name for name in ('torch', 'lightning') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]


@pytest.mark.parametrize(
    "problem, message",
    [
        ("other_crs", r"crs .* differs from"),
        ("other_size", r"width 31 differs from 30"),
        ("bad_date", r"cannot parse the date '2021-13-45'"),
        ("no_band", r"no file .* matches the pattern"),
        ("missing_date_band", r"bands \['NDVI'\] missing at 2021-07-01"),
    ],
)
def test_bad_rasters_give_a_clear_error_and_no_output(ndvi_checkpoint, tmp_path, problem, message):
    rasters = synthetic_stack(tmp_path / "rasters")
    data = np.zeros((1, 40, 30), dtype=np.int16)
    if problem == "other_crs":
        write_raster(rasters / "TILE_NDVI_2021-07-01.tif", data, crs="EPSG:32632")
    elif problem == "other_size":
        write_raster(rasters / "TILE_NDVI_2021-07-01.tif", np.zeros((1, 40, 31), dtype=np.int16))
    elif problem == "bad_date":
        write_raster(rasters / "TILE_NDVI_2021-13-45.tif", data)
    elif problem == "no_band":  # the checkpoint wants NDVI; the files hold EVI
        for path in rasters.iterdir():
            path.rename(path.with_name(path.name.replace("NDVI", "EVI")))
    elif problem == "missing_date_band":  # a multi-band file per date, one without NDVI
        for path in rasters.iterdir():
            path.unlink()
        for date, name in (("2021-06-01", "NDVI"), ("2021-07-01", "EVI")):
            write_raster(rasters / f"tile_{date}.tif", data)
            with rasterio.open(rasters / f"tile_{date}.tif", "r+") as dataset:
                dataset.set_band_description(1, name)
    output = tmp_path / "out" / "map.tif"
    pattern = SINOP_PATTERN if problem != "missing_date_band" else r"(?P<date>\d{4}-\d{2}-\d{2})"
    with pytest.raises(ValueError, match=message):
        map_rasters(str(ndvi_checkpoint), str(rasters), str(output), pattern=pattern, progress=False)
    assert not output.parent.exists() or not any(output.parent.iterdir())


def test_checkpoint_band_count_mismatch_is_named(tmp_path):
    stack_bands = synthetic_stack(tmp_path / "rasters")
    store = tmp_path / "store"
    rng = np.random.default_rng(0)
    from cmap.data.series import PixelSeries

    series = PixelSeries(rng.random((60, 3, 2), dtype=np.float32), np.tile([0, 30, 61], (60, 1)),
                         np.arange(60) % 2, "synthetic")  # fmt: skip
    write_store(store, series, ["NDVI", "EVI"], ["a", "b"])
    checkpoint = fit_checkpoint(store, tmp_path / "two_bands", steps=1)
    with pytest.raises(ValueError, match=r"bands \['EVI'\] missing at 2021-04-01 \(found \['NDVI'\]"):
        map_rasters(str(checkpoint), str(stack_bands), str(tmp_path / "map.tif"), pattern=SINOP_PATTERN)
    assert not (tmp_path / "map.tif").exists()


def test_a_map_that_fails_midway_leaves_no_file_and_resumes(ndvi_checkpoint, tmp_path, monkeypatch, capsys):
    rasters = synthetic_stack(tmp_path / "rasters")
    written = []
    original = MapWriter.write_on_batch_end

    def write_then_fail(self, *args, **kwargs):
        original(self, *args, **kwargs)
        written.append(1)
        if len(written) == 3:
            raise RuntimeError("disk full")

    monkeypatch.setattr(MapWriter, "write_on_batch_end", write_then_fail)
    output = tmp_path / "out" / "map.tif"
    options = {"pattern": SINOP_PATTERN, "window_size": 8, "progress": False}
    with pytest.raises(RuntimeError, match="disk full"):
        map_rasters(str(ndvi_checkpoint), str(rasters), str(output), **options)
    assert len(written) == 3
    # Only the finished windows are left, hidden: the same command again classifies the others.
    assert [p.name for p in output.parent.iterdir()] == [".map.tif.partial-parts"]
    assert len(list((output.parent / ".map.tif.partial-parts").iterdir())) == 3
    capsys.readouterr()
    monkeypatch.setattr(MapWriter, "write_on_batch_end", original)
    map_rasters(str(ndvi_checkpoint), str(rasters), str(output), **options)
    assert "process 0 of 1: 17 windows to classify, 3 already written" in capsys.readouterr().err  # 5 x 4 windows
    map_rasters(str(ndvi_checkpoint), str(rasters), str(tmp_path / "again.tif"), **options)
    with rasterio.open(output) as resumed, rasterio.open(tmp_path / "again.tif") as uninterrupted:
        np.testing.assert_array_equal(resumed.read(), uninterrupted.read())
    assert sorted(p.name for p in output.parent.iterdir()) == ["map.qml", "map.tif", "map.tif.aux.xml", "map_probs.tif"]


def test_a_killed_map_leaves_no_file_under_the_output_names(ndvi_checkpoint, tmp_path):
    """SIGKILL gives no chance to clean up: the partial files are hidden, never under the output names."""
    rasters = synthetic_stack(tmp_path / "rasters", shape=(400, 400))
    output = tmp_path / "out" / "map.tif"
    script = (
        "import os, signal, sys\n"
        "from cmap.mapping import map_rasters\nfrom cmap.mapping.writer import MapWriter\n"
        "original = MapWriter.write_on_batch_end\n"
        "def write_then_die(self, *args, **kwargs):\n"
        "    original(self, *args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "MapWriter.write_on_batch_end = write_then_die\n"
        f"map_rasters({str(ndvi_checkpoint)!r}, {str(rasters)!r}, {str(output)!r}, pattern={SINOP_PATTERN!r}, "
        "window_size=64, progress=False)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -9, result.stderr[-2000:]
    left = sorted(p.name for p in output.parent.iterdir())
    assert left and all(name.startswith(".") and ".partial" in name for name in left), left
    assert not output.exists() and not probabilities_path(output).exists()


def test_samples_at_the_sinop_points_are_the_cube_pixels_under_them():
    stack = RasterStack.from_folder(require(SINOP), SINOP_PATTERN, ["NDVI"], scale=1e-4, valid_range=(-2000, 10000))
    shapes = read_labels(SINOP / "samples_sinop_crop.csv")
    series, class_names = extract_samples(stack, shapes, window_size=100)  # several windows
    assert class_names == ["Cerrado", "Forest", "Pasture", "Soy_Corn"]
    assert np.bincount(series.labels).tolist() == [3, 3, 4, 8]  # the data's README
    assert series.groups.tolist() == list(range(18)) and series.values.shape == (18, 12, 1)
    cube = stack.read()
    with rasterio.open(stack.paths[0][0]) as dataset:
        from rasterio.warp import transform

        xs, ys = transform("EPSG:4326", dataset.crs, *zip(*(g["coordinates"] for g in shapes.geometries), strict=True))
        rows, cols = rasterio.transform.rowcol(dataset.transform, xs, ys)
    np.testing.assert_array_equal(series.values[:, :, 0], cube[:, 0, rows, cols].T)
    forest = series.values[series.labels == 1, :, 0]
    assert np.nanmean(forest) > 0.7  # the README: Forest ~0.85 all year


def test_samples_in_polygons_keep_their_polygon_as_group(tmp_path):
    rasters = synthetic_stack(tmp_path / "rasters")
    labels = tmp_path / "fields.gpkg"
    schema = {"geometry": "Polygon", "properties": {"crop": "str"}}
    # Pixels are 10 m; the grid starts at (500000, 4800000) and goes down. A 3x2-pixel field and a 1x4 one.
    squares = [((500_000, 4_799_970), (30, 20), "maize"), ((500_100, 4_799_900), (10, 40), "wheat")]
    with fiona.open(labels, "w", driver="GPKG", crs="EPSG:32631", schema=schema) as layer:
        for (x, y), (w, h), crop in squares:
            ring = [(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)]
            layer.write({"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"crop": crop}})
    stack = RasterStack.from_folder(rasters, SINOP_PATTERN)
    series, class_names = extract_samples(stack, read_labels(labels, "crop"))
    assert class_names == ["maize", "wheat"]
    assert np.bincount(series.groups).tolist() == [6, 4] and (series.labels == series.groups).all()
    cube = stack.read()
    np.testing.assert_array_equal(series.values[series.groups == 1][:, :, 0], cube[:, 0, 6:10, 10].T)


def test_shapes_outside_the_grid_and_unknown_labels_are_errors(tmp_path):
    stack = RasterStack.from_folder(synthetic_stack(tmp_path / "rasters"), SINOP_PATTERN)
    points = tmp_path / "points.csv"
    points.write_text("x,y,label\n500005,4799995,maize\n0,0,maize\n")
    with pytest.raises(ValueError, match=r"points.csv: 1 shapes cover no pixel .* first at index 1"):
        extract_samples(stack, read_labels(points, x_column="x", y_column="y", crs="EPSG:32631"))
    with pytest.raises(ValueError, match=r"labels \['maize'\] are not in the class names \['wheat'\]"):
        extract_samples(stack, read_labels(points, x_column="x", y_column="y", crs="EPSG:32631"), class_names=["wheat"])
    with pytest.raises(ValueError, match=r"points.csv: columns \['longitude', 'latitude'\] are missing"):
        read_labels(points)


def test_extract_command_writes_a_store_of_the_labelled_pixels(tmp_path):
    from cmap.cli import main as cmap_main

    rasters = synthetic_stack(tmp_path / "rasters")
    points = tmp_path / "points.csv"
    points.write_text("x,y,crop\n500005,4799995,maize\n500015,4799985,wheat\n500025,4799975,maize\n")
    cmap_main(["extract", str(rasters), str(points), str(tmp_path / "store"), "--pattern", SINOP_PATTERN,
               "--label_field", "crop", "--x_column", "x", "--y_column", "y", "--crs", "EPSG:32631"])  # fmt: skip
    series, metadata = open_store(tmp_path / "store")
    assert metadata["class_names"] == ["maize", "wheat"]
    # Days since the month-day of the stack's first date (2021-04-01), and the raw-value convention.
    assert metadata["time_axis"] == {"rule": "season_start", "reference_date": None, "season_start": "04-01"}
    assert metadata["raw_values"] == {"scale": 1.0, "offset": 0.0, "valid_range": None}
    assert series.labels.tolist() == [0, 1, 0] and np.asarray(series.days[[0]]).tolist() == [[0, 30, 61]]
    cube = RasterStack.from_folder(rasters, SINOP_PATTERN).read()
    np.testing.assert_array_equal(series.values[[0, 1, 2]][:, :, 0], cube[:, 0, [0, 1, 2], [0, 1, 2]].T)
    # cmap convert's time-axis options.
    command = ["extract", str(rasters), str(points), str(tmp_path / "other"), "--pattern", SINOP_PATTERN,
               "--label_field", "crop", "--x_column", "x", "--y_column", "y", "--crs", "EPSG:32631",
               "--overwrite"]  # fmt: skip
    for options, axis, days in (
        (["--season_start", "03-01"], {"rule": "season_start", "reference_date": None, "season_start": "03-01"}, 31),
        (
            ["--time_axis", "reference_date"],
            {"rule": "reference_date", "reference_date": "2021-04-01", "season_start": None},
            0,
        ),  # fmt: skip
    ):
        cmap_main([*command, *options])
        series, metadata = open_store(tmp_path / "other")
        assert metadata["time_axis"] == axis and int(series.days[0][0]) == days


def test_cmap_predict_writes_one_row_per_test_series(ndvi_checkpoint, mato_grosso_ndvi12, tmp_path):
    root = ndvi_checkpoint.parents[3]  # root/lightning_logs/version_0/checkpoints/last.ckpt
    output = tmp_path / "predictions.csv"
    writer = ["--trainer.callbacks+=cmap.predictions.PredictionWriter", "--trainer.callbacks.output", str(output)]
    cmap_main(["predict", "--config", str(root / "config.yaml"), "--ckpt_path", str(ndvi_checkpoint), *writer])
    table = pd.read_csv(output)
    data = SeriesStore(str(mato_grosso_ndvi12), fold=0)
    data.setup("predict")
    assert sorted(table["index"]) == list(range(len(data.datasets["test"])))
    probabilities = table[[f"probability/{name}" for name in data.class_names]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (table["class"] == [data.class_names[i] for i in probabilities.argmax(axis=1)]).all()
    assert list(tmp_path.iterdir()) == [output]


def test_cmap_predict_on_two_processes_writes_every_series_once_per_rank_file(ndvi_checkpoint, tmp_path):
    root = ndvi_checkpoint.parents[3]
    single, double = tmp_path / "single" / "p.csv", tmp_path / "ddp" / "p.csv"
    common = ["predict", "--config", str(root / "config.yaml"), "--ckpt_path", str(ndvi_checkpoint),
              "--trainer.callbacks+=cmap.predictions.PredictionWriter", "--trainer.callbacks.output"]  # fmt: skip
    cmap_main([*common, str(single)])
    ddp = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    result = subprocess.run([sys.executable, "-m", "cmap.cli", *common, str(double), *ddp], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in double.parent.iterdir()) == ["p.rank0.csv", "p.rank1.csv"]
    ranks = pd.concat([pd.read_csv(double.parent / f"p.rank{rank}.csv") for rank in (0, 1)])
    ranks = ranks.drop_duplicates("index").sort_values("index").reset_index(drop=True)  # the sampler pads
    expected = pd.read_csv(single).sort_values("index").reset_index(drop=True)
    assert ranks["index"].tolist() == expected["index"].tolist()
    assert (ranks["class"] == expected["class"]).all()
    np.testing.assert_allclose(ranks["confidence"], expected["confidence"], atol=1e-5)


@pytest.fixture(scope="module")
def second_checkpoint(mato_grosso_ndvi12: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model of the same data and inputs (more steps: other weights), for ensembles."""
    return fit_checkpoint(mato_grosso_ndvi12, tmp_path_factory.mktemp("model2"), steps=6)


def test_ensembles_average_the_members_probabilities_in_map_and_predict(ndvi_checkpoint, second_checkpoint, tmp_path):
    def mapped(name: str, checkpoint: str | list[str]) -> np.ndarray:
        output = tmp_path / name
        map_rasters(checkpoint, str(require(SINOP)), str(output), pattern=SINOP_PATTERN, scale=1e-4,
                    valid_range=(-2000, 10000), progress=False, cog=False)  # fmt: skip
        with rasterio.open(probabilities_path(output)) as dataset:
            return dataset.read().astype(float)

    first, second = mapped("a.tif", str(ndvi_checkpoint)), mapped("b.tif", str(second_checkpoint))
    assert not np.array_equal(first, second)
    both = mapped("ab.tif", [str(ndvi_checkpoint), str(second_checkpoint)])
    assert np.abs(both - (first + second) / 2).max() <= 1.0  # percents, each map rounded to whole ones

    config = ndvi_checkpoint.parents[3] / "config.yaml"  # root/lightning_logs/version_0/checkpoints/last.ckpt

    def predicted(name: str, checkpoint: Path, *ensemble: str) -> np.ndarray:
        output = tmp_path / name
        writer = ["--trainer.callbacks+=cmap.predictions.PredictionWriter", "--trainer.callbacks.output", str(output)]
        cmap_main(["predict", "--config", str(config), "--ckpt_path", str(checkpoint), *writer, *ensemble])
        table = pd.read_csv(output).sort_values("index")
        return table[[column for column in table if column.startswith("probability/")]].to_numpy()

    together = predicted("together.csv", ndvi_checkpoint, "--ensemble", f"[{second_checkpoint}]")
    alone = (predicted("first.csv", ndvi_checkpoint) + predicted("second.csv", second_checkpoint)) / 2
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_an_ensemble_member_with_other_inputs_is_refused(ndvi_checkpoint, second_checkpoint, tmp_path):
    from cmap.data.contract import CHECKPOINT_KEY
    from cmap.predictions import load_classifier

    content = torch.load(second_checkpoint, weights_only=True)
    content[CHECKPOINT_KEY]["mean"] = [value + 0.1 for value in content[CHECKPOINT_KEY]["mean"]]
    other = tmp_path / "other_statistics.ckpt"
    torch.save(content, other)
    with pytest.raises(
        ValueError, match=r"other_statistics.ckpt: an ensemble member's input contract differs .*'mean'"
    ):
        load_classifier([str(ndvi_checkpoint), str(other)])
