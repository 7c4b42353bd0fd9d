#!/usr/bin/env bash
# Regenerate everything in reports/ on this machine's CPU, in dependency order (about 15-20 minutes):
# architecture tables and budgets, figures (which draw those tables), the planner and latency benchmarks,
# and the ADMM comparison on the digits; the Fashion-MNIST ADMM report is rendered again from its committed
# metrics (rerunning its training is `bash scripts/admm_fashion_mnist.sh`, about an hour on its own).
# GPU sections are added by scripts/gpu_reports.sh where a GPU exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/plan_reports.sh
bash scripts/figures.sh
python -m ttplan bench planner
python -m ttplan bench latency
bash scripts/admm_digits.sh
bash scripts/admm_fashion_mnist.sh --report-only
