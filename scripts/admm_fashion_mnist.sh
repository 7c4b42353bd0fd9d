#!/usr/bin/env bash
# Regenerate reports/admm_fashion_mnist.md (+ .json, + figure): CIFAR ResNet-20 (one input channel, 28x28) on
# Fashion-MNIST; every arm starts from the committed converged dense model (reports/admm_fashion_mnist/dense.pt)
# and gets the same extra epochs, at the 80% and 65% operating points. CPU, one torch thread per run, --jobs runs
# at once; a stored run is never run again, a run folder that survived an interruption is resumed.
#   bash scripts/admm_fashion_mnist.sh                 every run not yet stored, then the report
#   bash scripts/admm_fashion_mnist.sh --report-only   only the report, from the stored metrics
# Needs the data: as root, apt-get update && apt-get install dataset-fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
python -m experiments.admm_fashion_mnist "$@" 2>&1 | tee -a runs/admm_fashion_mnist.log
