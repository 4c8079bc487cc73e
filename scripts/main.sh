#!/usr/bin/env bash
# The main job: set up, train a small transformer on UCR Crop from scratch, test the best checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/cmap fit --config configs/ucr_crop_transformer.yaml --test_after_fit true "$@"
