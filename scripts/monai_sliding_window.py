"""The MONAI side of `tilecast bench-monai`: what a MONAI user does with a large image.

Read the whole image into memory, run `monai.inferers.sliding_window_inference` with the same ONNX
model through ONNX Runtime (same engine and thread count as the tilecast server, so only the
tiling, stitching and I/O differ), write the result as a tiled BigTIFF. Runs in its own
environment (torch + monai); prints one JSON line with its timings.

    python scripts/monai_sliding_window.py IN.tif OUT.tif MODEL.onnx --roi 632 --overlap 0.19 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import onnxruntime as ort
import tifffile
import torch
from monai.inferers import sliding_window_inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("model")
    parser.add_argument("--roi", type=int, required=True, help="window edge in pixels")
    parser.add_argument("--overlap", type=float, required=True, help="fraction of the window shared")
    parser.add_argument("--threads", type=int, required=True, help="ONNX Runtime intra-op threads")
    parser.add_argument("--batch", type=int, default=4, help="windows per predictor call")
    parser.add_argument("--tile", type=int, default=512, help="tile edge of the output BigTIFF")
    args = parser.parse_args()

    started = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        """NCHW float windows -> the model's uint8 NHWC graph -> NCHW float."""
        batch = windows.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
        result = session.run(None, {name: np.ascontiguousarray(batch)})[0]
        return torch.from_numpy(result).permute(0, 3, 1, 2).float()

    image = tifffile.imread(args.input)  # the whole image, as MONAI's readers do
    image = image if image.ndim == 3 else image[:, :, None]
    inputs = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    read_s = time.perf_counter() - started
    with torch.inference_mode():
        output = sliding_window_inference(inputs, roi_size=(args.roi, args.roi), sw_batch_size=args.batch,
                                          predictor=predictor, overlap=args.overlap, mode="constant",
                                          padding_mode="reflect")
    infer_s = time.perf_counter() - started - read_s
    result = output[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    tifffile.imwrite(args.output, result, tile=(args.tile, args.tile), compression="zlib", bigtiff=True,
                     photometric="rgb" if result.shape[2] == 3 else "minisblack")
    print(json.dumps({"seconds": time.perf_counter() - started, "read_s": read_s, "infer_s": infer_s}))


if __name__ == "__main__":
    main()
