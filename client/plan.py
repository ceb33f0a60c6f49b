"""Step 2 of a conversion, plan: which tiles there are, in which order they go, where each reads and where
its answer goes. Nothing else in the pipeline recomputes tile geometry.

Three plans: a crop grid (each tile's core cut from its output), a blend grid (overlapping tiles averaged)
and classifier cells (one patch per heat-map cell, in bands so neighbouring patches share decoded tiles).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tilecast.client.blending import WINDOWS, BlendGrid
from tilecast.client.options import STITCHES, ConvertOptions
from tilecast.client.tiling import Box, Grid, Tile
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.spec import ModelSpec

Array = npt.NDArray[Any]
BAND_PX = 512  # classifier patches go in bands this high: a common TIFF tile edge


class TilePlan(Protocol):
    """What the stream and the stitchers ask of any plan."""

    @property
    def ids(self) -> Sequence[int]:
        """Tile ids in the order they are sent and stitched."""
        ...

    def source(self, index: int) -> Box:
        """Image pixels tile `index` shows the model; may reach past the image (read by reflection)."""
        ...

    @property
    def pixel_outputs(self) -> bool:
        """Whether each answer is an image of the tile's size (else one vector of scores per tile)."""
        ...


@dataclass(frozen=True)
class CropPlan:
    grid: Grid
    pixel_outputs = True

    @property
    def ids(self) -> Sequence[int]:
        return range(len(self.grid))

    def tile(self, index: int) -> Tile:
        return self.grid.tile(*divmod(index, self.grid.cols))

    def source(self, index: int) -> Box:
        return self.tile(index).source


@dataclass(frozen=True)
class BlendPlan:
    grid: BlendGrid
    pixel_outputs = True

    @property
    def ids(self) -> Sequence[int]:
        return range(len(self.grid))

    def source(self, index: int) -> Box:
        return self.grid.source(index)


@dataclass(frozen=True)
class CellPlan:
    """One patch per heat-map cell of `stride` input pixels; `ids` skips cells without enough tissue."""

    rows: int
    cols: int
    stride: int
    patch: int
    ids: tuple[int, ...]
    tissue: Array | None = field(default=None, compare=False)  # tissue fraction per cell, if measured
    pixel_outputs = False

    def cell(self, index: int) -> tuple[int, int]:
        return divmod(index, self.cols)

    def source(self, index: int) -> Box:
        return patch_box(*self.cell(index), self.stride, self.patch)


Plan = CropPlan | BlendPlan | CellPlan


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


def crop_plan(spec: ModelSpec, height: int, width: int, options: ConvertOptions) -> CropPlan:
    """The crop grid for an image, from the manifest unless the options override it."""
    t = spec.tiling
    tile_size = options.tile_size or t.tile_size
    halo = t.halo if options.halo is None else options.halo
    if tile_size % 16 or tile_size % t.size_multiple:
        raise InvalidArgument(f"tile size {tile_size} must be a multiple of 16 and of {t.size_multiple}")
    if halo % t.size_multiple or halo < 0:
        raise InvalidArgument(f"halo {halo} must be a non-negative multiple of {t.size_multiple}")
    if tile_size + 2 * halo > t.max_size:
        raise InvalidArgument(
            f"tile size {tile_size} + 2 x halo {halo} exceeds the model's largest input {t.max_size}"
        )
    return CropPlan(Grid(height, width, tile_size, halo, t.size_multiple, t.min_size))


def uses_blend(spec: ModelSpec, options: ConvertOptions) -> bool:
    """Blend when asked, or (auto) when cropping cannot reproduce whole-image inference."""
    if options.stitch not in STITCHES:
        raise InvalidArgument(f"stitching {options.stitch!r} is not one of {', '.join(STITCHES)}")
    if options.stitch != "auto":
        return options.stitch == "blend"
    return not spec.crop_is_exact(options.halo)


def blend_plan(spec: ModelSpec, crop: Grid, options: ConvertOptions) -> BlendPlan:
    """The overlapping grid for blend stitching (same tile size and default halo as the checked crop grid),
    checked against what the model accepts."""
    t = spec.tiling
    overlap = 2 * crop.halo if options.overlap is None else options.overlap
    if options.blend_window not in WINDOWS:
        raise InvalidArgument(f"blend window {options.blend_window!r} is not one of {', '.join(WINDOWS)}")
    if overlap % t.size_multiple or not 0 <= overlap <= crop.tile_size:
        raise InvalidArgument(f"blend overlap {overlap} must be a multiple of {t.size_multiple} "
                              f"between 0 and the tile size {crop.tile_size}")
    if not t.min_size <= crop.tile_size + overlap <= t.max_size:
        raise InvalidArgument(f"tile size {crop.tile_size} + overlap {overlap} is outside the model's "
                              f"input range {t.min_size}..{t.max_size}")
    return BlendPlan(BlendGrid(crop.height, crop.width, crop.tile_size, overlap))


def cell_plan(spec: ModelSpec, height: int, width: int, options: ConvertOptions,
              tissue_mask: Callable[[], Array]) -> CellPlan:
    """Classifier cells; with `options.tissue_only`, only those whose tissue fraction (from
    `tissue_mask()`, a boolean mask of the whole image at any resolution) reaches `options.min_tissue`."""
    patch = spec.tile_size
    stride = options.stride or patch
    if stride <= 0:
        raise InvalidArgument(f"stride {stride} must be positive")
    rows, cols = -(-height // stride), -(-width // stride)
    tissue = cell_tissue(tissue_mask(), (height, width), rows, cols, stride) if options.tissue_only else None
    wanted = sorted((i for i in range(rows * cols) if tissue is None or tissue.flat[i] >= options.min_tissue),
                    key=functools.partial(band_order, cols=cols, stride=stride))
    return CellPlan(rows, cols, stride, patch, tuple(wanted), tissue)


def plan_tiles(spec: ModelSpec, height: int, width: int, options: ConvertOptions,
               tissue_mask: Callable[[], Array]) -> Plan:
    """The plan for one image of `height` x `width` pixels through the model `spec`."""
    if spec.is_classifier:
        return cell_plan(spec, height, width, options, tissue_mask)
    crop = crop_plan(spec, height, width, options)
    return blend_plan(spec, crop.grid, options) if uses_blend(spec, options) else crop
