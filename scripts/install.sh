#!/usr/bin/env bash
# Install ttplan (editable) with its test tools, and the Fashion-MNIST data where Debian's apt-get can (as root).
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
# Fashion-MNIST (ttplan train --dataset fashion-mnist): the Debian package dataset-fashion-mnist puts the four idx
# files in /usr/share/datasets/fashion-mnist. Optional: a failure here only says so, it never fails the install.
FASHION=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
if [ -f "$FASHION" ]; then
    echo "Fashion-MNIST: already installed in /usr/share/datasets/fashion-mnist"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    # bounded: without a network apt-get update can wait a long time on each source
    if timeout 300 apt-get update -qq >/dev/null 2>&1 \
        && timeout 300 apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
        echo "Fashion-MNIST: installed the Debian package dataset-fashion-mnist"
    else
        echo "Fashion-MNIST: apt-get could not install dataset-fashion-mnist (no package index or no network);" \
             "ttplan train --dataset fashion-mnist needs it, or --data-dir with the four idx files"
    fi
else
    echo "Fashion-MNIST: not installed (needs apt-get as root: apt-get update && apt-get install" \
         "dataset-fashion-mnist); ttplan train --dataset fashion-mnist can also read --data-dir"
fi
