#!/usr/bin/env bash
# Regenerate every wall-clock report on this machine's CPU (about 10 minutes on 2 idle cores):
#   1. latency profiles: all threads (also written as the committed default profile) and one thread,
#      each checked on held-out layers -> reports/latency_model_check.md
#   2. best against best (`scripts/latency_best.sh` -> reports/latency_best.md: each model in every form a user
#      deploys, eager NCHW and channels-last, torch.compile with freezing, ONNX Runtime), then whole models, dense
#      against TT (`ttplan bench model`) -> reports/latency_models.md: resnet56 (default policy and
#      reports/configs/resnet56_budget.json) at batch 1 and 32,
#      resnet18 (default policy) at batch 1, 8 and 32; one thread and all threads; the default-policy
#      batch-32 (resnet56) and batch-8 (resnet18) runs again with `--malloc retain` (glibc keeping freed
#      memory: no page faults per forward) and, all threads, with `--compile` (torch.compile); the
#      all-threads runs also repeat their end-to-end timing in $PROCESSES fresh processes (`--processes`)
#      and, all threads, both models channels-last (`--channels-last`, TT layers autotuned on NHWC maps against a
#      profile calibrated channels-last), with glibc's defaults and retaining freed memory; resnet56 batch 32
#      again with --no-fuse (stock ops only), to show what the fused kernel adds
#   3. every lowering of each distinct TT layer (`ttplan bench lowerings`: resnet18 batch 8, resnet56 batch 32, all
#      threads and one) -> reports/lowerings.md
#   4. single layers (`ttplan bench latency`, with the layer3.0.conv1 check) -> reports/latency.md
# For tensorly-torch's columns in reports/latency.md install the extra first: pip install -e ".[tltorch]".
# Run it on a quiet machine: timings taken under load say little. QUICK=1 cuts the rounds for a smoke run;
# KEEP_PROFILES=1 skips steps 1's calibrations and checks and times against the committed profiles (after a
# change to planning, not to what the profiles measure).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python3}"
ALL=$("$PYTHON" -c "import torch; print(torch.get_num_threads())")
ROUNDS="${ROUNDS:-9}"
BIG_ROUNDS="${BIG_ROUNDS:-5}"   # resnet18 at batch 32: one forward takes seconds
BUDGET="${BUDGET:-0.015}"       # seconds of repeats per timed op while calibrating
if [ "${QUICK:-0}" = "1" ]; then ROUNDS=2; BIG_ROUNDS=1; BUDGET=0.003; fi
START=$(date +%s)
STEP=0
TOTAL=12
step() { STEP=$((STEP + 1)); echo "[$STEP/$TOTAL, $(( $(date +%s) - START )) s] $*" >&2; }
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
echo "load average now: $load (timings are only meaningful on an idle machine)" >&2
mkdir -p reports/profiles
# autotune results go to a fresh cache, so every run measures its own (profiles are passed as files)
XDG_CACHE_HOME=$(mktemp -d)
export XDG_CACHE_HOME
trap 'rm -rf "$XDG_CACHE_HOME"' EXIT

if [ "${KEEP_PROFILES:-0}" = "1" ]; then
    STEP=4
    echo "KEEP_PROFILES=1: the profiles in reports/profiles/ and reports/latency_model_check.md stay as they are" >&2
else
step "calibrate, $ALL threads (also the committed default profile, except with QUICK=1)"
if [ "${QUICK:-0}" = "1" ]; then
    "$PYTHON" -m ttplan calibrate --threads "$ALL" --budget "$BUDGET" --profile "reports/profiles/cpu_${ALL}threads.json"
else
    "$PYTHON" -m ttplan calibrate --threads "$ALL" --budget "$BUDGET" --as-default
    cp ttplan/core/default_profile.json "reports/profiles/cpu_${ALL}threads.json"
fi
step "calibrate, 1 thread"
"$PYTHON" -m ttplan calibrate --threads 1 --budget "$BUDGET" --profile reports/profiles/cpu_1thread.json

step "calibrate, $ALL threads, channels-last"
"$PYTHON" -m ttplan calibrate --threads "$ALL" --budget "$BUDGET" --channels-last \
    --profile "reports/profiles/cpu_${ALL}threads_channels_last.json"

step "check the profiles on held-out layers"
{
    echo "# Latency model: predictions against measurements on held-out layers"
    echo
    echo "Written by \`bash scripts/latency_reports.sh\`. The profiles are fitted by \`ttplan calibrate\` on a grid of"
    echo "synthetic layers (channels 24-384); the check times layers the fit never saw (the 3x3 convs of ResNet-56 at"
    echo "batch 32 and ResNet-18 at batch 1 and 8, hodec rank 16, folded weights) and their dense convs."
    for threads in "$ALL" 1; do
        if [ "$threads" = 1 ]; then profile=reports/profiles/cpu_1thread.json; else profile="reports/profiles/cpu_${ALL}threads.json"; fi
        echo
        echo "## $threads thread(s)"
        echo
        echo "Command: \`ttplan calibrate --check --threads $threads --profile $profile\`"
        echo
        echo '```'
        "$PYTHON" -m ttplan calibrate --check --threads "$threads" --profile "$profile"
        echo '```'
    done
    echo
    echo "## $ALL threads, channels-last (inputs, dense convs and TT layers on NHWC maps)"
    echo
    echo "Command: \`ttplan calibrate --check --channels-last --threads $ALL --profile reports/profiles/cpu_${ALL}threads_channels_last.json\`"
    echo
    echo '```'
    "$PYTHON" -m ttplan calibrate --check --channels-last --threads "$ALL" \
        --profile "reports/profiles/cpu_${ALL}threads_channels_last.json"
    echo '```'
} > reports/latency_model_check.md.tmp
mv reports/latency_model_check.md.tmp reports/latency_model_check.md
grep "median relative error" reports/latency_model_check.md >&2
fi

model() {  # model ARCH THREADS ROUNDS [options...]: one `bench model` run appended to the report
    local arch=$1 threads=$2 rounds=$3
    shift 3
    local profile="reports/profiles/cpu_${threads}threads.json"
    [ "$threads" = 1 ] && profile=reports/profiles/cpu_1thread.json
    "$PYTHON" -m ttplan bench model "$arch" --threads "$threads" --rounds "$rounds" --profile "$profile" \
        --out reports/latency_models.md.tmp --append "$@"
}
"$PYTHON" -c "from ttplan.bench.model import render_report; open('reports/latency_models.md.tmp', 'w').write(render_report([]))"
step "best against best -> reports/latency_best.md (scripts/latency_best.sh)"
PYTHON="$PYTHON" THREADS="$ALL" bash scripts/latency_best.sh
step "resnet56, default policy and the budget config, batch 1 and 32; retaining freed memory; compiled"
PROCESSES="${PROCESSES:-5}"   # fresh processes repeating the all-threads end-to-end timings
if [ "${QUICK:-0}" = "1" ]; then PROCESSES=1; fi
repeat() { if [ "$1" = "$ALL" ]; then echo "--processes $PROCESSES"; fi; }  # only with all threads
for threads in "$ALL" 1; do
    # shellcheck disable=SC2046
    model resnet56 "$threads" "$ROUNDS" --batch 32 --batch 1 $(repeat "$threads")
    # shellcheck disable=SC2046
    model resnet56 "$threads" "$ROUNDS" --batch 32 --malloc retain $(repeat "$threads")
    model resnet56 "$threads" "$ROUNDS" --batch 32 --batch 1 --config reports/configs/resnet56_budget.json
done
model resnet56 "$ALL" "$ROUNDS" --batch 32 --compile
# the same plan search without the fused kernel: what it adds (the runs above fuse wherever predicted faster)
# shellcheck disable=SC2046
model resnet56 "$ALL" "$ROUNDS" --batch 32 --no-fuse $(repeat "$ALL")
step "resnet18, default policy, batch 1 and 8; retaining freed memory; compiled"
for threads in "$ALL" 1; do
    # shellcheck disable=SC2046
    model resnet18 "$threads" "$ROUNDS" --batch 8 --batch 1 $(repeat "$threads")
    # shellcheck disable=SC2046
    model resnet18 "$threads" "$ROUNDS" --batch 8 --malloc retain $(repeat "$threads")
done
model resnet18 "$ALL" "$ROUNDS" --batch 8 --compile
step "resnet56 batch 32 and resnet18 batch 8, both models channels-last, TT layers autotuned"
for malloc in default retain; do
    for spec in "resnet56 32" "resnet18 8"; do
        set -- $spec
        "$PYTHON" -m ttplan bench model "$1" --batch "$2" --threads "$ALL" --rounds "$ROUNDS" --channels-last \
            --autotune --profile "reports/profiles/cpu_${ALL}threads_channels_last.json" --malloc "$malloc" \
            --processes "$PROCESSES" --out reports/latency_models.md.tmp --append
    done
done
step "resnet18, default policy, batch 32"
for threads in "$ALL" 1; do
    model resnet18 "$threads" "$BIG_ROUNDS" --batch 32
done
mv reports/latency_models.md.tmp reports/latency_models.md

step "every lowering of each distinct TT layer -> reports/lowerings.md (scripts/lowerings_report.sh)"
PYTHON="$PYTHON" THREADS="$ALL" ROUNDS="$ROUNDS" bash scripts/lowerings_report.sh

step "single layers: ResNet-18's 3x3 convs at batch 1 and 32, one thread"
"$PYTHON" -m ttplan bench latency --threads 1 --repeats "$BIG_ROUNDS"
step "the layer3.0.conv1 check at batch 32, all threads, with glibc's defaults and retaining freed memory"
"$PYTHON" -m ttplan bench latency --threads "$ALL" --repeats "$ROUNDS" --batch 32 --layers layer3.0.conv1 --append
"$PYTHON" -m ttplan bench latency --threads "$ALL" --repeats "$ROUNDS" --batch 32 --layers layer3.0.conv1 --append \
    --malloc retain
echo "done in $(( $(date +%s) - START )) s: reports/latency_model_check.md, reports/latency_models.md, reports/lowerings.md," \
     "reports/latency.md," \
     "reports/profiles/, ttplan/core/default_profile.json" >&2
