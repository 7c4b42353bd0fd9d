#!/usr/bin/env bash
# Regenerate the architecture planning reports (ttplan plan): default-policy tables for ResNet-18/50/32/56,
# and budget runs for ResNet-32/56 at the HODEC paper's reductions (docs/cost-model.md), with the configs they find.
# Usage: scripts/plan_reports.sh    (from the repository root; CPU only, about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
ttplan() { python -m ttplan "$@"; }

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
