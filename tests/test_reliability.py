"""Reliability: bad input, interruptions (SIGKILL, SIGTERM), resumption, multi-process training, reproducibility.

Each bad input goes through a public entry point (the ``cmap`` command, a data module, a store,
``load_encoder_weights``) and must either fail with a message naming the file or key and what was
expected, or be repaired as the "Failure modes" page (docs/failures.md) says. Runs use a tiny transformer
(d_model 16, one layer) on a few hundred series, so the whole file takes about two minutes on 2 CPU
cores; the interrupted and multi-process runs are ``cmap`` subprocesses, as in the field.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cmap.data import SeriesStore, UCRCrop
from cmap.data.__main__ import main as convert_main
from cmap.data.series import PixelSeries
from cmap.data.store import open_store, write_store
from cmap.data.ucr import UCR_CROP_CLASSES, read_ucr_crop
from cmap.lightning_cli import CMapCLI
from cmap.ml.fault_tolerance import INTERRUPTED

from .conftest import REPO, SHARED_DATA, tiny_classifier_config, tiny_encoder_config

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SUBPROCESS_TIMEOUT = 300  # a deadlocked multi-process run fails the test instead of hanging CI


def tiny_model(num_bands: int, num_classes: int, **encoder_args) -> dict:
    """The tiny classifier of these runs (feed-forward width 32, max_lr 0.01), as a config."""
    encoder = tiny_encoder_config(num_bands, dim_feedforward=32, **encoder_args)
    return tiny_classifier_config(num_classes, encoder, max_lr=0.01)


def run_config(path: Path, data: dict, model: dict, max_epochs: int = 3) -> Path:
    """A run config as the configs/ ones: seed, best.ckpt and last.ckpt (LastCheckpoint) every epoch."""
    checkpoints = [
        {
            "class_path": "ModelCheckpoint",
            "init_args": {"monitor": "val/overall_accuracy", "mode": "max", "filename": "best"},
        },
        {"class_path": "cmap.ml.fault_tolerance.LastCheckpoint"},
    ]
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": max_epochs, "log_every_n_steps": 1, "deterministic": True, "callbacks": checkpoints},
        "model": model,
        "data": data,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def synthetic_data(augment: bool = True, batch_size: int = 16) -> dict:
    # 160 series, 20 % held out: 128 training series (a multiple of every global batch used here),
    # 32 validation and 64 test series (even: two processes get equal halves, no padding).
    init_args = {"class_names": ["a", "b", "c"], "num_bands": 2, "num_dates": 12, "num_train": 160, "num_test": 64}
    init_args |= {"val_fraction": 0.2, "batch_size": batch_size}
    if augment:  # random draws in every step, which an exact resumption must replay
        init_args["augmentation"] = {"date_dropout": 0.1, "band_noise": 0.05}
    return {"class_path": "cmap.data.SyntheticSITS", "init_args": init_args}


def fit(config: Path, root: Path, *extra: str) -> CMapCLI:
    return CMapCLI(args=["fit", "--config", str(config), "--trainer.default_root_dir", str(root), *QUIET, *extra])


def cmap_subprocess(*args: str, **kwargs) -> subprocess.Popen:
    """``cmap`` in a child process, run from the repository (so ``tests.test_reliability`` imports)."""
    # Same number of threads as this process, so float reductions (and results) are the same.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "cmap.cli", *args, *QUIET],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


class PauseAt(L.Callback):
    """Test helper for ``cmap`` subprocesses: at one training batch, write ``marker`` and wait to be signalled.

    The test then sends SIGKILL or SIGTERM at a known point of the run. SIGTERM ends the wait
    (Lightning's handler sets ``received_sigterm``); SIGKILL ends the process.
    """

    def __init__(self, epoch: int, batch: int, marker: str) -> None:
        self.epoch, self.batch, self.marker = epoch, batch, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) != (self.epoch, self.batch):
            return
        self.marker.write_text(str(trainer.global_step))
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while not trainer.received_sigterm:
            if time.monotonic() > deadline:
                raise RuntimeError("PauseAt: no signal came")
            time.sleep(0.05)


def pause_at(epoch: int, batch: int, marker: Path) -> str:
    callback = {
        "class_path": "tests.test_reliability.PauseAt",
        "init_args": {"epoch": epoch, "batch": batch, "marker": str(marker)},
    }
    return "--trainer.callbacks+=" + json.dumps(callback)


def interrupted_fit(config: Path, root: Path, epoch: int, batch: int, signum: int) -> tuple[int, str]:
    """``cmap fit`` in a child process, paused at ``batch`` of ``epoch``, then sent ``signum``; the
    child's exit status and stderr."""
    marker = root / "paused"
    process = cmap_subprocess(
        "fit", "--config", str(config), "--trainer.default_root_dir", str(root), pause_at(epoch, batch, marker)
    )
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run never reached the pause point:\n{process.communicate()[1][-3000:]}")
        time.sleep(0.1)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    return process.returncode, stderr


def final_state(cli: CMapCLI) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Metrics of the run's last stage (the test after fit) and the final weights."""
    metrics = {key: float(value) for key, value in cli.trainer.callback_metrics.items()}
    return metrics, {key: value.clone() for key, value in cli.model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Reproducibility and interruptions
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interruption_config(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("config")
    return run_config(folder / "run.yaml", synthetic_data(), tiny_model(2, 3))


@pytest.fixture(scope="module")
def uninterrupted(interruption_config, tmp_path_factory) -> tuple[dict, dict, int]:
    """Three epochs of 8 steps, then the test: the reference of the interruption tests."""
    cli = fit(interruption_config, tmp_path_factory.mktemp("uninterrupted"), "--test_after_fit", "true")
    return *final_state(cli), cli.trainer.global_step


@pytest.fixture(scope="module")
def trained_checkpoint(interruption_config, tmp_path_factory) -> Path:
    """``last.ckpt`` of a short run of the interruption config (2 bands, 3 classes, one layer)."""
    root = tmp_path_factory.mktemp("trained")
    fit(interruption_config, root, "--trainer.max_epochs", "1")
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def test_seed_and_deterministic_mode_give_identical_runs(interruption_config, uninterrupted, tmp_path):
    metrics, weights, steps = uninterrupted
    again = fit(interruption_config, tmp_path, "--test_after_fit", "true")
    again_metrics, again_weights = final_state(again)
    assert steps == again.trainer.global_step == 24
    assert {"test/loss", "test/overall_accuracy", "test/macro_f1", "test/kappa"} <= metrics.keys()
    assert again_metrics == metrics
    for key, value in weights.items():
        assert torch.equal(again_weights[key], value), key


def test_sigkill_mid_epoch_resumes_from_last_checkpoint_to_the_same_end(interruption_config, uninterrupted, tmp_path):
    status, _ = interrupted_fit(interruption_config, tmp_path, epoch=1, batch=3, signum=signal.SIGKILL)
    assert status == -signal.SIGKILL
    # What the kill left: the end of epoch 0, complete (Lightning writes checkpoints atomically).
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    for path in checkpoints.iterdir():
        assert torch.load(path, weights_only=True)["global_step"] == 8
    # `--ckpt_path last` finds it in the killed run's folder (the new run opens version_1).
    resumed = fit(interruption_config, tmp_path, "--ckpt_path", "last", "--test_after_fit", "true")
    assert Path(resumed.config_init.fit.ckpt_path) == checkpoints / "last.ckpt"
    metrics, weights, steps = uninterrupted
    resumed_metrics, resumed_weights = final_state(resumed)
    assert resumed.trainer.global_step == steps
    # Same batches, dropout masks and augmentations (random state restored): the same end, to
    # float precision (the killed process and this one run the same operations).
    assert resumed_metrics.keys() == metrics.keys()
    for key, value in metrics.items():
        assert resumed_metrics[key] == pytest.approx(value, abs=1e-6), key
    for key, value in weights.items():
        torch.testing.assert_close(resumed_weights[key], value, rtol=0, atol=1e-6, msg=key)


def test_sigterm_saves_a_checkpoint_and_exits_143_then_resumes(interruption_config, tmp_path):
    status, stderr = interrupted_fit(interruption_config, tmp_path, epoch=1, batch=2, signum=signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, stderr[-3000:]
    saved = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / INTERRUPTED
    assert f"SIGTERM: saved {saved}" in stderr
    # The batch under way when the signal came is finished, then the state is saved: 8 + 3 steps.
    assert torch.load(saved, weights_only=True)["global_step"] == 11
    resumed = fit(interruption_config, tmp_path, "--ckpt_path", "last")
    assert Path(resumed.config_init.fit.ckpt_path) == saved
    # Lightning finishes the interrupted epoch with its remaining 5 batches (drawn afresh) and warns.
    assert resumed.trainer.current_epoch == 3 and resumed.trainer.global_step == 24


# ---------------------------------------------------------------------------------------------
# Multi-process training (Lightning DDP, 2 CPU processes, gloo)
# ---------------------------------------------------------------------------------------------


def events(root: Path) -> EventAccumulator:
    (run,) = (root / "lightning_logs").iterdir()  # one run folder, whatever the number of processes
    accumulator = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> dict[int, EventAccumulator]:
    """The same training on 1 and on 2 processes, global batch 32, run side by side.

    Both use the DDP strategy, so both draw samples with Lightning's DistributedSampler (seeded by
    seed and epoch): the 2 processes' batches of 16 are, together, the single process's batch of
    32. No dropout and no augmentation: nothing else random differs between the two.
    """
    folder = tmp_path_factory.mktemp("ddp")
    runs = {}
    for processes in (1, 2):
        config = run_config(
            folder / f"{processes}.yaml", synthetic_data(augment=False, batch_size=32 // processes),
            tiny_model(2, 3, dropout=0.0), max_epochs=2,
        )  # fmt: skip
        runs[processes] = cmap_subprocess(
            "fit", "--config", str(config), "--trainer.default_root_dir", str(folder / str(processes)),
            "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", str(processes),
            "--test_after_fit", "true",
        )  # fmt: skip
    for processes, process in runs.items():
        _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert process.returncode == 0, f"{processes} process(es):\n{stderr[-3000:]}"
    return {processes: events(folder / str(processes)) for processes in runs}


def test_two_processes_match_one_and_log_once(ddp_runs):
    one, two = ddp_runs[1], ddp_runs[2]
    tags = one.Tags()
    assert two.Tags()["scalars"] == tags["scalars"] and two.Tags()["images"] == tags["images"]
    # Figures are made once (rank 0): as many as on one process, at the same epochs.
    for tag in ("confusion_matrix/val", "confusion_matrix/test", "attention/layer_0", "class_distribution/train_val"):
        assert [event.step for event in two.Images(tag)] == [event.step for event in one.Images(tag)], tag
    epoch_ends = [event.step for event in two.Scalars("val/overall_accuracy")]
    assert [event.step for event in two.Images("confusion_matrix/val")] == epoch_ends and len(epoch_ends) == 2
    # Metrics are of the whole split (synchronised across processes), so they match the single
    # process up to float summation order: same global batches and gradients to ~1e-7 relative,
    # 8 optimiser steps, hence weights and metrics within 1e-4.
    for tag in tags["scalars"]:
        if tag.startswith(("val/", "test/", "train/")):
            values = [event.value for event in one.Scalars(tag)]
            assert [event.value for event in two.Scalars(tag)] == pytest.approx(values, abs=1e-4), tag


# ---------------------------------------------------------------------------------------------
# Bad input: repaired as documented, or an error naming the file or key and what was expected
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ucr_sample(ucr_root) -> PixelSeries:
    """Five real UCR Crop training series per class (120 series, 46 dates, NDVI)."""
    series = read_ucr_crop(ucr_root / "Crop_TRAIN.tsv")
    return series.subset(np.concatenate([np.flatnonzero(series.labels == label)[:5] for label in range(24)]))


def sample_store(folder: Path, sample: PixelSeries) -> Path:
    return write_store(folder, sample, ["ndvi"], list(UCR_CROP_CLASSES))


def patch(store: Path, name: str, change) -> None:
    """Rewrite ``<store>/<name>.npy`` after ``change(array)``: a store damaged or written by another tool."""
    array = np.load(store / f"{name}.npy")
    change(array)
    np.save(store / f"{name}.npy", array)


def store_config(tmp_path: Path, sample: PixelSeries, **model_args) -> Path:
    """A one-epoch run on a store of the sample (``tmp_path/train``), tested on the same series."""
    train = sample_store(tmp_path / "train", sample)
    data = {
        "class_path": "cmap.data.SeriesStore",
        "init_args": {"path": str(train), "test_path": str(train), "batch_size": 32},
    }
    return run_config(tmp_path / "run.yaml", data, tiny_model(1, 24, **model_args), max_epochs=1)


def whole_split(data: SeriesStore, split: str) -> dict[str, torch.Tensor]:
    dataset = data.datasets[split]
    return dataset.__getitems__(list(range(len(dataset))))


def nan_dates(values):
    values[0, 5:10] = np.nan
    values[1, 3] = np.nan


def inf_dates(values):
    values[0, 5:10] = np.inf
    values[1, 3] = -np.inf


def reverse_dates(days, values):
    days[:7] = days[:7, ::-1].copy()
    values[:7] = values[:7, ::-1].copy()


REPAIRS = {
    # case: (array changes on the store, array changes giving what the batches must equal)
    "nan_values_are_masked_dates": ({"values": nan_dates}, {"values": nan_dates}),
    "inf_values_are_masked_like_nan": ({"values": inf_dates}, {"values": nan_dates}),
    "dates_out_of_order_are_sorted": ({"days+values": reverse_dates}, {}),
    "duplicate_dates_are_kept": ({"days": lambda days: days.__setitem__((0, 1), days[0, 0])}, None),
}


@pytest.mark.parametrize("case", REPAIRS, ids=list(REPAIRS))
def test_repaired_input(case, ucr_sample, tmp_path):
    changes, expected_changes = REPAIRS[case]
    config = store_config(tmp_path, ucr_sample)
    stores = {"given": tmp_path / "train", "expected": sample_store(tmp_path / "expected", ucr_sample)}
    for store, store_changes in ((stores["given"], changes), (stores["expected"], expected_changes or {})):
        for names, change in store_changes.items():
            if names == "days+values":
                days, values = np.load(store / "days.npy"), np.load(store / "values.npy")
                change(days, values)
                np.save(store / "days.npy", days), np.save(store / "values.npy", values)
            else:
                patch(store, names, change)
    modules = {name: SeriesStore(str(path), test_path=str(path)) for name, path in stores.items()}
    for module in modules.values():
        module.setup("test")
    batch = whole_split(modules["given"], "test")
    assert torch.isfinite(batch["values"]).all() and (batch["values"][~batch["mask"]] == 0).all()
    if expected_changes is None:  # two valid dates on one day: both kept, nothing reordered
        assert batch["mask"][0, :2].all() and batch["days"][0, 0] == batch["days"][0, 1]
    else:
        expected = whole_split(modules["expected"], "test")
        for key in ("values", "days", "mask", "label"):
            assert torch.equal(batch[key], expected[key]), key
    if case.startswith("nan"):
        assert not batch["mask"][0, 5:10].any() and not batch["mask"][1, 3] and batch["mask"][2:].all()
    # And a model trains on it, end to end through the command.
    cli = fit(config, tmp_path / "runs", "--test_after_fit", "true")
    assert np.isfinite(float(cli.trainer.callback_metrics["test/loss"]))


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def corrupt_store_file(name: str, damage):
    def make(tmp_path, sample, checkpoint):
        store = sample_store(tmp_path / "train", sample)
        damage(store / name)
        return lambda: SeriesStore(str(store), test_path=str(store)).setup("fit")

    return make


def store_patched(name: str, change):
    def make(tmp_path, sample, checkpoint):
        config = store_config(tmp_path, sample)
        patch(tmp_path / "train", name, change)
        return lambda: fit(config, tmp_path / "runs")

    return make


def store_run(*args: str, **model_args):
    def make(tmp_path, sample, checkpoint):
        config = store_config(tmp_path, sample, **model_args)
        return lambda: fit(config, tmp_path / "runs", *args)

    return make


def sample_of(size: int, label_change=None):
    def make(tmp_path, sample, checkpoint):
        subset = sample.subset(np.arange(size))
        if label_change is not None:
            label_change(subset.labels)
        return lambda: SeriesStore(
            str(sample_store(tmp_path / "train", subset)), test_path=str(tmp_path / "train")
        ).setup("fit")

    return make


def empty_test_store(tmp_path, sample, checkpoint):
    train = sample_store(tmp_path / "train", sample)
    test = sample_store(tmp_path / "test", sample.subset(np.arange(0)))
    return lambda: SeriesStore(str(train), test_path=str(test)).setup("test")


def table(last_row: str):
    """A small table for ``python -m cmap.data convert table``, ending with ``last_row``."""

    def make(tmp_path, sample, checkpoint):
        path = tmp_path / "samples.csv"
        path.write_text(f"sample_id,date,B4,label\ns1,2020-01-01,0.1,maize\ns2,2020-01-05,0.3,wheat\n{last_row}\n")
        return lambda: convert_main(["convert", "table", str(path), str(tmp_path / "store"), "--bands", "B4"])

    return make


def ucr_file(damage):
    def make(tmp_path, sample, checkpoint):
        lines = (SHARED_DATA / "ucr_crop_formosat2" / "Crop_TRAIN.tsv").read_text().splitlines()
        (tmp_path / "Crop_TRAIN.tsv").write_text(damage("\n".join(lines[:10])))
        return lambda: UCRCrop(root=str(tmp_path)).setup("fit")

    return make


def other_architecture(how: str):
    def make(tmp_path, sample, checkpoint):
        config = tmp_path / "run.yaml"
        config.write_text(checkpoint.parent.parent.joinpath("config.yaml").read_text())
        two_layers = ["--model.init_args.encoder.init_args.n_att_layers", "2"]
        if how == "resume":  # --ckpt_path last, with a config changed since the checkpoint was written
            folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
            folder.mkdir(parents=True)
            (folder / "last.ckpt").write_bytes(checkpoint.read_bytes())
            return lambda: fit(config, tmp_path, "--ckpt_path", "last", *two_layers)
        if how == "encoder":
            return lambda: fit(config, tmp_path, "--model.init_args.init_encoder_from", str(checkpoint), *two_layers)
        truncated = tmp_path / "truncated.ckpt"
        truncated.write_bytes(checkpoint.read_bytes()[:5000])
        return lambda: fit(config, tmp_path, "--ckpt_path", str(truncated))

    return make


def typo(*args: str, yaml_change=None):
    def make(tmp_path, sample, checkpoint):
        config = store_config(tmp_path, sample)
        if yaml_change is not None:
            config.write_text(config.read_text().replace(*yaml_change))
        return lambda: fit(config, tmp_path / "runs", *args)

    return make


MAIS_MISSPELT = json.dumps({"mias" if name == "mais" else name: 1.0 for name in UCR_CROP_CLASSES})

BAD_INPUTS = {
    # case: (make(tmp_path, ucr_sample, checkpoint) -> action, exception, message (regex))
    "all_nan_series_in_store": (
        store_patched("values", lambda values: values.__setitem__(7, np.nan)),
        ValueError,
        r"train: 1 series have no valid date \(every date has a NaN or infinite band value\), first at sample index 7",
    ),
    "all_nan_series_in_table": (
        table("s3,2020-01-05,,wheat"),
        ValueError,
        r"samples.csv: 1 series have no valid date .* first at sample index 2",
    ),
    "two_rows_for_one_date_in_table": (
        table("s2,2020-01-05,0.4,wheat"),
        ValueError,
        r"samples.csv: sample 's2' has two rows for the same date",
    ),
    "band_count_differs_from_the_model": (
        store_run("--model.init_args.encoder.init_args.bands_encoder.init_args.sizes", "[4, 16]"),
        ValueError,
        r"the encoder expects 4 bands per date \(bands_encoder sizes\[0\]\) but SeriesStore provides 1: \['ndvi'\]",
    ),
    "class_count_differs_from_the_model": (
        store_run("--model.init_args.decoder.init_args.num_classes", "7"),
        ValueError,
        r"the decoder has num_classes=7 outputs but the data has 24 classes: \['mais', 'ble',",
    ),
    "days_past_max_len": (
        store_run(max_len=300),
        ValueError,
        r"day offsets must lie in \[0, max_len=300\), got \[0, 360\]: raise PositionalEncoding.max_len",
    ),
    "days_before_the_reference_date": (
        store_patched("days", lambda days: days.__setitem__((4, 0), -5)),
        ValueError,
        r"day offsets must lie in \[0, max_len=1000\), got \[-5, 360\]",
    ),
    "unknown_class_in_classes_weights": (
        store_run("--model.init_args.classes_weights", MAIS_MISSPELT),
        ValueError,
        r"classes_weights: unknown class names \['mias'\]; no weight for classes \['mais'\]",
    ),
    "label_outside_the_class_list_in_store": (
        store_patched("labels", lambda labels: labels.__setitem__(3, 30)),
        ValueError,
        r"train/labels.npy: row 3 holds label 30, expected -1 \(unlabelled\) or a class index in \[0, 24\)",
    ),
    "label_outside_the_class_list_when_writing": (
        sample_of(10, lambda labels: labels.__setitem__(3, 30)),
        ValueError,
        r"Crop_TRAIN.tsv: label index 30 is not in the 24 classes",
    ),
    "unlabelled_training_series": (
        sample_of(48, lambda labels: labels.__setitem__(3, -1)),
        ValueError,
        r"train: label index -1 is outside the 24 classes",
    ),
    "empty_training_store": (sample_of(0), ValueError, r"train: no training series"),
    "validation_split_empty": (
        sample_of(1),
        ValueError,
        r"train: the validation split is empty \(val_fraction=0.1\): 1 series, and a class's last series",
    ),
    "empty_test_store": (empty_test_store, ValueError, r"test: the test split is empty"),
    "truncated_values_file": (
        corrupt_store_file("values.npy", truncate),
        ValueError,
        r"values.npy: unreadable \(truncated: \d+ bytes, expected \d+\)",
    ),
    "array_shape_differs_from_metadata": (
        corrupt_store_file("labels.npy", lambda path: np.save(path, np.zeros(119, np.int64))),
        ValueError,
        r"labels.npy: shape \(119,\) dtype int64, expected \(120,\) int64 \(from metadata.json\)",
    ),
    "truncated_labels_file": (corrupt_store_file("labels.npy", truncate), ValueError, r"labels.npy: unreadable"),
    "corrupt_metadata": (corrupt_store_file("metadata.json", truncate), ValueError, r"metadata.json: not valid JSON"),
    "missing_days_file": (
        corrupt_store_file("days.npy", Path.unlink),
        FileNotFoundError,
        r"days.npy: missing from the store",
    ),
    "truncated_ucr_file": (
        ucr_file(lambda text: text[:-100]),
        ValueError,
        r"Crop_TRAIN.tsv: row 9 has missing values, expected 1 label \+ 46 NDVI values",
    ),
    "text_in_ucr_file": (
        ucr_file(lambda text: text.replace("\t", "\tx", 1)),
        ValueError,
        r"Crop_TRAIN.tsv: not a UCR Crop file of numbers",
    ),
    "truncated_checkpoint": (other_architecture("truncated"), ValueError, r"truncated.ckpt: not a readable checkpoint"),
    "resumed_checkpoint_of_another_architecture": (
        other_architecture("resume"),
        ValueError,
        r"last.ckpt: weights do not fit the configured Classifier: missing encoder.transformer.layers.1.",
    ),
    "encoder_weights_of_another_architecture": (
        other_architecture("encoder"),
        ValueError,
        r"last.ckpt: encoder weights do not fit the configured encoder: missing transformer.layers.1.",
    ),
    "typo_in_a_trainer_option": (
        typo("--trainer.max_epohcs", "2"),
        SystemExit,
        r"unrecognized arguments: --trainer.max_epohcs",
    ),
    "typo_in_a_model_key": (
        typo(yaml_change=("n_att_layers", "n_att_layer")),
        SystemExit,
        r"TransformerEncoder'?:\s+Option 'n_att_layer' is not accepted",
    ),
    "typo_in_a_data_key": (
        typo("--data.init_args.batchsize", "8"),
        SystemExit,
        r"SeriesStore'?:\s+Option 'batchsize' is not accepted",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_naming_file_or_key(case, ucr_sample, trained_checkpoint, tmp_path, capsys):
    make, exception, message = BAD_INPUTS[case]
    action = make(tmp_path, ucr_sample, trained_checkpoint)
    checkpoints_before = set(tmp_path.rglob("*.ckpt"))
    with pytest.raises(exception) as caught:
        action()
    text = capsys.readouterr().err if exception is SystemExit else str(caught.value)
    assert re.search(message, text), text[-2000:]
    # Nothing that looks like a result is left behind: no new checkpoint, no store.
    assert set(tmp_path.rglob("*.ckpt")) == checkpoints_before
    assert not (tmp_path / "store").exists()


def test_checkpoint_of_another_architecture_given_by_path_rebuilds_its_model(trained_checkpoint, tmp_path):
    """LightningCLI builds the model from a ``--ckpt_path`` file's hyper-parameters; cmap names what they replace."""
    config = tmp_path / "run.yaml"
    config.write_text(trained_checkpoint.parent.parent.joinpath("config.yaml").read_text())
    with pytest.warns(
        UserWarning, match=r"last.ckpt: .* replace the configured model.init_args.encoder.init_args.n_att_layers$"
    ):
        cli = CMapCLI(
            args=["test", "--config", str(config), "--model.init_args.encoder.init_args.n_att_layers", "2",
                  "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(trained_checkpoint), *QUIET]
        )  # fmt: skip
    assert len(cli.model.encoder.transformer.layers) == 1


def test_failed_store_write_leaves_nothing(ucr_sample, tmp_path, monkeypatch):
    saved = []

    def failing_save(path, array):  # the disk fills up at the second array
        if saved:
            raise OSError("No space left on device")
        saved.append(path)
        with open(path, "wb") as file:
            np.lib.format.write_array(file, array)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        sample_store(tmp_path / "store", ucr_sample)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    series, _ = open_store(sample_store(tmp_path / "store", ucr_sample))
    assert len(series) == len(ucr_sample)
