#!/usr/bin/env bash
# Reproduce the bundled model repository (models/) from scratch with the project's own commands:
# train the three bundled models and export each as a new version. About 12 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
REPRODUCE="bash scripts/build_models.sh"

tilecast train pix2pix --config configs/ihc-colorize.toml --out runs/ihc-colorize
tilecast export onnx runs/ihc-colorize/checkpoint.pt --name ihc-colorize --repository models \
    --tile-size 512 --reproduce "$REPRODUCE" \
    --description "Virtual staining: grayscale brightfield -> hematoxylin/DAB colour (IHC), pix2pix resnet_6blocks"

tilecast train segmenter --config configs/nuclei.toml --out runs/nuclei
# Independent check on real fluorescence nuclei (stardist's bundled DSB 2018 example), added to the metrics.
python scripts/evaluate_nuclei.py runs/nuclei/checkpoint.pt --record
tilecast export onnx runs/nuclei/checkpoint.pt --name nuclei --repository models \
    --tile-size 256 --input-dtype uint16 --reproduce "$REPRODUCE" \
    --description "Nuclei vs background in fluorescence images (8/16-bit, any brightness: per-image percentiles), U-Net"

tilecast train classifier --config configs/ihc-density.toml --out runs/ihc-density
tilecast export onnx runs/ihc-density/checkpoint.pt --name ihc-density --repository models \
    --tile-size 64 --reproduce "$REPRODUCE" \
    --description "Nuclei-dense vs sparse tissue in 64 px RGB brightfield patches (heat maps), residual CNN"
