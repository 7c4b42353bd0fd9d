#!/usr/bin/env bash
# Regenerate the architecture planning reports (ttplan plan): default-policy tables for ResNet-18/50/32/56,
# and budget runs for ResNet-32/56 at the HODEC paper's reductions (docs/cost-model.md), with the configs they find.
# Usage: scripts/plan_reports.sh            (from anywhere; CPU only, about two minutes)
#        scripts/plan_reports.sh --check    regenerate into a temporary folder and compare byte for byte with the
#                                           committed reports; exit 1 naming every report that differs
# The reports are deterministic: plans by MACs, ms priced by the committed default profile (the user's cached
# profile is never read), so they depend on the code alone.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
case "${1:-}" in
    "") CHECK=0 ;;
    --check) CHECK=1 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# every file it writes, relative to the folder it writes from (the paths the reports name are these, in both modes)
REPORTS=()
for arch in resnet18 resnet50 resnet32 resnet56; do
    REPORTS+=("reports/plan_${arch}.md" "reports/plan_${arch}.json")
done
for run in resnet32 resnet56 resnet32_search_format resnet56_search_format; do
    REPORTS+=("reports/budget_${run}.md")
done
REPORTS+=(reports/configs/resnet32_budget.json reports/configs/resnet56_budget.json
          reports/configs/resnet32_budget_search_format.json reports/configs/resnet56_budget_search_format.json)

if [ "$CHECK" = 1 ]; then
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    mkdir -p "$WORK/reports/configs"
else
    WORK="$ROOT"
fi
cd "$WORK"
ttplan() { PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python -m ttplan "$@"; }

for arch in resnet18 resnet50 resnet32 resnet56; do
    ttplan plan "$arch" --markdown --out "reports/plan_${arch}.md"
    ttplan plan "$arch" --json --out "reports/plan_${arch}.json"
done

# HODEC (CIFAR-10): ResNet-32 72% FLOPs↓ / 80% params↓, ResNet-56 62% / 67% (FLOPs there are MACs)
ttplan plan resnet32 --target-macs-reduction 0.72 --target-params-reduction 0.80 \
    --save-config reports/configs/resnet32_budget.json --markdown --out reports/budget_resnet32.md
ttplan plan resnet56 --target-macs-reduction 0.62 --target-params-reduction 0.67 \
    --save-config reports/configs/resnet56_budget.json --markdown --out reports/budget_resnet56.md
# the same targets with the number of modes and their factorisation searched too
ttplan plan resnet32 --target-macs-reduction 0.72 --target-params-reduction 0.80 --search-format \
    --save-config reports/configs/resnet32_budget_search_format.json \
    --markdown --out reports/budget_resnet32_search_format.md
ttplan plan resnet56 --target-macs-reduction 0.62 --target-params-reduction 0.67 --search-format \
    --save-config reports/configs/resnet56_budget_search_format.json \
    --markdown --out reports/budget_resnet56_search_format.md

if [ "$CHECK" = 1 ]; then
    differ=0
    for report in "${REPORTS[@]}"; do
        if ! cmp -s "$WORK/$report" "$ROOT/$report"; then
            echo "differs from the committed report: $report" >&2
            differ=1
        fi
    done
    if [ "$differ" = 1 ]; then
        echo "the committed plan reports are stale: run scripts/plan_reports.sh and commit reports/" >&2
        exit 1
    fi
    echo "all ${#REPORTS[@]} plan reports match the committed ones byte for byte"
fi
