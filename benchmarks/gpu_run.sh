#!/usr/bin/env bash
# The device run of issue 22: one call of the device tool on a lent GPU (an H200), about 8 of its 10 minutes.
#
#   here, first:      bash benchmarks/gpu_prepare.sh
#   then, one call:   run(command="bash benchmarks/gpu_run.sh", carry=[".whl", ".devdata"], timeout_s=600)
#
# Installs the carried wheels, records nvidia-smi, checks that cmap imports, then runs
# benchmarks/gpu_check.py (every section; they print as they end) under a time limit of SECONDS (default
# 520). Files back in $OUT: gpu_check.md (the figures for benchmarks/README.md), gpu_check.json,
# profile_today.txt, profile_sync-free.txt, nvidia-smi.txt, log.txt. A run stopped by the limit keeps
# every section and arm finished so far in gpu_check.md and .json.
#
#   bash benchmarks/gpu_run.sh [SECONDS] [gpu_check.py options...]
set -u
budget=${1:-520}
shift || true
out=${OUT:-/tmp/gpu_check}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # cmap from this checkout
# The carried wheels, where the packages are missing (the device image); a machine that has them skips this.
if ! "$python" -c "import jsonargparse, rasterio, pystac" 2> /dev/null && ls .whl/*.whl > /dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv | tee "$out/nvidia-smi.txt"
"$python" -c "import cmap.cli, cmap.mapping, rasterio, jsonargparse, torch; print('torch', torch.__version__)" || exit 1
ucr=()
[ -f .devdata/ucr/Crop_TRAIN.tsv ] && ucr=(--ucr_root .devdata/ucr)
timeout "$budget" "$python" benchmarks/gpu_check.py --output_dir "$out" ${ucr[@]+"${ucr[@]}"} "$@" > "$out/log.txt" 2>&1
status=$?
echo "gpu_check.py exit status $status (124: stopped by the ${budget} s limit)"
# Errors, failed arms, and what keeps CUDA graphs or compiled code from applying (then the figures say less).
grep -E "^(Traceback|[A-Za-z]*Error)|failed:|skipping cudagraphs|[Rr]ecompil|graph break" "$out/log.txt" | sort | uniq -c \
    | sort -rn | head -n 25
cat "$out/gpu_check.md"
echo
