#!/usr/bin/env bash
# tilecast vs MONAI sliding_window_inference on one 8192x8192 image (see tilecast/bench_monai.py).
# MONAI and its torch live in an environment of their own (.bench-monai), never in tilecast's.
# Usage: bash scripts/bench_monai.sh [--size 8192] [--threads 2]   (after the README's install command)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MONAI_VENV:-.bench-monai}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -c constraints.txt torch==2.13.0 monai==1.6.1 onnxruntime tifffile imagecodecs numpy
.venv/bin/python -m tilecast bench-monai --monai-python "$venv/bin/python" "$@"
