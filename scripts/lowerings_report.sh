#!/usr/bin/env bash
# Every lowering of each distinct TT layer (reports/lowerings.md): `ttplan bench lowerings` for ResNet-18 at batch 8
# and ResNet-56 at batch 32, all threads and one: each layer's fewest-MACs order run by bmm or 1x1-conv mixings on
# NCHW and NHWC maps and by the fused kernel, against the dense conv in both memory formats, interleaved. Under a
# minute on 2 idle cores; run it on a quiet machine (`uptime` first). QUICK=1: a smoke run.
# Called by scripts/latency_reports.sh; alone it refreshes this report after a change to the kernel or the lowerings.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/timing_setup.sh  # PYTHON, ALL (threads), ROUNDS; prints the load average
OUT=reports/lowerings.md
first=1
for spec in "resnet18 8 $ALL" "resnet56 32 $ALL" "resnet18 8 1" "resnet56 32 1"; do
    set -- $spec
    echo "[$(date +%T)] $1 batch $2, $3 thread(s)" >&2
    if [ "$first" = 1 ]; then append=(); first=0; else append=(--append); fi
    "$PYTHON" -m ttplan bench lowerings "$1" --batch "$2" --threads "$3" --rounds "$ROUNDS" --out "$OUT.tmp" \
        "${append[@]}"
done
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT" >&2
