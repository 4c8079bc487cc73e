"""Raster stacks of more files than the process may open at once (issue 30: bounded open files)."""

import datetime
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

from cmap.data import PixelSeries, write_store
from cmap.data.raster import RasterStack
from cmap.data.raster_files import OpenRasters, open_files_budget, open_files_limit

from .test_map import fit_checkpoint, write_raster

BANDS = ("B1", "B2", "B3", "B4")
DATES = 300  # x 4 bands: 1,200 files
PATTERN = r"_(?P<band>B\d)_(?P<date>\d{4}-\d{2}-\d{2})"


def with_open_files_limit(limit: int) -> str:
    """Python code that lowers the process's limit of open files (soft and hard) to ``limit``."""
    return f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"


def many_files(folder: Path, dates: int = DATES) -> Path:
    """``dates`` x 4 single-band 4 x 4 rasters, one per date and band."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    start = datetime.date(2021, 1, 1)
    for t in range(dates):
        for band in BANDS:
            day = start + datetime.timedelta(days=t)
            write_raster(folder / f"T_{band}_{day}.tif", rng.integers(0, 10000, (1, 4, 4)).astype(np.int16))
    return folder


def test_open_rasters_keep_at_most_their_capacity_and_reopen_only_the_last_ones(tmp_path):
    stack = RasterStack.from_folder(many_files(tmp_path / "rasters", dates=10), PATTERN, list(BANDS))
    opened = []

    def opener(href: str, resampling: str):
        opened.append(href)
        return rasterio.open(href)

    reference = stack.read()
    with OpenRasters(opener, capacity=8) as datasets:
        for _ in range(3):
            assert stack.read(None, datasets).tobytes() == reference.tobytes()
            assert len(datasets) == 8
    # 40 files opened once, then at each next read all but the 8 kept open.
    assert len(opened) == 40 + 2 * 32 and len(datasets) == 0


def test_a_map_of_1200_files_runs_with_ulimit_256(tmp_path):
    rasters = many_files(tmp_path / "rasters")
    rng = np.random.default_rng(0)
    series = PixelSeries(rng.random((64, DATES, len(BANDS)), dtype=np.float32), np.tile(np.arange(DATES), (64, 1)),
                         np.arange(64) % 2, "synthetic")  # fmt: skip
    write_store(tmp_path / "store", series, list(BANDS), ["a", "b"])
    checkpoint = fit_checkpoint(tmp_path / "store", tmp_path / "model", steps=1)
    output = tmp_path / "map.tif"
    arguments = ["map", "--checkpoint", str(checkpoint), "--rasters", str(rasters), "--output", str(output),
                 "--pattern", PATTERN, "--progress", "false", "--threads", "1"]  # fmt: skip
    script = with_open_files_limit(256) + f"from cmap.cli import main\nmain({arguments!r})\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with rasterio.open(output) as dataset:
        assert (dataset.read(1) != 255).all()  # every pixel classified


def test_a_limit_still_met_is_named(tmp_path):
    """Files held open elsewhere in the process leave a stack nothing: the error names the limit."""
    rasters = many_files(tmp_path / "rasters", dates=2)
    script = (
        "import os, sys\n"
        "from cmap.data.raster import RasterStack\n"
        "from cmap.outputs import InputError\n"
        f"stack = RasterStack.from_folder({str(rasters)!r}, {PATTERN!r})\n" + with_open_files_limit(256) + "hold = []\n"
        "try:\n"
        "    while True: hold.append(open(os.devnull))\n"
        "except OSError: hold.pop()\n"
        "try:\n"
        "    stack.read(None, stack.open(capacity=8))\n"
        "except InputError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "T_B" in result.stdout and "limit of" in result.stdout and "open files (ulimit -n)" in result.stdout


def test_the_default_capacity_leaves_room_under_the_limit():
    assert 4 <= OpenRasters(rasterio.open).capacity == open_files_budget() < open_files_limit()
