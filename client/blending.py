"""Blend stitching: overlapping tiles averaged with gaussian or linear weights, in bounded memory.

For models whose receptive field is larger than any affordable halo (or that have image-global
operations), cropping each tile's core leaves seams; averaging overlapping tiles, weighted towards
each tile's centre, hides them (the scheme of MONAI's sliding-window inference and cellpose).

Geometry: tiles are `extent = tile_size + overlap` pixels square at a stride of `tile_size`, so tile
(i, j) covers [i*S, i*S + extent) x [j*S, j*S + extent) (past the image, the reader reflects) and
its right and bottom `overlap` pixels are shared with the next tiles. Output *blocks* are the
S x S squares [i*S, (i+1)*S) x [j*S, (j+1)*S): block (i, j) receives contributions only from tiles
(i-1..i, j-1..j), so it is final as soon as tile (i, j) arrives in row-major order. What is still
open at that moment is an `overlap`-high strip below the current tile row and an `overlap`-wide strip
to the right of the current tile: memory is overlap x width x channels floats, whatever the height.

The weights are separable, w(y, x) = w(y) * w(x), so the sum of weights under every pixel is a
product of two 1-D sums computed up front; only weighted values are accumulated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tilecast.client.tiling import Box

Array = npt.NDArray[Any]
Window = Literal["gaussian", "linear"]
WINDOWS: tuple[Window, ...] = ("gaussian", "linear")
GAUSSIAN_SIGMA = 0.125  # of the tile extent, as in MONAI's sliding_window_inference (sigma_scale)


@dataclass(frozen=True)
class BlendGrid:
    height: int
    width: int
    tile_size: int  # the stride, and the edge of the written blocks
    overlap: int  # pixels shared by neighbouring tiles

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image of {self.height}x{self.width} pixels has nothing to tile")
        if self.tile_size < 1 or not 0 <= self.overlap <= self.tile_size:
            raise ValueError(f"blend overlap {self.overlap} must lie between 0 and the tile size {self.tile_size}")

    @property
    def extent(self) -> int:
        return self.tile_size + self.overlap

    @property
    def rows(self) -> int:
        return -(-self.height // self.tile_size)

    @property
    def cols(self) -> int:
        return -(-self.width // self.tile_size)

    def __len__(self) -> int:
        return self.rows * self.cols

    def source(self, index: int) -> Box:
        """Image pixels tile `index` (row-major) shows the model; may reach past the image."""
        row, col = divmod(index, self.cols)
        y0, x0 = row * self.tile_size, col * self.tile_size
        return Box(y0, y0 + self.extent, x0, x0 + self.extent)

    def block(self, index: int) -> Box:
        """Image pixels that are final once tile `index` has been added."""
        row, col = divmod(index, self.cols)
        y0, x0 = row * self.tile_size, col * self.tile_size
        return Box(y0, min(y0 + self.tile_size, self.height), x0, min(x0 + self.tile_size, self.width))


def window_1d(extent: int, overlap: int, kind: Window) -> npt.NDArray[np.float64]:
    """Per-position weight along one tile edge (always > 0, so every pixel has some weight).

    `linear` ramps up over the overlap and is flat inside, so two neighbours' weights in their shared
    strip add up to exactly one; `gaussian` is centred with sigma = 0.125 x extent.
    """
    k = np.arange(extent, dtype=np.float64)
    if kind == "linear":
        ramp = (np.minimum(k, extent - 1 - k) + 1) / (overlap + 1)
        return np.minimum(ramp, 1.0)
    if kind == "gaussian":
        sigma = GAUSSIAN_SIGMA * extent
        return np.maximum(np.exp(-0.5 * ((k - (extent - 1) / 2) / sigma) ** 2), 1e-6)
    raise ValueError(f"blend window {kind!r} is not one of {', '.join(WINDOWS)}")


def weight_sums(grid: BlendGrid, kind: Window) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Summed weights of all tiles along y (length rows*S + overlap) and x; their outer product is the
    total weight under each pixel."""
    w = window_1d(grid.extent, grid.overlap, kind)

    def along(count: int) -> npt.NDArray[np.float64]:
        total = np.zeros(count * grid.tile_size + grid.overlap)
        for i in range(count):
            total[i * grid.tile_size:i * grid.tile_size + grid.extent] += w
        return total

    return along(grid.rows), along(grid.cols)


def cast_to(values: npt.NDArray[np.float32], dtype: np.dtype[Any]) -> Array:
    """Blended values in an output dtype: integers rounded to nearest and clipped to the dtype's range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


class BlendStitcher:
    """Adds tile outputs in row-major order; each add returns its finished block as float32.

    The caller gives every tile, in order, each an (extent, extent, C) array.
    """

    def __init__(self, grid: BlendGrid, channels: int, kind: Window = "gaussian") -> None:
        self.grid = grid
        s, o = grid.tile_size, grid.overlap
        w = window_1d(grid.extent, o, kind)
        self._weights = np.outer(w, w).astype(np.float32)[:, :, None]
        sum_y, sum_x = weight_sums(grid, kind)
        self._sum_y = sum_y.astype(np.float32)
        self._sum_x = sum_x.astype(np.float32)
        # Contributions of the previous tile row to the strip below it, and of the previous tile to its right.
        self._below = np.zeros((o, grid.cols * s, channels), np.float32)
        self._right = np.zeros((grid.extent, o, channels), np.float32)
        self._next = 0

    def add(self, index: int, output: Array) -> npt.NDArray[np.float32]:
        grid, s, o = self.grid, self.grid.tile_size, self.grid.overlap
        if index != self._next:
            raise ValueError(f"blend stitching needs tiles in order: got {index}, expected {self._next}")
        if output.shape[:2] != (grid.extent, grid.extent):
            raise ValueError(f"tile {index}: output is {output.shape[:2]}, expected {grid.extent}x{grid.extent}")
        self._next += 1
        row, col = divmod(index, grid.cols)
        acc = output.astype(np.float32)
        acc *= self._weights  # in place: this runs once per tile on the client's main thread
        x0 = col * s
        if o:
            if row:  # the tile row above reached into this tile's top strip
                acc[:o, :s] += self._below[:, x0:x0 + s]
            if col:  # the tile to the left reached into this tile's left strip
                acc[:, :o] += self._right
            # Hand on what this tile (with its left neighbour) gives to the next row and the next tile;
            # the slice of _below just read is overwritten, as no later tile of this row reads it.
            self._below[:, x0:x0 + s] = acc[s:, :s]
            self._right = acc[:, s:].copy()
        block = grid.block(index)
        h, w = block.height, block.width
        block_values = acc[:h, :w]
        block_values /= self._sum_y[block.y0:block.y1, None, None]
        block_values /= self._sum_x[None, block.x0:block.x1, None]
        return block_values


def argmax_labels(probabilities: Array, dtype: np.dtype[Any]) -> Array:
    """Per-pixel class with the highest blended probability (ties: the lower class), as H x W x 1."""
    labels: Array = np.argmax(probabilities, axis=2).astype(dtype)
    return labels[:, :, None]
