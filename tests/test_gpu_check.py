"""benchmarks/gpu_check.py --smoke: every section of the GPU check runs (CPU, toy sizes) and reports
its figures, so the one-call device run (benchmarks/gpu_run.sh) does not fail on a script error."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO, SHARED_DATA, require


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section(tmp_path):
    require(SHARED_DATA / "ucr_crop_formosat2")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--smoke", "--output_dir", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {"roofline", "inference", "training", "profile", "map", "accuracy", "end"} <= figures.keys()
    assert figures["roofline"]["bf16"] > 0 and figures["roofline"]["fp32"] > 0
    arms = figures["inference"]["arms"]
    assert {"fp32", "bf16-true", "bf16-true compiled"} <= arms.keys()
    assert arms["fp32"]["max_probability_difference"] == 0 and 0 < arms["bf16-true"]["relative_logit_error"] < 0.05
    assert all("error" not in arm and arm["steps_per_s"] > 0 for arm in figures["training"].values())
    assert {key.split(" | ")[2] for key in figures["training"]} == {"today", "sync-free", "compile", "CUDA graphs"}
    # The profile sees what the package removed: torchmetrics' bincounts at every step (the boolean
    # selections of TempCNN's batch norm are gone on GPUs only: on the CPU they are the faster path).
    today, now = figures["profile"]["today"], figures["profile"]["sync-free"]
    assert today["bincount per step"] > 0 and now["bincount per step"] == 0
    assert today["nonzero per step"] == now["nonzero per step"] > 0
    assert (tmp_path / "profile_today.txt").stat().st_size > 1000
    map_run = figures["map"]["map_workers_0"]
    assert map_run["pixels_per_s"] > 0 and figures["map"]["forward_pixels_per_s"] > 0
    large = figures["accuracy"]["128"]["runs"][0]
    assert large["max_lr"] == pytest.approx(2 * figures["accuracy"]["32"]["runs"][0]["max_lr"])  # sqrt(128 / 32)
    assert "| tempcnn | 32 | today |" in (tmp_path / "gpu_check.md").read_text()
