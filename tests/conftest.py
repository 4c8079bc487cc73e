import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SEED_CONFIG = REPO.parent / "shared" / "seed" / "classifier.yaml"
CONFIGS = REPO / "configs"


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


TINY_CLASSIFIER = """
trainer:
  max_steps: {steps}
  default_root_dir: {root}
  enable_progress_bar: false
  limit_val_batches: 1
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true}}
model:
  class_path: cmap.ml.classifiers.Classifier
  init_args:
    max_lr: 0.001
    encoder:
      class_path: cmap.ml.encoders.TransformerEncoder
      init_args:
        position_encoder:
          class_path: cmap.ml.embeddings.PositionalEncoding
          init_args: {{d_model: 16, tau: 1000, max_len: 400}}
        bands_encoder:
          class_path: cmap.ml.embeddings.PixelEncoding
          init_args: {{sizes: [{num_bands}, 16]}}
        d_model: 16
        n_att_head: 2
        n_att_layers: 1
        dim_feedforward: 32
    decoder:
      class_path: cmap.ml.decoders.MultiClassClassification
      init_args: {{hidden: 16, num_classes: {num_classes}}}
data:
{data}
attention_maps: {{first_epoch: 1000}}
embeddings: {{first_epoch: 1000}}
"""


def fit_tiny_classifier(root: Path, data: str, num_bands: int, num_classes: int, steps: int = 3) -> Path:
    """``cmap fit`` of a tiny transformer classifier for ``steps`` steps; its last checkpoint.

    ``data``: the data module's YAML (``class_path`` and ``init_args`` lines). The run's config is
    ``root/config.yaml``, so ``cmap predict --config`` can reuse it.
    """
    from cmap.cli import main as cmap_main

    root.mkdir(parents=True, exist_ok=True)
    data = "\n".join(f"  {line}" for line in data.splitlines())
    config = TINY_CLASSIFIER.format(steps=steps, root=root, data=data, num_bands=num_bands, num_classes=num_classes)
    (root / "config.yaml").write_text(config)
    cmap_main(["fit", "--config", str(root / "config.yaml")])
    return next(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
