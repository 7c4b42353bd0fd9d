#!/usr/bin/env bash
# The test command: lint, then the CPU-only test suite. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import torch, numpy, opt_einsum, networkx, matplotlib, click, yaml, sklearn, nbclient, ipykernel, cotengra, ruff, pytest" >/dev/null 2>&1; then
    bash scripts/install.sh
fi
"$PYTHON" -m ruff check .
"$PYTHON" -m pytest -p no:cacheprovider "$@"
