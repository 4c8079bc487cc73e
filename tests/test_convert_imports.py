"""``cmap convert`` and ``cmap extract`` start and run without torch, Lightning or jsonargparse.

Their readers, converters and the store format hold series as numpy arrays (:mod:`cmap.data.series`);
the torch dataset of training and prediction is :mod:`cmap.data.dataset`. Importing torch took about a
second and several hundred MB before any option was read; jsonargparse (for cmap.runtime's settings,
which these commands do not use) another 50 ms. Each check runs in a fresh interpreter, where
``sys.modules`` tells what the command imported (pyproject.toml's import-linter contract checks the
imports themselves; these check what actually runs, lazy imports included).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

from .conftest import help_and_modules_loaded

HEAVY = ("torch", "lightning", "jsonargparse")
DATES = ("2021-04-01", "2021-05-01", "2021-06-01")


@pytest.mark.parametrize("command", [["convert"], ["convert", "table"], ["extract"]])
def test_the_help_of_convert_and_extract_imports_neither_torch_nor_lightning(command):
    output, loaded = help_and_modules_loaded(command, HEAVY)
    assert f"usage: cmap {command[0]}" in output, output
    assert loaded == [], output


def test_the_data_command_module_imports_neither_torch_nor_lightning():
    script = f"import sys, cmap.data.__main__\nprint(sorted(name for name in {HEAVY!r} if name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]


def write_inputs(root: Path) -> tuple[Path, Path, Path]:
    """A table of 4 samples on 3 dates, 3 single-band rasters (24 x 24, one per date), 2 labelled points."""
    rng = np.random.default_rng(0)
    rows = [(f"s{i}", date, round(float(rng.uniform(0.1, 0.9)), 4), "ab"[i % 2]) for i in range(4) for date in DATES]
    table = root / "table.csv"
    pd.DataFrame(rows, columns=["sample_id", "date", "NDVI", "label"]).to_csv(table, index=False)
    rasters = root / "rasters"
    rasters.mkdir()
    grid = {"crs": "EPSG:32631", "transform": from_origin(500_000, 4_800_000, 10, 10), "width": 24, "height": 24,
            "count": 1, "dtype": "int16", "driver": "GTiff"}  # fmt: skip
    for date in DATES:
        with rasterio.open(rasters / f"TILE_NDVI_{date}.tif", "w", **grid) as out:
            out.write(rng.integers(0, 10000, (1, 24, 24)).astype(np.int16))
    points = root / "points.csv"
    points.write_text("x,y,label\n500005,4799995,a\n500095,4799905,b\n")
    return table, rasters, points


def test_a_conversion_and_an_extraction_run_without_torch_or_lightning(tmp_path):
    """The whole path, not only the imports at start: a table converted and rasters extracted, then stores read."""
    table, rasters, points = write_inputs(tmp_path)
    commands = [
        ["convert", "table", str(table), str(tmp_path / "from_table"), "--bands", "NDVI"],
        ["extract", str(rasters), str(points), str(tmp_path / "from_rasters"), "--pattern",
         r"_(?P<band>NDVI)_(?P<date>\d{4}-\d{2}-\d{2})", "--x_column", "x", "--y_column", "y", "--crs", "EPSG:32631"],
    ]  # fmt: skip
    script = (
        "import json, sys, cmap.cli\n"
        f"for command in {commands!r}:\n"
        "    cmap.cli.main(command)\n"
        f"print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.rstrip("\n").rpartition("\n")[2]) == [], result.stdout
    from cmap.data.store import open_store

    from_table, table_metadata = open_store(tmp_path / "from_table")
    from_rasters, raster_metadata = open_store(tmp_path / "from_rasters")
    assert len(from_table) == 4 and table_metadata["class_names"] == ["a", "b"]
    assert len(from_rasters) == 2 and from_rasters.values.shape[1:] == (3, 1)
