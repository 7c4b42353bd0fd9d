#!/usr/bin/env bash
# Regenerate reports/admm_fashion_mnist.md: CIFAR ResNet-20 (one input channel, 28x28) on Fashion-MNIST, every arm
# of the ADMM comparison at two operating points chosen by `ttplan plan`'s budget search. CPU only, one torch
# thread, about 1.5 hours of one core (run folders with checkpoints go to runs/admm_fashion_mnist/; the runs'
# metrics.json and commands are copied to reports/admm_fashion_mnist/, which the report is rendered from).
#   bash scripts/admm_fashion_mnist.sh                  everything; progress on stdout and in runs/admm_fashion_mnist.log
#   bash scripts/admm_fashion_mnist.sh --deadline 110   skip the arms that would end more than 110 minutes from now
#   bash scripts/admm_fashion_mnist.sh --report-only    only the report, from the committed metrics
# Needs the data: as root, apt-get update && apt-get install dataset-fashion-mnist (or --data-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
python -m ttplan.bench.admm_fashion "$@" 2>&1 | tee -a runs/admm_fashion_mnist.log
