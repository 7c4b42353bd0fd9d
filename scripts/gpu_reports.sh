#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA tests, then the GPU sections of the reports, appended to the CPU ones.
#   bash scripts/gpu_reports.sh         (writes reports/latency.md, reports/latency_models.md and
#                                         reports/admm_digits.md in place; copies them, the CUDA latency
#                                         profile and the test log to $OUT when that is set)
# The whole-model part (calibrate on CUDA, then `bench model` eager, compiled, in fresh processes, channels-last) was
# written on a CPU-only machine and has not run on a GPU yet.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-}"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
python -m pytest -q -p no:cacheprovider tests/runtime/test_cuda.py 2>&1 | tee "${OUT:-/tmp}/cuda_tests.log"
python -m ttplan bench latency --device cuda --append
mkdir -p reports/profiles
python -m ttplan calibrate --device cuda --profile reports/profiles/cuda.json
python -m ttplan bench model resnet56 --device cuda --profile reports/profiles/cuda.json --batch 32 --batch 256 \
    --compile --processes 3 --out reports/latency_models.md --append
# cuDNN runs convs fastest on channels-last maps: the same comparison with both models channels-last, TT autotuned
python -m ttplan bench model resnet56 --device cuda --profile reports/profiles/cuda.json --batch 256 \
    --channels-last --autotune --out reports/latency_models.md --append
if [ "${1:-}" = "--admm" ]; then bash scripts/admm_digits.sh --device cuda; fi
if [ -n "$OUT" ]; then cp reports/latency.md reports/latency_models.md reports/admm_digits.md reports/profiles/cuda.json "$OUT"/; fi
