#!/usr/bin/env bash
# Best against best (reports/latency_best.md): ResNet-56 at batch 32 and 1, ResNet-18 at batch 8 and 1, each model
# in every form a user deploys (`ttplan bench model --best`: eager NCHW, eager NCHW frozen, channels-last,
# torch.compile with freezing in both layouts, ONNX Runtime where `pip install -e ".[deploy]"` put it), all timed
# interleaved in one run per model and batch, TT layers autotuned, BatchNorms folded. Each batch-1 model runs twice:
# planned for time (the latency objective may keep layers dense) and planned for MACs (every policy layer
# decomposed). About 8 minutes on 2 idle cores; run it on a quiet machine (`uptime` first). QUICK=1: a smoke run.
# Called by scripts/latency_reports.sh; alone it times against the committed profiles in reports/profiles/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/timing_setup.sh  # PYTHON, ALL (threads), ROUNDS; prints the load average
OUT=reports/latency_best.md
CACHE=$(mktemp -d)
trap 'rm -rf "$CACHE"' EXIT
# autotune results go to a fresh cache; the channels-last TT models are planned with the channels-last profile
mkdir -p "$CACHE/ttplan"
cp "reports/profiles/cpu_${ALL}threads_channels_last.json" "$CACHE/ttplan/profile-channels-last.json"
export XDG_CACHE_HOME="$CACHE"
"$PYTHON" -c "from ttplan.bench.model import render_report; open('$OUT.tmp', 'w').write(render_report([]))"
run() {  # run ARCH BATCH [options...]
    local arch=$1 batch=$2
    shift 2
    echo "[$(date +%T)] $arch batch $batch $*" >&2
    "$PYTHON" -m ttplan bench model "$arch" --batch "$batch" --threads "$ALL" --rounds "$ROUNDS" --best --autotune \
        --profile "reports/profiles/cpu_${ALL}threads.json" --out "$OUT.tmp" --append "$@"
}
run resnet56 32
run resnet18 8
run resnet18 1
run resnet18 1 --objective macs
run resnet56 1
run resnet56 1 --objective macs
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT" >&2
