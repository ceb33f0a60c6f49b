#!/usr/bin/env bash
# Reproduce the bundled model repository (models/) from scratch with the project's own commands.
# About 5 minutes on a 2-core CPU. Writes a new version next to any existing ones.
set -euo pipefail
cd "$(dirname "$0")/.."
REPRODUCE="bash scripts/build_models.sh"

tilecast train pix2pix --data skimage:ihc --out runs/ihc-colorize --arch resnet_6blocks --ngf 16 \
    --norm batch --steps 600 --batch-size 8 --crop 128 --seed 0
tilecast export onnx runs/ihc-colorize/checkpoint.pt --name ihc-colorize --repository models \
    --tile-size 512 --reproduce "$REPRODUCE" \
    --description "Virtual staining: grayscale brightfield -> hematoxylin/DAB colour (IHC), pix2pix resnet_6blocks"
