"""Decoded TIFF tiles (zarr chunks) kept for the next reads that need them.

Neighbouring tiles with a halo, and classifier patches smaller than a TIFF tile, cover the same
stored tile again and again; without a cache each read decodes it anew (a 64 px patch grid over
512 px zlib tiles decoded every tile 64 times). The cache holds whole decoded chunks, least recently
used first out, within a fixed byte budget, so client memory stays independent of the image size.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
DEFAULT_BUDGET = 16 * 1024 * 1024


class ChunkCache:
    """Reads of (y, x) regions of an array stored in chunks, assembled from whole decoded chunks.

    `read_chunk(rows, cols)` decodes the chunk spanning those slices (all other axes whole);
    `y_axis` and `x_axis` say where rows and columns are in that array.
    """

    def __init__(self, read_chunk: Callable[[slice, slice], Array], shape: tuple[int, ...], chunks: tuple[int, ...],
                 y_axis: int, x_axis: int, budget: int = DEFAULT_BUDGET) -> None:
        self._read_chunk = read_chunk
        self._shape = shape
        self._y_axis, self._x_axis = y_axis, x_axis
        self._chunk_rows, self._chunk_cols = chunks[y_axis], chunks[x_axis]
        self._budget = budget
        self._chunks: collections.OrderedDict[tuple[int, int], Array] = collections.OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self.decoded = 0  # chunks decoded into the cache so far: what a test or a benchmark reads

    def covers(self, y0: int, y1: int, x0: int, x1: int) -> tuple[range, range]:
        return (range(y0 // self._chunk_rows, -(-y1 // self._chunk_rows)),
                range(x0 // self._chunk_cols, -(-x1 // self._chunk_cols)))

    def worth_caching(self, y0: int, y1: int, x0: int, x1: int, itemsize_per_pixel: int) -> bool:
        """Reads that cut chunks leave parts of them for the next reads. A read of whole chunks (tiles
        aligned with the file's) has nothing to leave, and one bigger than the budget would only flush it."""
        height, width = self._shape[self._y_axis], self._shape[self._x_axis]
        if (y0 % self._chunk_rows == 0 and (y1 % self._chunk_rows == 0 or y1 == height)
                and x0 % self._chunk_cols == 0 and (x1 % self._chunk_cols == 0 or x1 == width)):
            return False
        rows, cols = self.covers(y0, y1, x0, x1)
        return len(rows) * len(cols) * self._chunk_rows * self._chunk_cols * itemsize_per_pixel <= self._budget // 4

    def read(self, y0: int, y1: int, x0: int, x1: int, keep: bool = True) -> Array:
        """The region, from cached chunks where it can; `keep=False` decodes what it needs without caching
        (a read of whole chunks leaves nothing for later reads)."""
        rows, cols = self.covers(y0, y1, x0, x1)
        out: Array | None = None
        for row in rows:
            for col in cols:
                chunk = self._chunk(row, col) if keep else self._read_chunk(*self._slices(row, col))
                cy, cx = row * self._chunk_rows, col * self._chunk_cols
                src = [slice(None)] * chunk.ndim
                dst = [slice(None)] * chunk.ndim
                src[self._y_axis] = slice(max(y0, cy) - cy, min(y1, cy + self._chunk_rows) - cy)
                src[self._x_axis] = slice(max(x0, cx) - cx, min(x1, cx + self._chunk_cols) - cx)
                dst[self._y_axis] = slice(max(y0, cy) - y0, min(y1, cy + self._chunk_rows) - y0)
                dst[self._x_axis] = slice(max(x0, cx) - x0, min(x1, cx + self._chunk_cols) - x0)
                if out is None:
                    shape = list(chunk.shape)
                    shape[self._y_axis], shape[self._x_axis] = y1 - y0, x1 - x0
                    out = np.empty(shape, chunk.dtype)
                out[tuple(dst)] = chunk[tuple(src)]
        assert out is not None, "an empty region has no chunks"
        return out

    def _slices(self, row: int, col: int) -> tuple[slice, slice]:
        return (slice(row * self._chunk_rows, min((row + 1) * self._chunk_rows, self._shape[self._y_axis])),
                slice(col * self._chunk_cols, min((col + 1) * self._chunk_cols, self._shape[self._x_axis])))

    def _chunk(self, row: int, col: int) -> Array:
        key = (row, col)
        with self._lock:
            chunk = self._chunks.get(key)
            if chunk is not None:
                self._chunks.move_to_end(key)
                return chunk
        chunk = self._read_chunk(*self._slices(row, col))
        with self._lock:
            self.decoded += 1
            if key not in self._chunks:
                self._chunks[key] = chunk
                self._held += chunk.nbytes
            while self._held > self._budget and len(self._chunks) > 1:
                _, dropped = self._chunks.popitem(last=False)
                self._held -= dropped.nbytes
        return chunk
