"""Every shipped config (``configs/``), shortened, survives a SIGKILL: ``--ckpt_path last`` resumes it
to the weights of an uninterrupted run.

Each config runs as written (its model, its checkpoint callbacks, its other callbacks and options)
on a small synthetic store shaped as its data (bands, classes, dates), for two epochs of a few
steps (``--trainer.max_steps 20``), deterministic, on the CPU. Three ``cmap fit`` runs per config:
uninterrupted; killed (SIGKILL from inside, at the second batch of epoch 1); resumed with
``--ckpt_path last``. Both complete runs end with ``last.ckpt`` (LastCheckpoint saves when training
ends), whose weights must be equal. The runs are forked children of the test process, so torch and
Lightning are imported once (a child costs its run only).
"""

import copy
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch.utils.tensorboard import SummaryWriter

from cmap.data import PixelSeries, write_store
from cmap.data.synthetic import synthetic_series
from cmap.ml.budget import one_cycle_schedule
from cmap.ml.callbacks import ConfusionMatrixLogger

from .conftest import CONFIGS, tiny_classifier_config, tiny_encoder_config

pytestmark = pytest.mark.slow

RUN_CONFIGS = sorted(path for path in CONFIGS.glob("*.yaml") if "trainer" in yaml.safe_load(path.read_text()))
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
QUIET += ["--attention_maps.first_epoch", "1000", "--embeddings.first_epoch", "1000"]
CHILD_TIMEOUT = 120  # seconds: a run that hangs fails the test


class KillAt(L.Callback):
    """Test helper: SIGKILL this process at batch ``batch`` of epoch ``epoch`` (as a lost node would)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGKILL)


def run_in_child(args: list[str]) -> int:
    """``cmap <args>`` in a forked child; its exit status (negative: the signal that ended it)."""
    from cmap.cli import main

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            main(args)
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            traceback.print_exc()
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def shape_of(config: dict) -> tuple[int, int, int]:
    """Bands, classes and dates that the config's model expects (where it states them)."""
    model = config.get("model", {}).get("init_args", {})
    encoder = model.get("encoder", {}).get("init_args", {})
    decoder = model.get("decoder", {}).get("init_args", {})
    sizes = encoder.get("bands_encoder", {}).get("init_args", {}).get("sizes", [None])
    return sizes[0] or 2, decoder.get("num_classes") or 3, decoder.get("num_dates") or 12


def synthetic_stores(folder: Path, bands: int, classes: int, dates: int) -> dict[str, str]:
    """Train, test and unlabelled stores of the given shape, every class present: at least 64 training series
    (two batches an epoch after the validation share, whatever batches the config's TrainingBudget picks)."""
    names = [f"c{index}" for index in range(classes)]
    band_names = [f"b{index + 1}" for index in range(bands)]
    paths = {}
    for name, seed, size in (("path", 0, max(64, 3 * classes)), ("test_path", 1, 2 * classes), ("unlabelled", 2, 64)):
        series = synthetic_series(size, dates, bands, classes, cloud_fraction=0.2, seed=seed)
        labels = np.arange(size) % classes if name != "unlabelled" else None
        series = PixelSeries(series.values, series.days, labels, "synthetic")
        write_store(folder / name, series, band_names, names if labels is not None else [])
        paths[name] = str(folder / name)
    return paths


def shortened(source: Path, folder: Path) -> Path:
    """``source`` with synthetic stores as its data, on the CPU, deterministic; callbacks kept."""
    config = yaml.safe_load(source.read_text())
    bands, classes, dates = shape_of(config)
    stores = synthetic_stores(folder / "stores", bands, classes, dates)
    data = copy.deepcopy(config.get("data", {"init_args": {}}))
    kept = ("augmentation", "fold", "num_folds")
    options = {key: value for key, value in data.get("init_args", {}).items() if key in kept}
    options |= {"path": stores["path"], "batch_size": 16, "val_fraction": 0.2}
    if "fold" not in options:  # cross-validation configs test on a fold of the store
        options["test_path"] = stores["test_path"]
    consistency = config.get("model", {}).get("init_args", {}).get("consistency")
    if consistency or "unlabelled" in data.get("init_args", {}):  # few labels and unlabelled batches
        labels = max(4, -(-48 // classes))  # at least 48 labelled series: several batches an epoch
        options |= {"unlabelled": stores["unlabelled"], "labels_per_class": labels, "batch_size": 8}
    config["data"] = {"class_path": "cmap.data.SeriesStore", "init_args": options}
    if "model" not in config:  # a trainer-only config (seed_gpu.yaml): a small model of the data's shape
        config["model"] = tiny_classifier_config(classes, tiny_encoder_config(bands))
    trainer = config["trainer"]
    trainer.update(max_epochs=2, deterministic=True, default_root_dir=str(folder / "runs"))
    trainer.pop("max_steps", None)
    if trainer.get("accelerator") == "gpu":  # the GPU config's checkpoints, tested on the CPU
        trainer.update(accelerator="cpu", precision="32-true")
    for callback in trainer.get("callbacks", []):
        if callback["class_path"].endswith("CompileModel"):
            callback["init_args"] = {"backend": "eager"}  # the same wrapping, without Inductor's minutes
    path = folder / source.name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    """The weights of the newest run's ``last.ckpt`` (saved when its training ended)."""
    runs = sorted((root / "lightning_logs").glob("version_*"), key=lambda path: int(path.name.split("_")[1]))
    checkpoint = torch.load(runs[-1] / "checkpoints" / "last.ckpt", weights_only=True)
    return checkpoint["state_dict"], checkpoint["global_step"]


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch) -> None:
    # TensorBoard figures (confusion matrices, class counts, attention maps) are built and drawn by
    # matplotlib, about a second each, and have nothing to do with checkpoints: the children (forks)
    # skip them (the attention maps and projector by their options, QUIET).
    monkeypatch.setattr(SummaryWriter, "add_figure", lambda *args, **kwargs: None)
    monkeypatch.setattr(ConfusionMatrixLogger, "on_validation_epoch_end", lambda *args, **kwargs: None)


@pytest.mark.parametrize("source", RUN_CONFIGS, ids=[path.stem for path in RUN_CONFIGS])
def test_a_killed_run_of_the_config_resumes_to_the_uninterrupted_weights(source, tmp_path):
    config = shortened(source, tmp_path)
    fit = ["fit", "--config", str(config), *QUIET, "--trainer.max_steps", "20"]
    reference, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    assert run_in_child([*fit, "--trainer.default_root_dir", str(reference)]) == 0
    kill = {"class_path": "tests.test_resume_configs.KillAt", "init_args": {"epoch": 1, "batch": 1}}
    kill = f"--trainer.callbacks+={json.dumps(kill)}"
    assert run_in_child([*fit, "--trainer.default_root_dir", str(killed), kill]) == -signal.SIGKILL
    left = torch.load(killed / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert left["epoch"] == 0 and left["global_step"] > 0  # the end of epoch 0, before the kill
    assert run_in_child([*fit, "--trainer.default_root_dir", str(killed), "--ckpt_path", "last"]) == 0
    (expected, expected_steps), (resumed, resumed_steps) = final_weights(reference), final_weights(killed)
    assert resumed_steps == expected_steps > left["global_step"]
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():
        assert torch.equal(resumed[key], value), key


def test_within_long_epochs_last_ckpt_follows_every_n_train_steps_and_resumes(tmp_path):
    config = shortened(CONFIGS / "default.yaml", tmp_path)  # 6 steps an epoch (the budget's batches of 8)
    settings = yaml.safe_load(config.read_text())
    (last,) = [c for c in settings["trainer"]["callbacks"] if c["class_path"].endswith("LastCheckpoint")]
    last["init_args"] = {"every_n_train_steps": 2}
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    fit = [
        "fit",
        "--config",
        str(config),
        *QUIET,
        "--trainer.max_steps",
        "14",
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    kill = {"class_path": "tests.test_resume_configs.KillAt", "init_args": {"epoch": 1, "batch": 4}}
    assert run_in_child([*fit, f"--trainer.callbacks+={json.dumps(kill)}"]) == -signal.SIGKILL
    # Saved at the end of epoch 0 (step 6), then at steps 8 and 10 within epoch 1: the kill came at step 10.
    left = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert (left["epoch"], left["global_step"]) == (1, 10)
    assert run_in_child([*fit, "--ckpt_path", "last"]) == 0
    assert final_weights(tmp_path)[1] == 14


# ---------------------------------------------------------------------------------------------
# Extending a finished run, a run with nothing to train, the printed next step
# ---------------------------------------------------------------------------------------------


def test_a_finished_run_extended_with_more_steps_continues_its_schedule_re_spanned(tmp_path):
    config = shortened(CONFIGS / "default.yaml", tmp_path)
    fit = ["fit", "--config", str(config), *QUIET, "--trainer.default_root_dir", str(tmp_path / "run")]
    assert run_in_child([*fit, "--trainer.max_steps", "8"]) == 0
    # Was: ValueError "Tried to step 9 times" (the restored 8-step one-cycle schedule), a 76-line traceback.
    assert run_in_child([*fit, "--trainer.max_steps", "12", "--ckpt_path", "last"]) == 0
    checkpoint = torch.load(
        tmp_path / "run/lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True
    )  # fmt: skip
    schedule = checkpoint["lr_schedulers"][0]
    assert checkpoint["global_step"] == 12 and schedule["total_steps"] == 12 and schedule["last_epoch"] == 12
    # The LR of a run configured for 12 steps from the start, at its end.
    model = checkpoint["hyper_parameters"]
    max_lrs = [group["max_lr"] for group in checkpoint["optimizer_states"][0]["param_groups"]]
    optimizer = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in max_lrs])
    trainer = SimpleNamespace(estimated_stepping_batches=12, max_epochs=1, max_steps=12, num_training_batches=8)
    fresh = one_cycle_schedule(optimizer, max_lrs, model["min_lr"], model["max_lr"], trainer, 0.1)
    for _ in range(12):
        optimizer.step()
        fresh.step()
    assert schedule["_last_lr"] == pytest.approx(fresh.get_last_lr(), rel=1e-12)


@pytest.mark.parametrize("option", ["--trainer.max_epochs", "--trainer.max_steps"])
@pytest.mark.parametrize("recipe", ["default", "seed"])
def test_a_fit_with_nothing_to_train_is_one_line_saying_so(recipe, option, seed_config, tmp_path, capfd):
    # Was: the default recipe's budget raised max_epochs 0 to 1 and trained 2,002 steps; the seed
    # model printed its untrained metrics as "cmap fit finished".
    if recipe == "default":
        config = ["--config", str(shortened(CONFIGS / "default.yaml", tmp_path))]
    else:
        config = ["--model", str(seed_config), "--data", str(CONFIGS / "seed_data_synthetic.yaml")]
    root = tmp_path / "run"
    status = run_in_child(["fit", *config, *QUIET, option, "0", "--trainer.default_root_dir", str(root)])
    errors = capfd.readouterr().err
    assert status == 1
    assert "Traceback" not in errors and "cmap fit finished" not in errors
    (line,) = [line for line in errors.splitlines() if line.startswith("cmap fit: error:")]
    assert f"nothing to train ({option[2:]} 0: 0 optimizer steps)" in line and "max_epochs >= 1" in line
    assert not list(root.rglob("*.ckpt"))


def test_the_printed_next_step_is_the_runs_own_config_and_it_works(tmp_path, capfd):
    # The README's own-data recipe: the model config and the data config given apart.
    config = yaml.safe_load(shortened(CONFIGS / "default.yaml", tmp_path).read_text())
    data = tmp_path / "my_data.yaml"
    data.write_text(yaml.safe_dump(config.pop("data")))
    (tmp_path / "default.yaml").write_text(yaml.safe_dump(config))
    fit = ["fit", "--config", str(tmp_path / "default.yaml"), "--data", str(data), *QUIET]
    assert run_in_child([*fit, "--trainer.max_steps", "4", "--trainer.default_root_dir", str(tmp_path / "run")]) == 0
    (line,) = [line for line in capfd.readouterr().out.splitlines() if "next         cmap test" in line]
    run = tmp_path / "run/lightning_logs/version_0"
    assert (
        line.split("next         ")[1]
        == f"cmap test --config {run / 'config.yaml'} --ckpt_path {run}/checkpoints/last.ckpt"
    )
    # Was: `cmap test --config .../default.yaml`, which drops --data (`Classifier needs class_names`).
    assert run_in_child([*line.split("next         cmap ")[1].split(), *QUIET]) == 0
    assert "test/overall_accuracy" in capfd.readouterr().out
