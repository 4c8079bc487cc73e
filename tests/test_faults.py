"""Fault injection: full disks, killed processes, wrong output paths, corrupt inputs, foreign code in configs.

Every writer of cmap (store conversion, checkpoint saving, crop maps, prediction tables) is run
(through the ``cmap`` command, in a forked child process, so that no import is paid twice) while:

- **the disk fills up**: the child's files may not grow past a few kilobytes (``RLIMIT_FSIZE``, with
  ``SIGXFSZ`` ignored, so that writes past it fail with ``EFBIG`` as on a full disk, in every
  library: numpy, GDAL, torch, pyarrow), or, where the tests may mount one (root), a small tmpfs;
- **the process is killed** (``SIGKILL``) at seeded random moments of its run.

After each: every file under an output name is complete and readable (or absent), a failed command
exits non-zero, and running the same command again finishes the job. The numbered tests are the
cases of the "Reliability II" issue; each failed before its fix.
"""

import contextlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from cmap.cli import main as cmap_main
from cmap.data.store import open_store
from cmap.ml.fault_tolerance import last_checkpoint

from .conftest import fit_tiny_classifier

PATTERN = r"_(?P<band>NDVI)_(?P<date>\d{4}-\d{2}-\d{2})"
DATES = ("2021-04-01", "2021-05-01", "2021-06-01")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
WRITER = ["--trainer.callbacks+=cmap.predictions.PredictionWriter", "--trainer.callbacks.output"]
SMALL_FILE = 8_000  # bytes a child may write to one file when "the disk is full"


# ---------------------------------------------------------------------------------------------
# Running a command in a child that the disk fails or that is killed
# ---------------------------------------------------------------------------------------------


def in_child(
    action: Callable[[], None],
    file_size_limit: int | None = None,
    kill_after: float | None = None,
    kill_at_flush: int | None = None,
):
    """Run ``action`` in a forked child; returns (exit status or -signal, error text).

    ``file_size_limit``: writes past this size fail with EFBIG (a full disk, for every writer).
    ``kill_after``: SIGKILL the child after this many seconds.
    ``kill_at_flush``: the child kills itself (SIGKILL) at its n-th ``os.fsync``: a file written in
    full but not yet renamed, or renamed but its folder not yet flushed, the riskiest moments.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_end)
        status, stderr = 0, io.StringIO()
        try:
            torch.set_num_threads(1)  # the parent's OpenMP threads do not exist here (OpenMP is not fork-safe)
            if kill_at_flush is not None:
                calls, fsync = [], os.fsync

                def fsync_then_die(descriptor: int) -> None:
                    calls.append(descriptor)
                    if len(calls) == kill_at_flush:
                        os.kill(os.getpid(), signal.SIGKILL)
                    fsync(descriptor)

                os.fsync = fsync_then_die
            if file_size_limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(
                    resource.RLIMIT_FSIZE, (file_size_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
                )
            with contextlib.redirect_stderr(stderr):
                action()
        except SystemExit as error:
            status = error.code if isinstance(error.code, int) else 1
            os.write(write_end, stderr.getvalue()[-6000:].encode())
        except BaseException:
            status = 1
            os.write(write_end, traceback.format_exc()[-6000:].encode())
        finally:
            os._exit(status)
    os.close(write_end)
    if kill_after is not None:
        time.sleep(kill_after)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    return (os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)), text


def timed(action: Callable[[], None]) -> float:
    """Seconds a complete run of ``action`` takes in a child (it must succeed)."""
    start = time.monotonic()
    status, text = in_child(action)
    assert status == 0, text
    return time.monotonic() - start


def kill_points(duration: float, count: int, seed: int) -> list[float]:
    """Seeded random moments of a run that takes ``duration`` seconds (its start included)."""
    rng = random.Random(seed)
    return sorted(rng.uniform(0.05, duration) for _ in range(count))


def visible(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def raster_is_complete(path: Path, count: int, shape: tuple[int, int]) -> None:
    """Every block of every band (and every overview) of ``path`` reads back."""
    with rasterio.open(path) as dataset:
        assert dataset.count == count and (dataset.height, dataset.width) == shape, path
        for _, window in dataset.block_windows(1):
            dataset.read(window=window)
        for factor in dataset.overviews(1):
            dataset.read(out_shape=(count, dataset.height // factor, dataset.width // factor))


# ---------------------------------------------------------------------------------------------
# Inputs: a table, a store, a tiny checkpoint, a raster stack
# ---------------------------------------------------------------------------------------------


def write_table(path: Path, samples: int = 1500) -> Path:
    """A long table (one row per sample and date) of NDVI-like values, two classes."""
    rng = np.random.default_rng(0)
    rows = [
        (f"s{i}", date, round(float(rng.uniform(0.1, 0.9)), 4), round(float(rng.uniform(0, 1)), 4), "ab"[i % 2])
        for i in range(samples)
        for date in DATES
    ]
    pd.DataFrame(rows, columns=["sample_id", "date", "NDVI", "EVI", "label"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("store")
    table = write_table(folder / "samples.csv", samples=200)
    cmap_main(["convert", "table", str(table), str(folder / "ndvi"), "--bands", "NDVI"])
    return folder / "ndvi"


@pytest.fixture(scope="module")
def checkpoint(store, tmp_path_factory) -> Path:
    """A tiny classifier (NDVI, 3 dates, classes a and b) after two steps; its run config is beside it."""
    data = f"class_path: cmap.data.SeriesStore\ninit_args: {{path: {store}, fold: 0, batch_size: 32}}"
    return fit_tiny_classifier(tmp_path_factory.mktemp("model"), data, 1, 2, steps=2)


def raster_stack(folder: Path, shape=(200, 200)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for date in DATES:
        with rasterio.open(folder / f"TILE_NDVI_{date}.tif", "w", driver="GTiff", width=shape[1], height=shape[0],
                           count=1, dtype="int16", crs="EPSG:32631",
                           transform=from_origin(500_000, 4_800_000, 10, 10)) as dataset:  # fmt: skip
            dataset.write(rng.integers(0, 10000, (1, *shape)).astype(np.int16))
    return folder


def map_command(checkpoint: Path, rasters: Path, output: Path, window_size: int = 64) -> list[str]:
    return ["map", "--checkpoint", str(checkpoint), "--rasters", str(rasters), "--output", str(output),
            "--pattern", PATTERN, "--scale", "1e-4", "--window_size", str(window_size),
            "--progress", "false"]  # fmt: skip


def map_outputs(output: Path) -> list[Path]:
    return [output, output.with_name(f"{output.stem}_probs{output.suffix}"), output.with_suffix(".qml")]


def check_map(output: Path, shape=(200, 200)) -> bool:
    """The map's files are all complete, or all absent (the class map is renamed last); True when present."""
    classes, probabilities, style = map_outputs(output)
    if not classes.exists():
        return False
    raster_is_complete(probabilities, 2, shape)
    raster_is_complete(classes, 1, shape)
    assert "paletteEntry" in style.read_text()
    return True


# ---------------------------------------------------------------------------------------------
# 1. A full disk during `cmap map`
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)``: a size-limited file system (a tmpfs: root only; elsewhere the test is skipped,
    and the tests with a file size limit inject the same failure)."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                               capture_output=True).returncode != 0:  # fmt: skip
            pytest.skip("mounting a tmpfs needs root (the file size limit tests inject the same failure)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("full_disk", ["file_size_limit", "tmpfs"])
def test_1_map_on_a_full_disk_fails_and_leaves_no_file_under_the_output_names(checkpoint, tmp_path, tmpfs, full_disk):
    """Before (on a 40 KiB tmpfs): exit 0, the output path printed, a truncated unreadable ``_probs.tif``."""
    rasters = raster_stack(tmp_path / "rasters")
    folder = tmpfs("40k") if full_disk == "tmpfs" else tmp_path / "out"
    output = folder / "map.tif"
    # tmpfs: the first window's part does not fit; file size limit: the parts (32 x 32) fit, the rasters do not.
    command = map_command(checkpoint, rasters, output, window_size=256 if full_disk == "tmpfs" else 32)
    if full_disk == "tmpfs":
        status, text = in_child(lambda: cmap_main(command))
        assert status != 0, text
        assert [p.name for p in output.parent.iterdir()] == []
        output = tmp_path / "out" / "map.tif"  # the same command with room: done
        status, text = in_child(lambda: cmap_main(map_command(checkpoint, rasters, output)))
        assert status == 0 and check_map(output), text
        return
    status, text = in_child(lambda: cmap_main(command), file_size_limit=SMALL_FILE)
    # GDAL reports the failed write (EFBIG) on stderr only; reading the file back finds it.
    assert status == 1 and re.search(
        r"cmap map: error: .*map(_probs)?.tif.partial-\d+(.cog)?: (the written file is unreadable|GDAL)", text
    ), text
    assert visible(output.parent) == [], visible(output.parent)
    # No other leftover than the finished windows, hidden, which the next run does not classify again.
    assert [p.name for p in output.parent.iterdir()] == [".map.tif.partial-parts"]
    status, text = in_child(lambda: cmap_main(command))  # the same command, with room: done
    assert status == 0, text
    assert check_map(output) and sorted(p.name for p in output.parent.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------------------------------------
# 2. `--output` naming an input, and every other output that would destroy something
# ---------------------------------------------------------------------------------------------


def one_line_error(capsys, args: list[str]) -> str:
    """``cmap ARGS`` fails with status 1 and a one-line message on stderr (no traceback)."""
    with pytest.raises(SystemExit) as caught:
        cmap_main(args)
    assert caught.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cmap ")]
    assert len(lines) == 1, lines
    assert "Traceback" not in capsys.readouterr().err
    return lines[0]


def digest(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_2_map_output_naming_an_input_raster_is_refused(checkpoint, tmp_path, capsys):
    """Before: the input raster was replaced by the class map (exit 0); the next run failed on a duplicate date."""
    rasters = raster_stack(tmp_path / "rasters", shape=(20, 20))
    before = digest(rasters)
    target = rasters / f"TILE_NDVI_{DATES[1]}.tif"
    message = one_line_error(capsys, map_command(checkpoint, rasters, target))
    assert f"{target}: the crop map would overwrite the input {target}" in message
    assert digest(rasters) == before


@pytest.mark.parametrize(
    "output, message",
    [
        ("checkpoint", r"would overwrite the input .*last.ckpt"),
        ("probabilities_on_an_input", r"_probs.tif: the crop map would overwrite the input"),
        ("among_the_inputs", r"would be written among its input rasters with a name matching the pattern"),
        ("a_file_of_the_user", r"notes.tif: exists and is not a crop map written by cmap"),
        ("a_style_of_the_user", r"notes.qml: exists and is not a crop map's QGIS style written by cmap"),
        ("the_rasters_folder", r"rasters: the crop map would overwrite the input"),
        ("a_style_name", r"map.qml: the crop map is a GeoTIFF"),
    ],
)
def test_map_outputs_never_replace_an_input_or_a_file_cmap_did_not_write(checkpoint, tmp_path, capsys, output,
                                                                           message):  # fmt: skip
    rasters = raster_stack(tmp_path / "rasters", shape=(20, 20))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.tif").write_text("my notes")
    (mine / "notes.qml").write_text("<qgis>my style</qgis>")
    if output == "probabilities_on_an_input":  # x.tif's probabilities would go to x_probs.tif, an input
        (rasters / f"TILE_NDVI_{DATES[0]}.tif").rename(rasters / f"x_NDVI_{DATES[0]}_probs.tif")
        target = rasters / f"x_NDVI_{DATES[0]}.tif"
    else:
        target = {
            "checkpoint": checkpoint,
            "among_the_inputs": rasters / "map_NDVI_2021-07-01.tif",
            "a_file_of_the_user": mine / "notes.tif",
            "a_style_of_the_user": mine / "notes.tif",
            "the_rasters_folder": rasters,
            "a_style_name": tmp_path / "map.qml",
        }[output]
    if output == "a_style_of_the_user":
        (mine / "notes.tif").unlink()
    before = {path: path.read_bytes() for path in [checkpoint, *rasters.iterdir(), *mine.iterdir()]}
    assert re.search(message, one_line_error(capsys, map_command(checkpoint, rasters, target)))
    assert {path: path.read_bytes() for path in before} == before


def test_a_map_run_again_replaces_its_own_previous_map(checkpoint, tmp_path):
    rasters = raster_stack(tmp_path / "rasters", shape=(20, 20))
    output = tmp_path / "out" / "map.tif"
    for _ in range(2):
        cmap_main(map_command(checkpoint, rasters, output))
    assert check_map(output, (20, 20))
    assert visible(output.parent) == ["map.qml", "map.tif", "map.tif.aux.xml", "map_probs.tif"]


def test_a_prediction_table_never_replaces_an_input_or_another_file(checkpoint, store, tmp_path, capsys):
    config = checkpoint.parents[3] / "config.yaml"
    before = digest(store)
    for output, message in (
        (store / "values.npy", r"values.npy: the prediction table would be written into the input folder .*ndvi"),
        (checkpoint, r"last.ckpt: the prediction table would overwrite the input"),
        (config, r"config.yaml: exists and is not a prediction table written by cmap"),
    ):
        args = ["predict", "--config", str(config), "--ckpt_path", str(checkpoint),
                *WRITER, str(output)]  # fmt: skip
        assert re.search(message, one_line_error(capsys, [*args, *QUIET]))
    assert digest(store) == before and checkpoint.is_file() and "trainer:" in config.read_text()


def test_a_store_never_replaces_its_source_or_a_folder_holding_it(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    table = write_table(folder / "samples.csv", samples=10)
    (folder / "metadata.json").write_text(json.dumps({"format": "cmap-series"}))  # looks like a store
    before = table.read_bytes()
    with pytest.raises(SystemExit) as stop:  # one line, no traceback
        cmap_main(["convert", "table", str(table), str(folder), "--bands", "NDVI", "--overwrite"])
    assert stop.value.code == 1 and f"{folder} exists and is not a cmap series store" in capsys.readouterr().err
    assert table.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 3. A full disk while saving a checkpoint
# ---------------------------------------------------------------------------------------------


class FillDiskAt(L.Callback):
    """Test helper: at the start of training epoch ``epoch``, fill the file system of ``folder`` to
    ``free`` bytes (a file ``filler``), so that the next checkpoint does not fit."""

    def __init__(self, epoch: int, folder: str, free: int) -> None:
        self.epoch, self.folder, self.free = epoch, Path(folder), free

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch:
            return
        stats = os.statvfs(self.folder)
        room = stats.f_bavail * stats.f_frsize - self.free
        with open(self.folder / "filler", "wb") as file:
            file.write(b"\0" * max(room, 0))


class LimitFileSizeAt(L.Callback):
    """Test helper: from training epoch ``epoch`` on, no file may grow past ``size`` bytes (EFBIG)."""

    def __init__(self, epoch: int, size: int) -> None:
        self.epoch, self.size = epoch, size

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self.limit()

    def on_predict_epoch_end(self, trainer, pl_module) -> None:  # before PredictionWriter's (listed after)
        self.limit()

    def limit(self) -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.size, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def fit_args(root: Path, epochs: int = 3, *extra: str) -> list[str]:
    """A tiny classifier on synthetic series, best and last checkpoints each epoch."""
    model = {
        "class_path": "cmap.ml.classifiers.Classifier",
        "init_args": {
            "encoder": {
                "class_path": "cmap.ml.encoders.TransformerEncoder",
                "init_args": {
                    "position_encoder": {
                        "class_path": "cmap.ml.embeddings.PositionalEncoding",
                        "init_args": {"d_model": 16, "tau": 1000, "max_len": 400},
                    },  # fmt: skip
                    "bands_encoder": {
                        "class_path": "cmap.ml.embeddings.PixelEncoding",
                        "init_args": {"sizes": [2, 16]},
                    },  # fmt: skip
                    "d_model": 16,
                    "n_att_head": 2,
                    "n_att_layers": 1,
                    "dim_feedforward": 32,
                },  # fmt: skip
            },
            "decoder": {
                "class_path": "cmap.ml.decoders.MultiClassClassification",
                "init_args": {"hidden": 16, "num_classes": 2},
            },  # fmt: skip
        },
    }
    data = {"class_path": "cmap.data.SyntheticSITS",
            "init_args": {"class_names": ["a", "b"], "num_bands": 2, "num_dates": 6, "num_train": 64,
                          "num_test": 16, "batch_size": 16}}  # fmt: skip
    folder = str(root / "checkpoints")
    callbacks = [
        {"class_path": "ModelCheckpoint", "init_args": {"monitor": "val/loss", "filename": "best", "dirpath": folder}},
        {"class_path": "ModelCheckpoint", "init_args": {"save_last": True, "dirpath": folder}},
    ]
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(root)}}
    return ["fit", "--model", json.dumps(model), "--data", json.dumps(data), "--seed_everything", "0",
            "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir", str(root),
            "--trainer.callbacks", json.dumps(callbacks), "--trainer.logger", json.dumps(logger),
            "--attention_maps.first_epoch", "1000", "--embeddings.first_epoch", "1000", *QUIET, *extra]  # fmt: skip


def checkpoints_are_complete(folder: Path) -> list[Path]:
    """Every ``*.ckpt`` under ``folder`` is a complete checkpoint (every zip member's CRC checks)."""
    files = sorted(folder.rglob("*.ckpt"))
    for path in files:
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None, path
        torch.load(path, map_location="cpu", weights_only=True)
    return files


def resume_finishes(root: Path, epochs: int = 3) -> None:
    """``cmap fit ... --ckpt_path last`` (the same command) ends the training at its last epoch."""
    status, text = in_child(lambda: cmap_main(fit_args(root, epochs, "--ckpt_path", "last")))
    assert status == 0, text[-3000:]
    last = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == epochs - 1


def test_3_checkpoint_on_a_full_file_system_leaves_the_previous_one_and_resume_finishes(tmpfs):
    """Before: Lightning wrote /tmp, copied across file systems, left a truncated ``last.ckpt``, and
    ``--ckpt_path last`` died on it with a raw ``OSError``."""
    small_filesystem = tmpfs("4m")
    root = small_filesystem / "run"
    fill = {"class_path": "tests.test_faults.FillDiskAt",
            "init_args": {"epoch": 1, "folder": str(small_filesystem), "free": 20_000}}  # fmt: skip
    status, text = in_child(lambda: cmap_main(fit_args(root, 3, "--trainer.callbacks+=" + json.dumps(fill))))
    assert status == 1 and re.search(r"cmap fit: error: .*\.ckpt: not written, nothing changed .*No space left", text)
    (small_filesystem / "filler").unlink()
    files = checkpoints_are_complete(root)
    assert {"best.ckpt", "last.ckpt"} <= {path.name for path in files}
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not [path for path in (root / "checkpoints").iterdir() if path.name.startswith(".")]  # cleaned up
    resume_finishes(root)


def test_3_ckpt_path_last_skips_an_unreadable_checkpoint_with_a_warning(tmp_path):
    """Before: the truncated newest file was chosen and resuming died with ``OSError: [Errno 22]``."""
    root = tmp_path / "run"
    status, text = in_child(lambda: cmap_main(fit_args(root, 2)))
    assert status == 0, text
    folder = root / "checkpoints"
    (folder / "best.ckpt").unlink()
    good = folder / "last.ckpt"
    truncated = folder / "interrupted.ckpt"  # newer, cut short as by a full disk
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    trainer = L.Trainer(default_root_dir=root, logger=False, enable_progress_bar=False)
    with pytest.warns(UserWarning, match=r"interrupted.ckpt: skipped by --ckpt_path last, not a readable checkpoint"):
        chosen = last_checkpoint(trainer)
    assert chosen.name != "interrupted.ckpt"
    resume_finishes(root, epochs=2)  # the same command, the truncated file still there


def test_every_checkpoint_unreadable_is_named_and_none_is_chosen(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 not a whole archive")
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with pytest.warns(UserWarning, match=r"last.ckpt: skipped by --ckpt_path last"):
        assert last_checkpoint(trainer) is None


def test_checkpoint_save_past_the_file_size_limit_keeps_the_previous_checkpoint(tmp_path):
    root = tmp_path / "run"
    status, text = in_child(lambda: cmap_main(fit_args(root, 1)))
    assert status == 0, text
    size = (root / "checkpoints" / "last.ckpt").stat().st_size
    shutil.rmtree(root)
    limit = {"class_path": "tests.test_faults.LimitFileSizeAt", "init_args": {"epoch": 1, "size": size // 2}}
    status, text = in_child(lambda: cmap_main(fit_args(root, 3, "--trainer.callbacks+=" + json.dumps(limit))))
    assert status == 1 and re.search(r"cmap fit: error: .*\.ckpt: not written, nothing changed .*File too large", text)
    assert {"best.ckpt", "last.ckpt"} <= {path.name for path in checkpoints_are_complete(root)}
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not [path for path in (root / "checkpoints").iterdir() if path.name.startswith(".")]
    resume_finishes(root)


def test_checkpoints_of_a_run_killed_at_random_moments_are_complete_and_resume_finishes(tmp_path):
    duration = timed(lambda: cmap_main(fit_args(tmp_path / "timing", 3)))
    for i, moment in enumerate(kill_points(duration, 2, seed=3)):
        root = tmp_path / f"run{i}"
        status, _ = in_child(lambda: cmap_main(fit_args(root, 3)), kill_after=moment)  # noqa: B023
        if root.exists():
            checkpoints_are_complete(root)
        resume_finishes(root)


# ---------------------------------------------------------------------------------------------
# 4. A truncated or corrupt date raster
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 1])
def test_4_truncated_date_raster_is_one_line_naming_file_date_and_band(checkpoint, tmp_path, capsys, num_workers):
    """Before: a 90-line traceback ending in ``RasterioIOError: Read failed``, the file named deep inside."""
    rasters = raster_stack(tmp_path / "rasters")
    with rasterio.open(rasters / f"TILE_NDVI_{DATES[1]}.tif", "w", driver="GTiff", width=200, height=200, count=1,
                       dtype="int16", crs="EPSG:32631", transform=from_origin(500_000, 4_800_000, 10, 10),
                       tiled=True, blockxsize=64, blockysize=64, compress="deflate") as dataset:  # fmt: skip
        dataset.write(np.random.default_rng(1).integers(0, 10000, (1, 200, 200)).astype(np.int16))
    damaged = rasters / f"TILE_NDVI_{DATES[1]}.tif"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size * 2 // 3])
    output = tmp_path / "out" / "map.tif"
    command = [*map_command(checkpoint, rasters, output), "--num_workers", str(num_workers)]  # 1: read in a worker
    message = one_line_error(capsys, command)
    assert re.search(rf"error: {re.escape(str(damaged))}: unreadable at date {DATES[1]}, band NDVI", message), message
    # Nothing under an output name; at most the windows finished before the damaged read, hidden, for a rerun.
    assert visible(output.parent) == [] and {p.name for p in output.parent.iterdir()} <= {".map.tif.partial-parts"}


def test_a_raster_that_is_not_a_raster_is_one_line_naming_it(checkpoint, tmp_path, capsys):
    rasters = raster_stack(tmp_path / "rasters", shape=(20, 20))
    damaged = rasters / f"TILE_NDVI_{DATES[2]}.tif"
    damaged.write_bytes(b"II*\0garbage" * 10)
    message = one_line_error(capsys, map_command(checkpoint, rasters, tmp_path / "map.tif"))
    assert re.search(rf"{re.escape(str(damaged))}: not a readable raster", message), message
    points = tmp_path / "points.csv"
    points.write_text("x,y,label\n500005,4799995,a\n")
    message = one_line_error(capsys, ["extract", str(rasters), str(points), str(tmp_path / "store"), "--pattern",
                                      PATTERN, "--x_column", "x", "--y_column", "y",
                                      "--crs", "EPSG:32631"])  # fmt: skip
    assert re.search(rf"{re.escape(str(damaged))}: not a readable raster", message), message


def test_a_damaged_checkpoint_and_an_export_onto_its_input_are_one_line_errors(checkpoint, tmp_path, capsys):
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(checkpoint.read_bytes()[:5000])
    rasters = raster_stack(tmp_path / "rasters", shape=(20, 20))
    message = one_line_error(capsys, map_command(damaged, rasters, tmp_path / "map.tif"))
    assert re.search(rf"{re.escape(str(damaged))}: not a readable PyTorch checkpoint", message), message
    copy = tmp_path / "copy.ckpt"
    shutil.copy(checkpoint, copy)
    before = copy.read_bytes()
    message = one_line_error(capsys, ["export", str(copy), str(copy)])
    assert re.search(r"copy.ckpt: the file of encoder weights would overwrite the input", message), message
    notes = tmp_path / "notes.pt"
    notes.write_text("mine")
    message = one_line_error(capsys, ["export", str(copy), str(notes)])
    assert "notes.pt: exists and is not a file of encoder weights written by cmap" in message
    assert copy.read_bytes() == before and notes.read_text() == "mine"
    cmap_main(["export", str(copy), str(tmp_path / "encoder.pt")])
    cmap_main(["export", str(copy), str(tmp_path / "encoder.pt")])  # its own file: replaced
    assert visible(tmp_path) == sorted(["copy.ckpt", "damaged.ckpt", "encoder.pt", "notes.pt", "rasters"])


def test_bad_label_files_are_one_line_naming_file_column_and_row(tmp_path, capsys):
    rasters = raster_stack(tmp_path / "rasters", shape=(20, 20))
    points = tmp_path / "points.csv"
    command = ["extract", str(rasters), str(points), str(tmp_path / "store"), "--pattern", PATTERN,
               "--x_column", "x", "--y_column", "y", "--crs", "EPSG:32631"]  # fmt: skip
    for table, message in (
        (
            "x,y,label\n500005,4799995,a\n500015,north,b\n",
            "column 'y' row 1 (line 3) holds 'north', expected a coordinate",
        ),
        (
            "x,y,label\n500005,4799995,a\n500015,4799985,\n",
            "column 'label' row 1 (line 3) is empty, expected a class name",
        ),
    ):
        points.write_text(table)
        assert f"{points}: {message}" in one_line_error(capsys, command)
    polygons = tmp_path / "fields.gpkg"
    polygons.write_bytes(b"not a GeoPackage" * 8)
    command[2] = str(polygons)
    assert f"{polygons}: not a readable vector file of labels" in one_line_error(capsys, command)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("command", ["extract", "area"])
def test_7_projected_points_with_the_default_crs_are_one_line_naming_file_columns_and_crs(tmp_path, capsys, command):
    """UTM metres read as the default EPSG:4326 degrees: one line naming the file, the columns, the first row and
    --crs (was PROJ's "utm: Invalid latitude" at the end of a 39-line traceback); with --crs, they are read."""
    rasters = raster_stack(tmp_path / "rasters", shape=(20, 20))
    points = tmp_path / "points.csv"
    points.write_text("longitude,latitude,label\n-52.1,-12.5,a\n500005,4799995,a\n500015,4799985,b\n")
    if command == "extract":
        arguments = ["extract", str(rasters), str(points), str(tmp_path / "store"), "--pattern", PATTERN]
    else:
        class_map = tmp_path / "map.tif"
        grid = {"crs": "EPSG:32631", "transform": from_origin(500_000.0, 4_800_000.0, 10.0, 10.0)}
        with rasterio.open(class_map, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8", nodata=255,
                           **grid) as dataset:  # fmt: skip
            dataset.write(np.zeros((1, 20, 20), dtype=np.uint8))
            dataset.update_tags(class_names=json.dumps(["a", "b"]))
        arguments = ["area", "--map", str(class_map), "--reference", str(points), "--output", str(tmp_path / "r.csv")]
    message = one_line_error(capsys, arguments)
    assert f"{points}: columns 'longitude', 'latitude' row 1 (line 3) hold (500005, 4.8e+06)" in message
    assert "outside the valid range of the CRS EPSG:4326" in message and "2 of 3 points" in message
    assert "--crs" in message and "Traceback" not in message
    if command == "extract":
        points.write_text("longitude,latitude,label\n500005,4799995,a\n500015,4799985,b\n")
        cmap_main([*arguments, "--crs", "EPSG:32631"])
        assert len(open_store(tmp_path / "store")[0].labels) == 2
        assert "not a CRS" in one_line_error(capsys, [*arguments, "--crs", "EPSG:99999999", "--overwrite"])


def test_a_missing_or_damaged_ckpt_path_is_one_line(checkpoint, tmp_path, capsys):
    config = checkpoint.parents[3] / "config.yaml"
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(checkpoint.read_bytes()[:-100])  # the zip's central directory cut off
    for path, message in ((tmp_path / "missing.ckpt", "no such checkpoint"), (damaged, "not a readable checkpoint")):
        line = one_line_error(capsys, ["predict", "--config", str(config), "--ckpt_path", str(path), *QUIET])
        assert f"cmap predict: error: {path}: {message}" in line, line


class RunsCode:
    """Unpickling this runs ``touch <marker>`` (a malicious checkpoint's payload)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(checkpoint, tmp_path, capsys):
    """Checkpoints are read weights-only (nothing unpickled runs code), by cmap map, --ckpt_path FILE
    and --ckpt_path last (which skips such a file with a warning)."""
    marker = tmp_path / "ran"
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content["hyper_parameters"]["payload"] = RunsCode(marker)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    good, evil = folder / "last.ckpt", folder / "interrupted.ckpt"
    shutil.copy(checkpoint, good)
    torch.save(content, evil)
    os.utime(evil, (time.time() + 10, time.time() + 10))  # the newest
    rasters = raster_stack(tmp_path / "rasters", shape=(20, 20))
    assert "not a readable PyTorch checkpoint" in one_line_error(capsys, map_command(evil, rasters, tmp_path / "m.tif"))
    config = checkpoint.parents[3] / "config.yaml"
    line = one_line_error(capsys, ["predict", "--config", str(config), "--ckpt_path", str(evil), *QUIET])
    assert f"{evil}: not a readable checkpoint (Weights only load failed" in line
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with pytest.warns(UserWarning, match=r"interrupted.ckpt: skipped by --ckpt_path last"):
        assert last_checkpoint(trainer) == good
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# 5. Config loading imports only classes of the declared types
# ---------------------------------------------------------------------------------------------


def test_5_a_class_path_outside_a_class_typed_key_is_never_imported(tmp_path):
    """Before: the case-insensitive rewriting imported the module of any ``class_path`` key anywhere,
    running its import-time code; plain LightningCLI does not import it."""
    marker = tmp_path / "imported"
    (tmp_path / "foreign_module.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Thing: pass\n")
    data = {"class_path": "cmap.data.SyntheticSITS",
            "init_args": {"class_names": ["a", "b"],
                          "class_map": {"class_path": "foreign_module.thing", "a": "a"}}}  # fmt: skip
    model = tmp_path / "model.yaml"
    model.write_text("class_path: cmap.ml.classifiers.classifier\n")  # lower case: still resolved
    printed = tmp_path / "config.yaml"

    def print_config() -> None:  # in a child: the module, if imported, stays out of this process
        sys.path.insert(0, str(tmp_path))
        with open(printed, "w") as out, contextlib.redirect_stdout(out):
            cmap_main(["fit", "--model", str(model), "--data", json.dumps(data), "--print_config"])

    status, text = in_child(print_config)
    assert not marker.exists(), "the foreign module ran"
    assert status == 0, text
    assert "class_path: cmap.ml.classifiers.Classifier" in printed.read_text()
    assert "foreign_module.thing" in printed.read_text()  # the plain dict value, untouched


# ---------------------------------------------------------------------------------------------
# The fault-injection suite: each writer on a full disk, and killed at random moments
# ---------------------------------------------------------------------------------------------


def test_store_conversion_on_a_full_disk_and_killed_at_random_moments(tmp_path):
    table = write_table(tmp_path / "samples.csv")
    output = tmp_path / "out" / "store"
    output.parent.mkdir()
    command = ["convert", "table", str(table), str(output), "--bands", "NDVI", "EVI", "--overwrite"]
    status, text = in_child(lambda: cmap_main(command), file_size_limit=SMALL_FILE)
    assert status != 0 and f"{output}: writing the store failed, nothing written" in text, text[-3000:]
    assert [p.name for p in output.parent.iterdir()] == []  # no store, no temporary folder
    duration = timed(lambda: cmap_main(command))
    expected = np.asarray(open_store(output)[0].values)
    shutil.rmtree(output)
    for moment in kill_points(duration, 3, seed=1):
        in_child(lambda: cmap_main(command), kill_after=moment)
        if output.exists():  # complete, or absent
            np.testing.assert_array_equal(np.asarray(open_store(output)[0].values), expected)
        status, text = in_child(lambda: cmap_main(command))
        assert status == 0, text
        np.testing.assert_array_equal(np.asarray(open_store(output)[0].values), expected)
        assert [path.name for path in output.parent.iterdir()] == ["store"]  # the killed run's folders removed


def test_map_killed_at_random_moments_leaves_complete_files_or_none(checkpoint, tmp_path):
    rasters = raster_stack(tmp_path / "rasters")
    output = tmp_path / "out" / "map.tif"
    command = map_command(checkpoint, rasters, output)
    duration = timed(lambda: cmap_main(command))
    for path in map_outputs(output):
        path.unlink()
    for moment in kill_points(duration, 3, seed=2):
        in_child(lambda: cmap_main(command), kill_after=moment)
        check_map(output)  # complete or absent
        status, text = in_child(lambda: cmap_main(command))
        assert status == 0, text
        assert check_map(output)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predictions_on_a_full_disk_and_killed_at_random_moments(checkpoint, tmp_path, suffix):
    config = checkpoint.parents[3] / "config.yaml"
    output = tmp_path / "out" / f"predictions{suffix}"
    command = ["predict", "--config", str(config), "--ckpt_path", str(checkpoint), *QUIET,
               *WRITER, str(output)]  # fmt: skip
    # The disk fills up when the table is written (not before: LightningCLI writes the run's config).
    limit = {"class_path": "tests.test_faults.LimitFileSizeAt", "init_args": {"epoch": 0, "size": 1_000}}
    status, text = in_child(
        lambda: cmap_main(command[:-3] + ["--trainer.callbacks+=" + json.dumps(limit)] + command[-3:])
    )
    assert status == 1 and f"cmap predict: error: [Errno 27] {output}: not written, nothing changed" in text, text
    assert not output.parent.exists() or [p.name for p in output.parent.iterdir()] == []

    def read() -> pd.DataFrame:
        return pd.read_parquet(output) if suffix == ".parquet" else pd.read_csv(output)

    duration = timed(lambda: cmap_main(command))
    expected = read()
    output.unlink()
    for moment in kill_points(duration, 2, seed=4):
        in_child(lambda: cmap_main(command), kill_after=moment)
        if output.exists():
            pd.testing.assert_frame_equal(read(), expected)
        status, text = in_child(lambda: cmap_main(command))
        assert status == 0, text
        pd.testing.assert_frame_equal(read(), expected)


# ---------------------------------------------------------------------------------------------
# Killed at the riskiest moments: while a finished file is flushed, just before or after its rename
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["store", "checkpoint", "map", "predictions"])
def test_killed_while_flushing_leaves_complete_files_or_none_and_a_rerun_finishes(writer, checkpoint, tmp_path):
    """SIGKILL at the 1st and a seeded random later ``fsync`` of each writer's run."""
    if writer == "store":
        output = tmp_path / "store"
        command = ["convert", "table", str(write_table(tmp_path / "samples.csv", 300)), str(output),
                   "--bands", "NDVI", "--overwrite"]  # fmt: skip
        rerun = command

        def check(done: bool) -> None:
            if output.exists() or done:
                assert len(open_store(output)[0]) == 300 and np.isfinite(np.asarray(open_store(output)[0].values)).all()
    elif writer == "checkpoint":
        root = tmp_path / "run"
        command, rerun = fit_args(root, 2), fit_args(root, 2, "--ckpt_path", "last")

        def check(done: bool) -> None:
            checkpoints_are_complete(root) if root.exists() else None
            if done:
                assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    elif writer == "map":
        output = tmp_path / "out" / "map.tif"
        command = rerun = map_command(checkpoint, raster_stack(tmp_path / "rasters", shape=(50, 50)), output)

        def check(done: bool) -> None:
            assert check_map(output, (50, 50)) or not done
    else:
        output = tmp_path / "out" / "predictions.parquet"
        config = checkpoint.parents[3] / "config.yaml"
        command = rerun = ["predict", "--config", str(config), "--ckpt_path", str(checkpoint), *QUIET, *WRITER,
                           str(output)]  # fmt: skip

        def check(done: bool) -> None:
            if output.exists() or done:
                table = pd.read_parquet(output)
                assert len(table) > 0 and np.allclose(table.filter(like="probability/").sum(axis=1), 1, atol=1e-5)

    for flush in (1, random.Random(writer).randint(2, 8)):
        status, text = in_child(lambda: cmap_main(command), kill_at_flush=flush)  # noqa: B023
        assert status == -signal.SIGKILL if flush == 1 else status in (0, -signal.SIGKILL), text  # every writer flushes
        check(done=status == 0)
        status, text = in_child(lambda: cmap_main(rerun))
        assert status == 0, text
        check(done=True)
        if writer in ("map", "predictions"):  # the killed run's temporary files are gone too
            assert [path.name for path in output.parent.iterdir() if path.name.startswith(".")] == []
