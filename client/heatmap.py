"""Step 5 of a conversion, sink, for classifiers: a heat map (float32 TIFF, one channel per class, one
pixel per cell, at the input's pixel size x stride), a CSV of every classified patch, and a coloured
overlay on a thumbnail, committed together."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.metadata import PixelMetadata, resolution_tags
from tilecast.client.plan import CellPlan
from tilecast.client.writer import Staging, staged

Array = npt.NDArray[Any]
OVERLAY_EDGE = 1024


def heatmap_paths(output: Path) -> tuple[Path, Path, Path]:
    """The heat map TIFF, the overlay PNG and the CSV of patch scores."""
    stem = output.name.removesuffix(output.suffix)
    return output, output.with_name(f"{stem}.overlay.png"), output.with_name(f"{stem}.csv")


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


def heat_resolution(metadata: PixelMetadata, stride: int) -> dict[str, Any]:
    """Resolution tags of a heat map: one pixel per `stride` input pixels, in centimetres when the input's
    pixel size is known (so viewers overlay it at the right scale), else relative (unit NONE)."""
    tags = resolution_tags(metadata.scaled(stride, stride))
    return tags or {"resolution": (1 / stride, 1 / stride), "resolutionunit": "NONE"}


@dataclass(frozen=True)
class HeatMapSink:
    """Where a classifier's results go and what they carry."""

    output: Path
    plan: CellPlan
    class_names: list[str]
    metadata: PixelMetadata  # of the input level read

    def write(self, scores: Array, view: Array, stamp: str | None) -> None:
        """Heat map, overlay and CSV under temporary names, renamed together once all three are written."""
        import tifffile
        from PIL import Image

        heat_path, overlay_path, csv_path = heatmap_paths(self.output)
        with staged() as staging:
            self._write_csv(staging, csv_path, scores)
            positive = scores[..., 1] if scores.shape[-1] == 2 else scores.max(axis=-1)  # NaN cells stay NaN
            Image.fromarray(overlay(view, positive)).save(staging.temporary(overlay_path), format="PNG")
            tifffile.imwrite(staging.temporary(heat_path), scores, photometric="minisblack", planarconfig="contig",
                             compression="zlib", description=stamp, metadata=None,
                             **heat_resolution(self.metadata, self.plan.stride))

    def _write_csv(self, staging: Staging, path: Path, scores: Array) -> None:
        plan, names = self.plan, self.class_names
        with staging.temporary(path).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "col", "y", "x", "size", "tissue_fraction", "predicted", *names])
            for row, col in zip(*np.nonzero(~np.isnan(scores[..., 0])), strict=True):
                box = plan.source(int(row) * plan.cols + int(col))
                values = scores[row, col]
                fraction = "" if plan.tissue is None else f"{plan.tissue[row, col]:.3f}"
                writer.writerow([row, col, box.y0, box.x0, plan.patch, fraction, names[int(np.argmax(values))],
                                 *(f"{v:.6f}" for v in values)])


def empty_warnings(scores: Array, plan: CellPlan, min_tissue: float) -> tuple[str, ...]:
    """What to tell the user when no cell was classified."""
    if not np.isnan(scores).all():
        return ()
    if plan.tissue is not None:
        return (f"no cell had tissue >= {min_tissue:g}; the heat map is empty: lower --min-tissue or "
                "drop --tissue-only",)
    return ("no cell was classified; the heat map is empty",)
