"""Label images read in bands of full-width rows: a TIFF through its zarr store one band at a time, so a
32k x 32k label image costs one band of memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.reader import ImageSource, open_image
from tilecast.client.tiling import Box
from tilecast.proto.errors import InvalidArgument

Array = npt.NDArray[Any]
BAND_PIXELS = 1 << 20  # pixels per band: ~1M, so a band's working arrays stay near 10 MB each
ROW_MULTIPLE = 16  # tiled TIFFs store tiles of multiples of 16 rows; bands start on tile rows


class LabelImageError(InvalidArgument):
    """A file that cannot be scored as a label or class mask: missing, several channels, not integers."""


def open_labels(path: Path) -> ImageSource:
    """Open a label image (one channel of integers or booleans; 0 = background) for band reads."""
    source = open_image(path)
    channels = source.shape[2]
    kind = source.dtype.kind
    if channels != 1 or kind not in "biu":
        source.close()
        what = f"{channels} channels" if channels != 1 else f"{source.dtype} pixels"
        raise LabelImageError(f"{path}: not a label image ({what}); give one channel of integer ids, 0 = background")
    return source


def chunk_shape(source: ImageSource) -> tuple[int, int]:
    """(rows, cols) of the file's stored tiles or strips; reads aligned to them decode each chunk once."""
    height, width, _ = source.shape
    tif = getattr(source, "tif", None)
    if tif is None:
        return height, width  # decoded whole anyway (PNG)
    page = tif.series[0].levels[0].keyframe
    if page.is_tiled:
        return int(page.tilelength), int(page.tilewidth)
    return max(1, min(int(page.rowsperstrip or height), height)), width


def block_shape(source: ImageSource, rows: int | None = None) -> tuple[int, int]:
    """Rows and columns per block: `rows` x full width when given, else whole chunks, as many as fit in
    BAND_PIXELS (at least one)."""
    height, width, _ = source.shape
    if rows is not None:
        return max(1, rows), width
    chunk_rows, chunk_cols = chunk_shape(source)
    cols = max(chunk_cols, min(width, BAND_PIXELS // chunk_rows) // chunk_cols * chunk_cols)
    block_rows = max(chunk_rows, BAND_PIXELS // cols // chunk_rows * chunk_rows)
    return min(block_rows, height), min(cols, width)


def band_rows(width: int, rows: int | None = None) -> int:
    """Rows of a full-width band: `rows` when given, else as many as BAND_PIXELS allows (bands cut through
    stored tiles; the reader keeps the cut tiles for the next band)."""
    return max(1, rows) if rows else max(ROW_MULTIPLE, BAND_PIXELS // max(width, 1) // ROW_MULTIPLE * ROW_MULTIPLE)


def bands(source: ImageSource, rows: int | None = None) -> Iterator[tuple[int, Array]]:
    """(first row, 2-D band of full-width rows) from top to bottom."""
    height, width, _ = source.shape
    step = band_rows(width, rows)
    for y0 in range(0, height, step):
        yield y0, source.read(Box(y0, min(y0 + step, height), 0, width))[:, :, 0]


def paired_blocks(pred: ImageSource, truth: ImageSource, rows: int | None = None,
                  full_width: bool = False) -> Iterator[tuple[Array, Array]]:
    """The same blocks of two label images, which must be the same size: whole chunks of the prediction's
    file (or bands of full-width rows with `full_width`), row of blocks by row of blocks."""
    if pred.shape[:2] != truth.shape[:2]:
        raise LabelImageError(f"{pred.path} is {pred.shape[0]}x{pred.shape[1]} but {truth.path} is "
                              f"{truth.shape[0]}x{truth.shape[1]}: score images of the same size")
    height, width, _ = pred.shape
    step_y, step_x = block_shape(pred, rows)
    if full_width:
        step_y, step_x = band_rows(width, rows), width
    for y0 in range(0, height, step_y):
        for x0 in range(0, width, step_x):
            box = Box(y0, min(y0 + step_y, height), x0, min(x0 + step_x, width))
            yield pred.read(box)[:, :, 0], truth.read(box)[:, :, 0]


def checked_ids(band: Array, path: Path) -> Array:
    """A band of ids, unchanged (booleans as 0/1); negative ids or ids past 2**32 - 1 are refused (they are
    not labels). Ids are widened later, only where a pixel is labelled."""
    if band.dtype.kind == "b":
        return band.view(np.uint8)
    if band.size and (int(band.min()) < 0 or int(band.max()) >= 1 << 32):
        raise LabelImageError(f"{path}: ids must be 0 .. 2**32-1; found {int(band.min())} .. {int(band.max())}")
    return band
