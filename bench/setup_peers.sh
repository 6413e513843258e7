#!/usr/bin/env bash
# Peer libraries for the benchmark, in bench/.peer-venv, apart from the project's
# venv (they are never dependencies of steerlab). torch is pinned and installed
# first: the CPU wheel is on these machines, an unpinned torch pulls GBs of CUDA.
# Time-boxed; the benchmark skips a peer it cannot import, with the reason.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
test -x .peer-venv/bin/python || "$PY" -m venv .peer-venv
timeout 600 .peer-venv/bin/pip install -q "$TORCH_SPEC"
timeout 600 .peer-venv/bin/pip install -q transformer_lens
.peer-venv/bin/python -c "import transformer_lens, transformers, torch; print('peer venv ok:', torch.__version__, transformers.__version__)"
