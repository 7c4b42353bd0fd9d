#!/usr/bin/env bash
# Install ttplan (editable) with its test tools.
# torch: an importable torch of any recent version is kept; otherwise the CPU wheel torch==2.13.0 is
# installed first, so pip never pulls a multi-GB CUDA build for a bare `torch` requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet "torch==2.13.0"
fi
"$PYTHON" -m pip install --quiet -e ".[test]"
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
