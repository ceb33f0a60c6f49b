"""Cut an image into tiles with a halo of context, and map tile coordinates back (pure functions).

Coordinates: the *image* is H x W. The *canvas* is the image extended by reflection at the bottom
and right to a multiple of the model's size multiple (and to its minimum size): the region whole-
image inference would see. Each tile has a *core* (the pixels it is responsible for, clipped to
the image) and a *source* (the core grown by the halo, clipped to the canvas). Inside the canvas no
padding is invented: a tile at the image border gets the same border the whole image would, so crop
stitching reproduces whole-image inference exactly for networks without image-global operations.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Box:
    """A half-open rectangle [y0, y1) x [x0, x1)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def shifted(self, dy: int, dx: int) -> Box:
        return Box(self.y0 + dy, self.y1 + dy, self.x0 + dx, self.x1 + dx)


@dataclass(frozen=True)
class Tile:
    index: int  # row-major position in the grid, also its id on the wire
    row: int
    col: int
    core: Box  # image pixels this tile answers for
    source: Box  # canvas pixels sent to the model

    @property
    def core_in_source(self) -> Box:
        """Where the core lies inside the model's output for this tile."""
        return self.core.shifted(-self.source.y0, -self.source.x0)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Grid:
    height: int
    width: int
    tile_size: int
    halo: int
    size_multiple: int = 1
    min_size: int = 1

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image of {self.height}x{self.width} pixels has nothing to tile")
        m = self.size_multiple
        if m < 1 or self.tile_size < 1 or self.tile_size % m or self.halo < 0 or self.halo % m:
            raise ValueError(
                f"tile size {self.tile_size} and halo {self.halo} must be multiples of the size multiple {m}"
            )

    @property
    def canvas_height(self) -> int:
        return max(round_up(self.height, self.size_multiple), round_up(self.min_size, self.size_multiple))

    @property
    def canvas_width(self) -> int:
        return max(round_up(self.width, self.size_multiple), round_up(self.min_size, self.size_multiple))

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.tile_size)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.tile_size)

    def __len__(self) -> int:
        return self.rows * self.cols

    def _span(self, start: int, image_end: int, canvas_end: int) -> tuple[int, int, int, int]:
        """(core_start, core_end, source_start, source_end) along one axis."""
        core_end = min(start + self.tile_size, image_end)
        src_start = max(0, start - self.halo)
        src_end = min(canvas_end, start + self.tile_size + self.halo)
        need = round_up(self.min_size, self.size_multiple)
        if src_end - src_start < need:  # grow into the canvas interior: more context never hurts
            src_start = max(0, src_end - need)
            src_end = min(canvas_end, src_start + need)
        return start, core_end, src_start, src_end

    def tile(self, row: int, col: int) -> Tile:
        y0, y1, sy0, sy1 = self._span(row * self.tile_size, self.height, self.canvas_height)
        x0, x1, sx0, sx1 = self._span(col * self.tile_size, self.width, self.canvas_width)
        return Tile(row * self.cols + col, row, col, Box(y0, y1, x0, x1), Box(sy0, sy1, sx0, sx1))

    def __iter__(self) -> Iterator[Tile]:
        for row in range(self.rows):
            for col in range(self.cols):
                yield self.tile(row, col)


def tile_boxes(height: int, width: int, size: int) -> Iterator[Box]:
    """The row-major grid of size x size boxes over an image, edge boxes clipped (a tiled TIFF's layout)."""
    for y in range(0, height, size):
        for x in range(0, width, size):
            yield Box(y, min(y + size, height), x, min(x + size, width))


def reflect_indices(start: int, stop: int, size: int) -> npt.NDArray[np.intp]:
    """Source indices for positions start..stop-1 of an axis of `size`, reflected at both ends
    without repeating the edge pixel (NumPy's 'reflect' mode, any distance)."""
    positions = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(positions)
    period = 2 * (size - 1)
    folded = np.mod(positions, period)
    return np.where(folded < size, folded, period - folded).astype(np.intp)


def crop_core(output: npt.NDArray[np.generic], tile: Tile) -> npt.NDArray[np.generic]:
    """The part of a tile's model output that the tile answers for."""
    c = tile.core_in_source
    return output[c.y0:c.y1, c.x0:c.x1]
