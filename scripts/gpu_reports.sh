#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA tests, then the GPU sections of the reports, appended to the CPU ones.
#   bash scripts/gpu_reports.sh         (writes reports/latency.md and reports/admm_digits.md in place;
#                                         copies them and the test log to $OUT when that is set)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-}"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
python -m pytest -q -p no:cacheprovider tests/runtime/test_cuda.py 2>&1 | tee "${OUT:-/tmp}/cuda_tests.log"
python -m ttplan bench latency --device cuda --append
if [ "${1:-}" = "--admm" ]; then bash scripts/admm_digits.sh --device cuda; fi
if [ -n "$OUT" ]; then cp reports/latency.md reports/admm_digits.md "$OUT"/; fi
