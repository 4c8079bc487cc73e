#!/usr/bin/env bash
# Before the device run of issue 22 (benchmarks/gpu_run.sh), here, once: what the device machine lacks, into
# two folders that git ignores (.git/info/exclude) and the device tool's call carries.
#
#   bash benchmarks/gpu_prepare.sh
#
# - .whl/: wheels of the packages cmap imports that the device image has not (its python3 is 3.12 with
#   torch, lightning, torchmetrics, numpy, pandas, matplotlib, tensorboard, pyarrow, scipy, pyyaml, click,
#   attrs: /work/.library/device/KINDS.md), at the versions of this checkout's .venv (the tested ones);
# - .devdata/ucr/: UCR Crop's Crop_TRAIN.tsv and Crop_TEST.tsv (6.8 MB) from ../shared/data.
# About 45 MB travel in all (rasterio's wheel, with GDAL inside, is 36 MB); the call's limit is 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
for folder in /.whl/ /.devdata/; do
    grep -qxF "$folder" "$exclude" 2>/dev/null || echo "$folder" >> "$exclude"
done

# Imported by cmap (cmap.cli, cmap.mapping, cmap.data) and missing from the image: jsonargparse and what its
# signatures extra needs, rasterio and its own needs, pystac (a meta-package of pystac-core and extensions).
names="jsonargparse docstring-parser typeshed-client rasterio affine cligj click-plugins"
pins=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null \
    | awk -F'==' -v names=" $names " 'BEGIN{IGNORECASE=1} {n=tolower($1); gsub("_","-",n)} index(names, " " n " ") || n ~ /^pystac/')
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl $pins
mkdir -p .devdata/ucr
cp ../shared/data/ucr_crop_formosat2/Crop_T*.tsv .devdata/ucr/
echo "$(ls .whl | wc -l) wheels in .whl ($(du -sh .whl | cut -f1)), UCR Crop in .devdata/ucr ($(du -sh .devdata | cut -f1))"
