#!/usr/bin/env bash
# Set up and run the test suite (real-data tests read ../shared/data).
# pytest-xdist runs it on one worker process per CPU core (`-n auto`), each worker one thread
# (tests/conftest.py); `--dist loadfile` keeps every test file on one worker, so the files'
# module-scoped fixtures (trained models, stores) are built once. Arguments go to pytest after
# these: `bash scripts/test.sh -n 0` runs in this one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -n auto --dist loadfile "$@"
