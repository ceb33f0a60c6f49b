"""Cheap whole-image views for image-global decisions (percentiles, tissue masks): the smallest pyramid
level that is still detailed enough, subsampled by regular reads, so memory and time stay small even
for gigapixel slides. `OpenedImage.overview` puts these together for an opened input."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.reader import ImageSource
from tilecast.client.tiling import Box

Array = npt.NDArray[Any]
BLOCK = 1024  # read this many pixels square at a time


def coarse_level(tif: Any, level: int, min_edge: int) -> int:
    """The coarsest pyramid level of an open TIFF at or below `level` whose shorter edge is still >= min_edge."""
    levels = tif.series[0].levels
    edges = [min(int(lv.shape[i]) for i in range(len(lv.shape)) if lv.axes[i] in "YX") for lv in levels]
    chosen = level
    for k in range(level, len(edges)):
        if edges[k] >= min_edge:
            chosen = k
    return chosen


def subsample(image: ImageSource, max_edge: int) -> Array:
    """Every k-th pixel of an image (longer edge at most max_edge), read block by block."""
    height, width, _ = image.shape
    step = max(1, -(-max(height, width) // max_edge))
    block = step * max(1, BLOCK // step)  # a multiple of step, so the sampled grid stays regular
    rows = []
    for y in range(0, height, block):
        band = [image.read(Box(y, min(y + block, height), x, min(x + block, width)))[::step, ::step]
                for x in range(0, width, block)]
        rows.append(np.concatenate(band, axis=1))
    return np.concatenate(rows, axis=0)
