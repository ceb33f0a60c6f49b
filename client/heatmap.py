"""Classifiers over whole slides: one patch per heat-map cell, streamed like tiles, answers gathered into
a heat map (float32 TIFF, one channel per class, one pixel per cell), a CSV of every classified patch, and
a coloured overlay on a thumbnail. Background cells can be skipped with a tissue mask."""

from __future__ import annotations

import contextlib
import csv
import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.convert import ConvertResult, Progress, check_compatible
from tilecast.client.normalization import image_parameters
from tilecast.client.options import ConvertOptions
from tilecast.client.overview import overview
from tilecast.client.reader import open_image, read_reflected
from tilecast.client.remote import Client
from tilecast.client.resilient import stream_with_retries
from tilecast.client.tiling import Box
from tilecast.client.tissue import tissue_mask
from tilecast.client.writer import atomic_output
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.v1 import manifest_pb2

Array = npt.NDArray[Any]
OVERLAY_EDGE = 1024
BAND_PX = 512  # a common TIFF tile edge


def heatmap_paths(output: Path) -> tuple[Path, Path, Path]:
    """The heat map TIFF, the overlay PNG and the CSV of patch scores."""
    stem = output.name.removesuffix(output.suffix)
    return output, output.with_name(f"{stem}.overlay.png"), output.with_name(f"{stem}.csv")


def patch_box(row: int, col: int, stride: int, patch: int) -> Box:
    """The patch centred on heat-map cell (row, col); it may reach past the image (read by reflection)."""
    y0, x0 = row * stride + (stride - patch) // 2, col * stride + (stride - patch) // 2
    return Box(y0, y0 + patch, x0, x0 + patch)


def band_order(index: int, cols: int, stride: int) -> tuple[int, int, int]:
    """Patches in bands of BAND_PX rows, column by column within a band: consecutive patches share the
    image's stored tiles, so each is decoded about once however wide the slide (row by row, a wide slide's
    row of tiles outgrows the reader's cache)."""
    row, col = divmod(index, cols)
    return row * stride // BAND_PX, col, row


def cell_tissue(mask: Array, shape: tuple[int, int], rows: int, cols: int, stride: int) -> Array:
    """Fraction of tissue in each cell, from a mask of the whole image at any lower resolution."""
    height, width = shape
    ys = np.minimum((np.arange(mask.shape[0]) + 0.5) * height / mask.shape[0] // stride, rows - 1).astype(int)
    xs = np.minimum((np.arange(mask.shape[1]) + 0.5) * width / mask.shape[1] // stride, cols - 1).astype(int)
    cells = ys[:, None] * cols + xs[None, :]
    tissue = np.bincount(cells.ravel(), weights=mask.ravel().astype(np.float64), minlength=rows * cols)
    counts = np.bincount(cells.ravel(), minlength=rows * cols)
    # cells smaller than the mask's pixels get no sample of their own: use the nearest mask pixel
    fraction = np.where(counts > 0, tissue / np.maximum(counts, 1), np.nan).reshape(rows, cols)
    if np.isnan(fraction).any():
        ry = np.minimum(((np.arange(rows) + 0.5) * stride * mask.shape[0] / height).astype(int), mask.shape[0] - 1)
        rx = np.minimum(((np.arange(cols) + 0.5) * stride * mask.shape[1] / width).astype(int), mask.shape[1] - 1)
        nearest = mask[np.ix_(ry, rx)].astype(np.float64)
        fraction = np.where(np.isnan(fraction), nearest, fraction)
    return fraction


def colour_map(values: Array) -> Array:
    """[0, 1] -> RGB uint8 from blue through white to red (a diverging map: 0.5 is white)."""
    v = np.clip(values, 0, 1)[..., None]
    blue, white, red = (np.array(c, np.float32) for c in ((59, 76, 192), (247, 247, 247), (180, 4, 38)))
    rgb = np.where(v < 0.5, blue + (white - blue) * (v * 2), white + (red - white) * (v * 2 - 1))
    return np.asarray(rgb, np.uint8)


def overlay(thumb: Array, scores: Array, alpha: float = 0.5) -> Array:
    """The positive-class heat map (NaN = not classified) blended onto an RGB thumbnail."""
    rgb = np.repeat(thumb, 3, axis=2) if thumb.shape[2] == 1 else thumb[:, :, :3]
    if rgb.dtype != np.uint8:
        top = max(float(np.percentile(rgb, 99.5)), 1.0)
        rgb = np.clip(rgb / top * 255, 0, 255).astype(np.uint8)
    ys = np.minimum(np.arange(rgb.shape[0]) * scores.shape[0] // rgb.shape[0], scores.shape[0] - 1)
    xs = np.minimum(np.arange(rgb.shape[1]) * scores.shape[1] // rgb.shape[1], scores.shape[1] - 1)
    cells = scores[np.ix_(ys, xs)]
    shown = ~np.isnan(cells)
    blended = rgb.astype(np.float32)
    blended[shown] = (1 - alpha) * blended[shown] + alpha * colour_map(cells[shown])
    return blended.astype(np.uint8)


def _write_csv(path: Path, scores: Array, tissue: Array | None, stride: int, patch: int,
               names: list[str]) -> None:
    with atomic_output(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "col", "y", "x", "size", "tissue_fraction", "predicted", *names])
        for row, col in zip(*np.nonzero(~np.isnan(scores[..., 0])), strict=True):
            box = patch_box(int(row), int(col), stride, patch)
            values = scores[row, col]
            fraction = "" if tissue is None else f"{tissue[row, col]:.3f}"
            writer.writerow([row, col, box.y0, box.x0, patch, fraction, names[int(np.argmax(values))],
                             *(f"{v:.6f}" for v in values)])


def classify_image(client: Client, manifest: manifest_pb2.ModelManifest, input_path: Path, output_path: Path,
                   options: ConvertOptions, *, progress: Progress | None = None,
                   description: str | None = None) -> ConvertResult:
    """Heat map, overlay and CSV for one image; the heat map TIFF is written last, so its presence means
    all three are complete."""
    import tifffile
    from PIL import Image

    started = time.perf_counter()
    patch = manifest.tiling.tile_size
    stride = options.stride or patch
    if stride <= 0:
        raise InvalidArgument(f"stride {stride} must be positive")
    classes = manifest.outputs[0].channels
    names = list(manifest.class_names) or [f"class {k}" for k in range(classes)]
    image = open_image(input_path, options.level)
    try:
        to_model = check_compatible(manifest, image, options.channels)  # type: ignore[arg-type]  # "gray": the pipeline's own change
        height, width, _ = image.shape
        rows, cols = -(-height // stride), -(-width // stride)
        view = overview(input_path, options.level, OVERLAY_EDGE)
        tissue = cell_tissue(tissue_mask(view), (height, width), rows, cols, stride) if options.tissue_only else None
        wanted = sorted((i for i in range(rows * cols) if tissue is None or tissue.flat[i] >= options.min_tissue),
                        key=functools.partial(band_order, cols=cols, stride=stride))
        parameters = image_parameters(manifest, input_path, options.level, list(options.channels))  # type: ignore[arg-type]  # "gray": the pipeline's own change

        def read_patch(index: int) -> Array:
            box = patch_box(*divmod(index, cols), stride, patch)
            return np.ascontiguousarray(to_model(read_reflected(image, box)))

        scores = np.full((rows, cols, classes), np.nan, np.float32)
        replies = stream_with_retries(client, manifest.name, wanted, read_patch, version=manifest.version,
                                      window=options.window, policy=options.retry, parameters=parameters,
                                      tile_deadline_ms=options.tile_deadline_ms)
        with contextlib.closing(replies):
            for done, reply in enumerate(replies, start=1):
                scores[divmod(reply.id, cols)] = np.asarray(reply.outputs[0], np.float32).reshape(-1)
                if progress:
                    progress(done, len(wanted))
    finally:
        image.close()
    heat_path, overlay_path, csv_path = heatmap_paths(output_path)
    _write_csv(csv_path, scores, tissue, stride, patch, names)
    positive = scores[..., 1] if classes == 2 else np.nanmax(scores, axis=-1)
    with atomic_output(overlay_path) as tmp:
        Image.fromarray(overlay(view, positive)).save(tmp, format="PNG")
    with atomic_output(heat_path) as tmp:
        tifffile.imwrite(tmp, scores, photometric="minisblack", planarconfig="contig", compression="zlib",
                         description=description, metadata=None,
                         resolution=(1 / stride, 1 / stride))  # one heat-map pixel per `stride` input pixels
    return ConvertResult(input_path, output_path, (height, width, classes), len(wanted),
                         time.perf_counter() - started)
