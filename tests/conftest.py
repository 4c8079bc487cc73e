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
