#!/usr/bin/env bash
# Regenerate reports/admm_digits.md: CIFAR ResNet-20 on the digits at 32x32, hodec on stages 2-3 (config
# reports/configs/resnet20_hodec.json), ADMM against direct decomposition with the same epochs. CPU only,
# about 6-10 minutes on 2 cores (one torch thread; the run folders go to runs/admm_digits/). The output paths and
# a quick run's settings are options: python -m experiments.admm_digits --help.
#   bash scripts/admm_digits.sh               the CPU comparison (writes the report)
#   bash scripts/admm_digits.sh --device cuda ADMM epochs/s on GPU vs CPU, appended to the same report (< 3 min)
set -euo pipefail
cd "$(dirname "$0")/.."
python -m experiments.admm_digits "$@"
