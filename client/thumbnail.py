"""Small previews of huge images, read band by band so memory stays bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.reader import open_image
from tilecast.client.tiling import Box

Array = npt.NDArray[Any]


def thumbnail(path: Path, max_edge: int) -> Array:
    """Every k-th pixel of an image (k chosen so the longer edge is at most max_edge), HWC."""
    image = open_image(path)
    try:
        height, width, _ = image.shape
        step = max(1, -(-max(height, width) // max_edge))
        band = step * max(1, 1024 // step)
        rows = [image.read(Box(y, min(y + band, height), 0, width))[::step, ::step]
                for y in range(0, height, band)]
    finally:
        image.close()
    return np.concatenate(rows, axis=0)


def side_by_side(left: Array, right: Array, gap: int = 8) -> Array:
    """Two HWC uint8 images next to each other on white, grayscale promoted to RGB."""
    def rgb(a: Array) -> Array:
        return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[:, :, :3]

    left, right = rgb(left), rgb(right)
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap:] = right
    return canvas
