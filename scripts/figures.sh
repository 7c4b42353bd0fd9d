#!/usr/bin/env bash
# Regenerate every figure in reports/ through the ttplan CLI; every number in them comes from this repo.
#   scripts/figures.sh            (run from anywhere; set TTPLAN="ttplan" to use an installed entry point)
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a TTPLAN <<< "${TTPLAN:-python -m ttplan}"

# ResNet-18 layer3.0.conv1: 128->256, 3x3, stride 2, padding 1, 28x28 -> 14x14
LAYER=(--in-channels 128 --out-channels 256 --kernel-size 3 --stride 2 --padding 1 --input-size 28)

# 1. rank sweep: classical, hodec (1, 2, 3 modes a side), tr (3 modes) and cp, ranks 2..64; data beside the figure
"${TTPLAN[@]}" sweep "${LAYER[@]}" --ranks-range 2:64 --name "ResNet-18 layer3.0.conv1" \
    --json --out reports/sweep_layer3.0.conv1.json
"${TTPLAN[@]}" plot sweep reports/sweep_layer3.0.conv1.json --out reports/sweep_layer3.0.conv1
#    and the page that shows the figure and summarises each format (the README links it)
"${TTPLAN[@]}" sweep "${LAYER[@]}" --ranks-range 2:64 --name "ResNet-18 layer3.0.conv1" \
    --markdown --out reports/sweep_layer3.0.conv1.md

# 2. plan drawings of the same layer at rank 16: the hodec best plan, and the classical published order
"${TTPLAN[@]}" plot plan "${LAYER[@]}" --format hodec --tt-shapes 4,8,8,9,4,4,8 \
    --ranks 1,16,16,16,16,16,16,1 --scheme best --out reports/plan_layer3.0.conv1_hodec_best
"${TTPLAN[@]}" plot plan "${LAYER[@]}" --format classical --rank 16 --scheme published \
    --out reports/plan_layer3.0.conv1_classical_published

# 3. planned architectures: one figure per `ttplan plan ARCH --json` output that scripts/plan_reports.sh saves
#    as reports/plan_<arch>.json, drawn as reports/arch_<arch>.{png,svg}; skipped while no such file exists
for plan in reports/plan_*.json; do
    if [ -f "$plan" ]; then
        name="$(basename "$plan" .json)"
        "${TTPLAN[@]}" plot arch "$plan" --out "reports/arch_${name#plan_}"
    fi
done
