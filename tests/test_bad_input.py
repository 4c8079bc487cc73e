"""Every input mistake ends in one line: a walk through the error paths of every ``cmap`` command.

Each case is a mistake a user makes (a missing file, a wrong column, a bad date, a wrong band count,
an unknown class path, malformed YAML, an option of the wrong type, a checkpoint that is not one, a
folder that is not a store, rasters without dates, an empty folder, ...), run through
:func:`cmap.cli.main` in this process. It must exit non-zero, print no traceback and say what is
wrong in one line naming the file, option or value (``expected``). Argument errors of argparse and
jsonargparse (kind ``usage``) print their usage first; there the error line must name the option.

The inputs are tiny and synthetic (a three-date NDVI table, its store, a classifier trained two steps,
a 24 x 24 raster stack), built once for the module.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

from cmap.cli import main as cmap_main

from .conftest import fit_tiny_classifier

DATES = ("2021-04-01", "2021-05-01", "2021-06-01")
PATTERN = r"_(?P<band>NDVI)_(?P<date>\d{4}-\d{2}-\d{2})"
DATE_ONLY = r"(?P<date>\d{4}-\d{2}-\d{2})"  # multi-band files, bands named in the files
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SHAPE = (24, 24)
GRID = {"crs": "EPSG:32631", "transform": from_origin(500_000, 4_800_000, 10, 10)}


# ---------------------------------------------------------------------------------------------
# Inputs, built once: a table, its store, a tiny checkpoint and its run config, rasters, points, a map
# ---------------------------------------------------------------------------------------------


def write_table(path: Path, samples: int = 120) -> Path:
    rng = np.random.default_rng(0)
    rows = [
        (f"s{i}", date, round(float(rng.uniform(0.1, 0.9)), 4), "ab"[i % 2]) for i in range(samples) for date in DATES
    ]
    pd.DataFrame(rows, columns=["sample_id", "date", "NDVI", "label"]).to_csv(path, index=False)
    return path


def write_raster(path: Path, count: int = 1, dtype: str = "int16", bands: tuple[str, ...] = (), **profile) -> Path:
    """A raster of ``count`` bands on the module's grid; ``bands``: their names (descriptions)."""
    data = np.random.default_rng(0).integers(0, 100, (count, *SHAPE)).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=SHAPE[1], height=SHAPE[0], count=count, dtype=dtype,
                       **{**GRID, **profile}) as dataset:  # fmt: skip
        dataset.write(data)
        dataset.descriptions = bands or dataset.descriptions
    return path


def raster_stack(folder: Path, count: int = 1, names: str = "TILE_NDVI_{date}.tif", bands: tuple = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for date in DATES:
        write_raster(folder / names.format(date=date), count, bands=bands)
    return folder


def undated_stack(folder: Path) -> Path:
    """Rasters whose names hold no date."""
    folder.mkdir(parents=True)
    for name in ("april", "may", "june"):
        write_raster(folder / f"TILE_NDVI_{name}.tif")
    return folder


@dataclass
class Inputs:
    """The module's valid inputs; each case spoils one thing, in ``tmp`` (its own folder) when it writes."""

    table: Path
    store: Path
    checkpoint: Path
    config: Path  # the checkpoint's run config (model and data)
    rasters: Path
    points: Path
    class_map: Path
    tmp: Path = Path()

    def text(self, name: str, content: str) -> Path:
        path = self.tmp / name
        path.write_text(content)
        return path

    def table_with(self, change: Callable[[pd.DataFrame], pd.DataFrame], name: str = "samples.csv") -> Path:
        path = self.tmp / name
        change(pd.read_csv(self.table, dtype=str)).to_csv(path, index=False)
        return path

    def run_config(self, change: Callable[[dict], None]) -> Path:
        import yaml

        config = yaml.safe_load(self.config.read_text())
        change(config)
        return self.text("config.yaml", yaml.safe_dump(config))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("inputs")
    table = write_table(root / "samples.csv")
    cmap_main(["convert", "table", str(table), str(root / "store"), "--bands", "NDVI"])
    data = {"class_path": "cmap.data.SeriesStore", "init_args": {"path": str(root / "store"), "batch_size": 32}}
    checkpoint = fit_tiny_classifier(root / "model", data, 1, 2, steps=2)
    points = root / "points.csv"
    points.write_text("x,y,label\n500005,4799995,a\n500095,4799905,b\n500155,4799855,a\n")
    class_map = write_raster(root / "map.tif", dtype="uint8", nodata=255)
    with rasterio.open(class_map, "r+") as dataset:
        dataset.update_tags(class_names=json.dumps(["a", "b"]))
    return Inputs(table, root / "store", checkpoint, root / "model" / "config.yaml", raster_stack(root / "rasters"),
                  points, class_map)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The commands, with the valid inputs
# ---------------------------------------------------------------------------------------------


def convert(source: Path, output: Path, *options: str) -> list[str]:
    return ["convert", "table", str(source), str(output), "--bands", "NDVI", *options]


def extract(rasters: Path, labels: Path, output: Path, *options: str) -> list[str]:
    return ["extract", str(rasters), str(labels), str(output), "--pattern", PATTERN, "--x_column", "x",
            "--y_column", "y", "--crs", "EPSG:32631", *options]  # fmt: skip


def map_(checkpoint: Path, rasters: Path, output: Path, *options: str) -> list[str]:
    return ["map", "--checkpoint", str(checkpoint), "--rasters", str(rasters), "--output", str(output),
            "--pattern", PATTERN, "--scale", "1e-4", "--progress", "false", *options]  # fmt: skip


def area(class_map: Path, reference: Path, output: Path, *options: str) -> list[str]:
    return ["area", "--map", str(class_map), "--reference", str(reference), "--output", str(output),
            "--x_column", "x", "--y_column", "y", "--crs", "EPSG:32631", *options]  # fmt: skip


def fit(config: Path, *options: str) -> list[str]:
    return ["fit", "--config", str(config), "--trainer.max_steps", "1", *QUIET, *options]


def cmap_test(config: Path, *options: str) -> list[str]:
    return ["test", "--config", str(config), *QUIET, *options]


# ---------------------------------------------------------------------------------------------
# The mistakes: (name, kind, case(inputs) -> (arguments, [what the message must name]))
# ---------------------------------------------------------------------------------------------


def drop(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda table: table.drop(columns=[column])


def set_cell(column: str, row: int, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[row, column] = value
        return table

    return change


def not_a_store(i: Inputs) -> Path:
    folder = i.tmp / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    return folder


def empty_folder(i: Inputs) -> Path:
    folder = i.tmp / "empty"
    folder.mkdir()
    return folder


def spoil_data(**init_args) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        config["data"]["init_args"].update(init_args)

    return change


CONVERT = [
    ("convert: the table is missing", lambda i: (convert(i.tmp / "nope.csv", i.tmp / "s"), ["nope.csv"])),
    ("convert: a band column is missing", lambda i: (convert(i.table, i.tmp / "s", "--bands", "NIR"), ["NIR"])),
    ("convert: the sample column is missing",
     lambda i: (convert(i.table_with(drop("sample_id")), i.tmp / "s"), ["samples.csv", "sample_id"])),
    ("convert: the date column is missing",
     lambda i: (convert(i.table_with(drop("date")), i.tmp / "s"), ["samples.csv", "date"])),
    ("convert: the label column is missing",
     lambda i: (convert(i.table_with(drop("label")), i.tmp / "s"), ["samples.csv", "label"])),
    ("convert: a date that is no date",
     lambda i: (convert(i.table_with(set_cell("date", 4, "2021-13-45")), i.tmp / "s"), ["samples.csv", "2021-13-45"])),
    ("convert: a band value that is no number",
     lambda i: (convert(i.table_with(set_cell("NDVI", 7, "cloudy")), i.tmp / "s"), ["samples.csv", "NDVI", "cloudy"])),
    ("convert: a header only",
     lambda i: (convert(i.table_with(lambda t: t.iloc[:0]), i.tmp / "s"), ["samples.csv"])),
    ("convert: an empty file", lambda i: (convert(i.text("empty.csv", ""), i.tmp / "s"), ["empty.csv"])),
    ("convert: a label not in --class_names",
     lambda i: (convert(i.table, i.tmp / "s", "--class_names", "a", "c"), ["'b'"])),
    ("convert: a malformed --reference_date",
     lambda i: (convert(i.table, i.tmp / "s", "--reference_date", "2021/13/01"), ["2021/13/01"])),
    ("convert: a malformed --season_start",
     lambda i: (convert(i.table, i.tmp / "s", "--season_start", "13-45"), ["13-45"])),
    ("convert: a --date_format the dates do not follow",
     lambda i: (convert(i.table, i.tmp / "s", "--date_format", "%d/%m/%Y"), ["samples.csv", "%d/%m/%Y"])),
    ("convert: an unknown --encoding",
     lambda i: (convert(i.table, i.tmp / "s", "--encoding", "utf-99"), ["utf-99"])),
    ("convert: --keep_bands of a band the table lacks",
     lambda i: (convert(i.table, i.tmp / "s", "--keep_bands", "SWIR"), ["SWIR"])),
    ("convert: --overwrite onto a folder that is not a store",
     lambda i: (convert(i.table, not_a_store(i), "--overwrite"), ["folder", "not a cmap"])),
    ("convert: a dataset file of another format",
     lambda i: (["convert", "ucr_crop", str(i.table), str(i.tmp / "s")], ["samples.csv"])),
    ("convert: an .rda file that is not one",
     lambda i: (["convert", "mato_grosso", str(i.text("x.rda", "text")), str(i.tmp / "s")], ["x.rda"])),
]  # fmt: skip

EXTRACT = [
    ("extract: the raster folder is missing",
     lambda i: (extract(i.tmp / "nowhere", i.points, i.tmp / "s"), ["nowhere"])),
    ("extract: the raster folder is empty",
     lambda i: (extract(empty_folder(i), i.points, i.tmp / "s"), ["empty"])),
    ("extract: rasters without dates in their names",
     lambda i: (extract(undated_stack(i.tmp / "r"), i.points, i.tmp / "s"), ["r"])),
    ("extract: the labels file is missing",
     lambda i: (extract(i.rasters, i.tmp / "points.csv", i.tmp / "s"), ["points.csv"])),
    ("extract: the x column is missing",
     lambda i: (extract(i.rasters, i.points, i.tmp / "s", "--x_column", "easting"), ["points.csv", "easting"])),
    ("extract: the label field is missing",
     lambda i: (extract(i.rasters, i.points, i.tmp / "s", "--label_field", "crop"), ["points.csv", "crop"])),
    ("extract: an unknown --crs",
     lambda i: (extract(i.rasters, i.points, i.tmp / "s", "--crs", "EPSG:99999999"), ["EPSG:99999999"])),
    ("extract: a malformed --valid_range",
     lambda i: (extract(i.rasters, i.points, i.tmp / "s", "--valid_range", "[1]"), ["--valid_range"])),
    ("extract: every point outside the rasters",
     lambda i: (extract(i.rasters, i.text("far.csv", "x,y,label\n100,100,a\n200,200,b\n"), i.tmp / "s"),
                ["far.csv"])),
    ("extract: a band the rasters lack",
     lambda i: (extract(i.rasters, i.points, i.tmp / "s", "--bands", "B08"), ["rasters", "B08", "NDVI"])),
]  # fmt: skip

AREA = [
    ("area: the map is missing", lambda i: (area(i.tmp / "nomap.tif", i.points, i.tmp / "r.md"), ["nomap.tif"])),
    ("area: a map that is not a raster",
     lambda i: (area(i.text("map.tif", "not a map"), i.points, i.tmp / "r.md"), ["map.tif"])),
    ("area: a map without class names",
     lambda i: (area(write_raster(i.tmp / "plain.tif", dtype="uint8"), i.points, i.tmp / "r.md"), ["plain.tif"])),
    ("area: the reference has no such label column",
     lambda i: (area(i.class_map, i.points, i.tmp / "r.md", "--label_field", "crop"), ["points.csv", "crop"])),
    ("area: the reference file is missing",
     lambda i: (area(i.class_map, i.tmp / "ref.csv", i.tmp / "r.md"), ["ref.csv"])),
]  # fmt: skip

MAP = [
    ("map: the checkpoint is missing",
     lambda i: (map_(i.tmp / "model.ckpt", i.rasters, i.tmp / "m.tif"), ["model.ckpt"])),
    ("map: a checkpoint that is not one",
     lambda i: (map_(i.text("model.ckpt", "weights"), i.rasters, i.tmp / "m.tif"), ["model.ckpt"])),
    ("map: the raster folder is missing",
     lambda i: (map_(i.checkpoint, i.tmp / "nowhere", i.tmp / "m.tif"), ["nowhere"])),
    ("map: an empty raster folder",
     lambda i: (map_(i.checkpoint, empty_folder(i), i.tmp / "m.tif"), ["empty"])),
    ("map: two-band rasters whose bands have no names",
     lambda i: (map_(i.checkpoint, raster_stack(i.tmp / "r2", count=2, names="TILE_{date}.tif"), i.tmp / "m.tif",
                     "--pattern", DATE_ONLY), ["r2", "TILE_2021-04-01.tif", "no descriptions"])),
    ("map: rasters without the model's band",
     lambda i: (map_(i.checkpoint, raster_stack(i.tmp / "r4", count=2, names="TILE_{date}.tif", bands=("B04", "B08")),
                     i.tmp / "m.tif", "--pattern", DATE_ONLY), ["r4", "NDVI"])),
    ("map: rasters without dates in their names",
     lambda i: (map_(i.checkpoint, undated_stack(i.tmp / "r3"), i.tmp / "m.tif"), ["r3"])),
    ("map: a file that is not a raster among the dates",
     lambda i: (map_(i.checkpoint, spoiled_stack(i), i.tmp / "m.tif"), ["TILE_NDVI_2021-05-01.tif"])),
    ("map: a --config that is not YAML",
     lambda i: (["map", "--config", str(i.text("map.yaml", "checkpoint: [unclosed\n"))], ["map.yaml", "line 2"])),
]  # fmt: skip

MAP_USAGE = [
    ("map: --batch_size not a number",
     lambda i: (map_(i.checkpoint, i.rasters, i.tmp / "m.tif", "--batch_size", "many"), ["batch_size", "many"])),
    ("map: --smoothing not a boolean",
     lambda i: (map_(i.checkpoint, i.rasters, i.tmp / "m.tif", "--smoothing", "maybe"), ["smoothing", "maybe"])),
    ("area: --confidence not a number",
     lambda i: (area(i.class_map, i.points, i.tmp / "r.md", "--confidence", "high"), ["confidence", "high"])),
]  # fmt: skip

FIT = [
    ("fit: a config that is not YAML",
     lambda i: (fit(i.text("run.yaml", "model: [unclosed\n")), ["run.yaml", "line 2, column 1"])),
    ("fit: --trainer.max_epochs 0",
     lambda i: (fit(i.config, "--trainer.max_steps", "-1", "--trainer.max_epochs", "0"), ["max_epochs 0"])),
    ("fit: the data store is missing",
     lambda i: (fit(i.run_config(spoil_data(path=str(i.tmp / "nostore")))), ["nostore"])),
    ("fit: a store folder that is not a store",
     lambda i: (fit(i.run_config(spoil_data(path=str(not_a_store(i))))), ["folder"])),
    ("fit: a store fold that does not exist",
     lambda i: (fit(i.run_config(spoil_data(fold=7))), ["fold", "7"])),
    ("test: --ckpt_path a file that is not a checkpoint",
     lambda i: (cmap_test(i.config, "--ckpt_path", str(i.text("model.ckpt", "weights"))), ["model.ckpt"])),
    ("test: --ckpt_path missing",
     lambda i: (cmap_test(i.config, "--ckpt_path", str(i.tmp / "gone.ckpt")), ["gone.ckpt"])),
    ("test: an --ensemble member missing",
     lambda i: (cmap_test(i.config, "--ckpt_path", str(i.checkpoint), "--ensemble", f"[{i.tmp / 'seed1.ckpt'}]"),
                ["seed1.ckpt"])),
]  # fmt: skip

FIT_USAGE = [
    ("fit: the config file is missing", lambda i: (fit(i.tmp / "run.yaml"), ["run.yaml"])),
    ("fit: an unknown class path",
     lambda i: (fit(i.run_config(lambda c: c["model"].update(class_path="cmap.ml.classifiers.Classifer"))),
                ["cmap.ml.classifiers.Classifer"])),
    ("fit: --trainer.max_epochs not a number",
     lambda i: (fit(i.config, "--trainer.max_epochs", "ten"), ["max_epochs", "ten"])),
    ("fit: an unknown option", lambda i: (fit(i.config, "--trainer.maximum_epochs", "3"), ["maximum_epochs"])),
]  # fmt: skip


def alias_bomb(i: Inputs) -> Path:
    """ "billion laughs": 9 levels of 10 aliases, 10**9 strings from 300 bytes."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    return i.text("bomb.yaml", "\n".join(lines) + "\n")


CV = [
    ("cv: a --config that is not YAML",
     lambda i: (["cv", str(i.store), str(i.tmp / "cv"), "--config", str(i.text("run.yaml", "model: [unclosed\n"))],
                ["run.yaml", "line 2, column 1"])),
    ("cv: a --config alias bomb",
     lambda i: (["cv", str(i.store), str(i.tmp / "cv"), "--config", str(alias_bomb(i))], ["bomb.yaml", "aliases"])),
]  # fmt: skip


def spoiled_stack(i: Inputs) -> Path:
    folder = raster_stack(i.tmp / "spoiled")
    (folder / "TILE_NDVI_2021-05-01.tif").write_bytes(b"II*\0garbage" * 10)
    return folder


ONE_LINE = CONVERT + EXTRACT + AREA + MAP + FIT + CV
USAGE = MAP_USAGE + FIT_USAGE


def run_failing(capsys, arguments: list[str]) -> list[str]:
    """``cmap ARGUMENTS`` exits non-zero; stderr's lines, after checking that none is a traceback."""
    with pytest.raises(SystemExit) as stop:
        cmap_main(arguments)
    assert stop.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()


@pytest.mark.parametrize("case", [case for _, case in ONE_LINE], ids=[name for name, _ in ONE_LINE])
def test_an_input_mistake_is_one_line_naming_it(case, inputs, tmp_path, capsys):
    inputs.tmp = tmp_path
    arguments, expected = case(inputs)
    lines = [line for line in run_failing(capsys, arguments) if "error:" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"cmap {arguments[0]}: error: "), lines[0]
    assert all(part in lines[0] for part in expected), (expected, lines[0])


@pytest.mark.parametrize("case", [case for _, case in USAGE], ids=[name for name, _ in USAGE])
def test_an_argument_mistake_is_a_usage_error_naming_the_option(case, inputs, tmp_path, capsys):
    inputs.tmp = tmp_path
    arguments, expected = case(inputs)
    message = "\n".join(run_failing(capsys, arguments)).split("error:", 1)[-1]
    assert all(part in message for part in expected), (expected, message)


def test_the_walk_covers_at_least_40_distinct_mistakes_of_every_command():
    names = [name for name, _ in ONE_LINE + USAGE]
    assert len(set(names)) == len(names) >= 40
    commands = {name.split(":")[0] for name in names}
    assert commands == {"convert", "extract", "area", "map", "fit", "test", "cv"}
