"""``cmap extract``'s raster-source options are ``cmap map``'s: declared once, from :class:`RasterSource`.

``cmap map`` (jsonargparse) reads them from the dataclass's fields and docstring; ``cmap extract`` (argparse)
through :func:`cmap.raster_source.add_raster_source_arguments`. These tests hold the two to the same help,
defaults and values for the same command line, and the argparse side to one error line per wrong value.
"""

import inspect
import json
import subprocess
import sys
from dataclasses import fields

import pytest
from docstring_parser import parse

from cmap.cli import main as cmap_main
from cmap.data.__main__ import build_parser as data_parser
from cmap.mapping.command import build_parser as map_parser
from cmap.raster_source import RasterSource

NAMES = [source_field.name for source_field in fields(RasterSource)]
MAP_REQUIRED = ["--checkpoint", "last.ckpt", "--output", "map.tif"]


def extract_parser():
    return data_parser()._subparsers._group_actions[0].choices["extract"]


def words(text: str) -> str:
    return " ".join(text.replace("%%", "%").split())  # argparse's %-escape and line breaks aside


def option_actions(parser) -> dict:
    return {action.dest: action for action in parser._actions if action.dest in NAMES}


def test_both_commands_give_each_field_the_docstrings_help_and_the_fields_default():
    docstring = {param.arg_name: words(param.description) for param in parse(inspect.getdoc(RasterSource)).params}
    extract, mapping = option_actions(extract_parser()), option_actions(map_parser())
    assert sorted(extract) == sorted(mapping) == sorted(docstring) == sorted(NAMES)
    for source_field in fields(RasterSource):
        name = source_field.name
        assert docstring[name] and words(extract[name].help) == words(mapping[name].help) == docstring[name], name
        if name != "rasters":  # required in both: a positional argument of extract, --rasters of map
            assert extract[name].default == mapping[name].default == source_field.default, name
    assert extract["rasters"].option_strings == [] and mapping["rasters"].option_strings == ["--rasters"]


def as_lists(source: RasterSource) -> dict:
    """The fields, tuples as lists (jsonargparse gives tuples where argparse's list options give lists)."""
    return {name: list(value) if isinstance(value, tuple) else value for name, value in vars(source).items()}


@pytest.mark.parametrize(
    "options",
    [
        ["--valid_range", "[-2000, 10000]", "--scale", "1e-4", "--offset", "-0.1"],
        ["--masked_classes", "[]"],
        ["--masked_classes", "[0, 1, 3]", "--resampling", "bilinear", "--resolution", "20"],
        ["--bounds", "[300000, 4899000, 300200.5, 4899320]", "--grid_crs", "EPSG:32631"],
        ["--search", "{collections: [sentinel-2-l2a], datetime: 2022-05-01/2022-09-30, max_cloud_cover: 20}"],
        ["--pattern", r"_(?P<band>B\d+)_(?P<date>\d{8})"],
        [],
    ],
)
def test_the_same_options_give_the_same_source_in_both_commands(options):
    from_extract = RasterSource.from_options(vars(extract_parser().parse_args(["items.json", "p.csv", "s", *options])))
    from_map = RasterSource.from_options(map_parser().parse_args([*MAP_REQUIRED, "--rasters", "items.json", *options]))
    assert as_lists(from_extract) == as_lists(from_map)
    assert from_extract.rasters == "items.json" and (options == [] or from_extract != RasterSource("items.json"))


def test_extract_reads_list_values_one_by_one_too_negative_numbers_included():
    parser = extract_parser()

    def source(*options: str) -> RasterSource:
        return RasterSource.from_options(vars(parser.parse_args(["r", "p.csv", "s", *options])))

    assert source("--valid_range", "-2000", "10000").valid_range == [-2000.0, 10000.0]
    assert source("--valid_range", "[-2000, 10000]").valid_range == [-2000.0, 10000.0]
    assert source("--bounds", "0", "1.5", "2", "3").bounds == [0.0, 1.5, 2.0, 3.0]
    assert source("--masked_classes", "0", "1", "3").masked_classes == [0, 1, 3]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--valid_range", "[1]", "expected a list of 2 numbers, e.g. --valid_range '[-2000, 10000]', got 1 values"),
        ("--valid_range", "[low, high]", "expected a list of 2 numbers, e.g. --valid_range '[-2000, 10000]', got"),
        ("--bounds", "[0, 1, 2]", "expected a list of 4 numbers, e.g. --bounds '[left, bottom, right, top]'"),
        ("--masked_classes", "[8.5]", "expected a list of integers, e.g. --masked_classes '[0, 1, 3, 8, 9, 10]'"),
        ("--search", "[sentinel-2-l2a]", "expected a YAML mapping of search keywords, e.g. '{collections: "),
        ("--scale", "ten", "invalid float value: 'ten'"),
    ],
)
def test_a_wrong_value_is_one_error_line_naming_the_option(option, value, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cmap_main(["extract", str(tmp_path / "rasters"), str(tmp_path / "p.csv"), str(tmp_path / "s"), option, value])
    assert stop.value.code != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"cmap extract: error: argument {option}: "), errors
    assert expected in errors[0], errors[0]
    assert not (tmp_path / "s").exists()


def test_declaring_the_options_on_argparse_imports_nothing_heavy():
    """cmap.raster_source is imported by cmap map's --help too: it must stay light."""
    script = (
        "import argparse, json, sys\n"
        "from cmap.raster_source import RasterSource, add_raster_source_arguments\n"
        "parser = argparse.ArgumentParser()\n"
        "add_raster_source_arguments(parser)\n"
        "source = RasterSource.from_options(vars(parser.parse_args(['r', '--masked_classes', '[]'])))\n"
        "heavy = ('torch', 'lightning', 'jsonargparse', 'numpy', 'rasterio', 'pystac', 'pystac_client')\n"
        "print(json.dumps([source.masked_classes, sorted(name for name in heavy if name in sys.modules)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == [[], []]
