"""Shared fixtures and helpers: paths to ../shared, one tiny model (as a config or as objects), small
synthetic data, a quiet trainer.

Helpers that take arguments are plain functions, imported as ``from .conftest import ...``.
"""

import os

# scripts/test.sh runs the suite on one pytest-xdist worker per core: each worker computes on one
# thread (torch, OpenMP, BLAS), set before torch and numpy start their thread pools, else the
# workers' threads outnumber the cores and every test slows down. Processes the tests start inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "1"))

import importlib
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SEED_CONFIG = REPO.parent / "shared" / "seed" / "classifier.yaml"
CONFIGS = REPO / "configs"
CLASSES = ["other", "mais", "colza"]


def require(path: Path) -> Path:
    """``path`` from ../shared; skipped with a reason where it is absent, but never in CI."""
    if not path.exists():
        message = f"{path} is absent: real-data tests need the project's ../shared folder"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def ucr_root() -> Path:
    return require(SHARED_DATA / "ucr_crop_formosat2")


@pytest.fixture
def seed_config() -> Path:
    return require(SEED_CONFIG)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# The tiny model: one description, as the config tree ``cmap`` reads or as objects
# ---------------------------------------------------------------------------------------------


def tiny_encoder_config(
    num_bands: int = 4,
    d_model: int = 16,
    heads: int = 2,
    layers: int = 1,
    dropout: float = 0.1,
    dim_feedforward: int | None = None,
    tau: float = 1000,
    max_len: int = 1000,
    exchanger: bool = False,
) -> dict:
    """A small transformer encoder (``layers`` layers), or an Exchanger (``layers`` blocks, 4 group
    tokens), as a ``class_path`` / ``init_args`` config."""
    embeddings = {
        "position_encoder": {
            "class_path": "cmap.ml.embeddings.position.PositionalEncoding",
            "init_args": {"d_model": d_model, "tau": tau, "max_len": max_len},
        },
        "bands_encoder": {
            "class_path": "cmap.ml.embeddings.bands.PixelEncoding",
            "init_args": {"sizes": [num_bands, d_model]},
        },
    }
    if exchanger:
        class_path = "cmap.ml.encoders.ExchangerEncoder"
        layer_args = {"n_groups": 4, "n_att_head": heads, "n_blocks": layers}
    else:
        class_path = "cmap.ml.encoders.TransformerEncoder"
        layer_args = {"n_att_head": heads, "n_att_layers": layers, "dim_feedforward": dim_feedforward}
    return {
        "class_path": class_path,
        "init_args": {**embeddings, "d_model": d_model, **layer_args, "dropout_p": dropout},
    }


def tiny_classifier_config(num_classes: int, encoder: dict | None = None, **classifier_args) -> dict:
    """A Classifier config: ``encoder`` (default :func:`tiny_encoder_config`'s) and a ``num_classes``
    head of its width; ``classifier_args``: the Classifier's other arguments (``max_lr``, ...)."""
    encoder = encoder or tiny_encoder_config()
    decoder = {
        "class_path": "cmap.ml.decoders.MultiClassClassification",
        "init_args": {"hidden": encoder["init_args"]["d_model"], "num_classes": num_classes},
    }
    init_args = {"encoder": encoder, "decoder": decoder, **classifier_args}
    return {"class_path": "cmap.ml.classifiers.Classifier", "init_args": init_args}


def instantiate(config):
    """The object a ``class_path`` / ``init_args`` config describes, its arguments built first, in order."""
    if isinstance(config, dict) and "class_path" in config:
        module, _, name = config["class_path"].rpartition(".")
        arguments = {key: instantiate(value) for key, value in config.get("init_args", {}).items()}
        return getattr(importlib.import_module(module), name)(**arguments)
    return config


def tiny_encoder(num_bands: int = 4, **options) -> torch.nn.Module:
    """:func:`tiny_encoder_config`'s encoder."""
    return instantiate(tiny_encoder_config(num_bands, **options))


def tiny_classifier(num_classes: int, encoder: dict | None = None, **classifier_args) -> L.LightningModule:
    """:func:`tiny_classifier_config`'s Classifier."""
    return instantiate(tiny_classifier_config(num_classes, encoder, **classifier_args))


def fit_tiny_classifier(root: Path, data: dict, num_bands: int, num_classes: int, steps: int = 3) -> Path:
    """``cmap fit`` of the tiny classifier for ``steps`` steps; its last checkpoint.

    ``data``: the data module's config (``class_path`` and ``init_args``). The run's config is
    ``root/config.yaml``, so ``cmap predict --config`` can reuse it.
    """
    from cmap.cli import main as cmap_main

    root.mkdir(parents=True, exist_ok=True)
    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}
    config = {
        "trainer": {
            "max_steps": steps,
            "default_root_dir": str(root),
            "enable_progress_bar": False,
            "limit_val_batches": 1,
            "callbacks": [checkpoint],
        },
        "model": tiny_classifier_config(
            num_classes, tiny_encoder_config(num_bands, max_len=400, dim_feedforward=32), max_lr=0.001
        ),
        "data": data,
        "attention_maps": {"first_epoch": 1000},
        "embeddings": {"first_epoch": 1000},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmap_main(["fit", "--config", str(root / "config.yaml")])
    return next(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"))


# ---------------------------------------------------------------------------------------------
# Small data and a quiet trainer
# ---------------------------------------------------------------------------------------------


def synthetic_sits(num_bands: int = 4, class_names: list[str] = CLASSES) -> L.LightningDataModule:
    """A :class:`cmap.data.SyntheticSITS` of 128 training series of 12 dates, batches of 16."""
    from cmap.data import SyntheticSITS

    return SyntheticSITS(class_names=class_names, num_bands=num_bands, num_dates=12, num_train=128, batch_size=16)


def padded_batch(b: int = 32, t: int = 10, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Values (b, t, c) and mask (b, t): dates 7 and later are padding, date 2 of every third series a cloud."""
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[:, 7:] = False  # padding
    mask[::3, 2] = False  # a cloud
    return torch.randn(b, t, c), mask


def quiet_trainer(**kwargs) -> L.Trainer:
    """A Lightning trainer without logger, checkpoints, progress bar or model summary, unless ``kwargs`` say so."""
    defaults = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(**{**defaults, **kwargs})


class LearningRates(L.Callback):
    """Learning rate of the last parameter group (the decoder's) and of every group, per step."""

    def __init__(self):
        self.rates, self.groups = [], []

    def on_train_batch_start(self, trainer, *args):
        groups = [group["lr"] for group in trainer.optimizers[0].param_groups]
        self.rates.append(groups[-1])
        self.groups.append(groups)


def help_and_modules_loaded(command: list[str], modules: tuple[str, ...]) -> tuple[str, list[str]]:
    """``cmap COMMAND --help`` in a fresh interpreter: its output, and which of ``modules`` it imported."""
    import json
    import subprocess
    import sys

    script = (
        "import json, sys, cmap.cli\n"
        "try:\n"
        f"    cmap.cli.main({[*command, '--help']!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted(name for name in {modules!r} if name in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    output, _, loaded = result.stdout.rstrip("\n").rpartition("\n")
    return output, json.loads(loaded)
