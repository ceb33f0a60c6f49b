"""Independent check of a nuclei segmenter on real fluorescence nuclei it never saw in training.

The images are the 2-D example and its ground-truth instance mask that ship inside the `stardist` wheel
(`stardist/data/images/img2d.tif`, `mask2d.tif`: a 512x512 crop of the 2018 Data Science Bowl nuclei
set). The wheel is fetched from the package index with `pip download --no-deps` and read as a zip file;
nothing is installed. Prints Dice and IoU of foreground vs background.

    python scripts/evaluate_nuclei.py runs/nuclei/checkpoint.pt [--cache build/eval] [--record]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import tifffile
import torch

from tilecast.export.sources import from_checkpoint
from tilecast.training.data.images import Normalization
from tilecast.training.metrics import dice_iou

WHEEL = "stardist==0.9.2"


def stardist_example(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("stardist-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache), WHEEL],
                       check=True)
        wheels = sorted(cache.glob("stardist-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        image = tifffile.imread(io.BytesIO(wheel.read("stardist/data/images/img2d.tif")))
        mask = tifffile.imread(io.BytesIO(wheel.read("stardist/data/images/mask2d.tif")))
    return image, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("build/eval"))
    parser.add_argument("--record", action="store_true", help="add the figures to the checkpoint's metrics")
    args = parser.parse_args()
    image, mask = stardist_example(args.cache)
    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    loaded = from_checkpoint(args.checkpoint)
    settings = checkpoint["normalization"]
    normalization = Normalization(settings["mode"], tuple(settings["mean"]), tuple(settings["std"]),
                                  settings["low_percentile"], settings["high_percentile"])
    pixels = image[:, :, None]
    low, high = normalization.image_range(pixels)
    with torch.no_grad():
        logits = loaded.module(torch.from_numpy(normalization.apply(pixels, low, high))[None])
    predicted = logits.argmax(1)[0].numpy()
    scores = dice_iou(predicted, (mask > 0).astype(np.int64), 2)
    if args.record:
        checkpoint["metrics"].update({f"stardist_img2d_{k}": v for k, v in scores.items()})
        tmp = args.checkpoint.with_name(args.checkpoint.name + ".tmp")
        torch.save(checkpoint, tmp)
        tmp.replace(args.checkpoint)
    print(json.dumps({"image": "stardist img2d.tif (DSB 2018 fluorescence nuclei, 512x512)",
                      "foreground_fraction_true": round(float((mask > 0).mean()), 4),
                      "foreground_fraction_predicted": round(float((predicted > 0).mean()), 4),
                      **{k: round(v, 4) for k, v in scores.items()}}))


if __name__ == "__main__":
    main()
