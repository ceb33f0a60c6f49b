"""Property tests for blend stitching: weights sum to one, the streaming stitcher equals a whole-canvas
accumulation, an identity model gives the input back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilecast.client.blending import BlendGrid, BlendStitcher, Window, cast_to, weight_sums, window_1d
from tilecast.client.tiling import reflect_indices

windows = st.sampled_from(["gaussian", "linear"])


@st.composite
def blend_grids(draw: st.DrawFn) -> BlendGrid:
    tile = draw(st.integers(1, 24))
    return BlendGrid(draw(st.integers(1, 90)), draw(st.integers(1, 90)), tile, draw(st.integers(0, tile)))


def _stitch(grid: BlendGrid, outputs: list[np.ndarray], kind: Window) -> np.ndarray:
    stitcher = BlendStitcher(grid, outputs[0].shape[2], kind)
    image = np.full((grid.height, grid.width, outputs[0].shape[2]), np.nan, np.float32)
    for index, output in enumerate(outputs):
        b = grid.block(index)
        image[b.y0:b.y1, b.x0:b.x1] = stitcher.add(index, output)
    return image


@given(blend_grids(), windows)
def test_normalised_weights_sum_to_one(grid: BlendGrid, kind: Window) -> None:
    w = window_1d(grid.extent, grid.overlap, kind)
    sum_y, sum_x = weight_sums(grid, kind)
    covered = np.zeros((len(sum_y), len(sum_x)))
    for index in range(len(grid)):
        s = grid.source(index)
        covered[s.y0:s.y1, s.x0:s.x1] += np.outer(w, w) / np.outer(sum_y[s.y0:s.y1], sum_x[s.x0:s.x1])
    np.testing.assert_allclose(covered, 1.0, rtol=1e-12)


@given(blend_grids(), windows, st.integers(1, 3))
@settings(max_examples=60)
def test_streaming_stitcher_equals_whole_canvas_accumulation(grid: BlendGrid, kind: Window, channels: int) -> None:
    rng = np.random.default_rng(grid.height * 7919 + grid.width)
    outputs = [rng.random((grid.extent, grid.extent, channels), dtype=np.float32) for _ in range(len(grid))]
    w = np.outer(*(2 * [window_1d(grid.extent, grid.overlap, kind)]))[:, :, None]
    values = np.zeros((grid.rows * grid.tile_size + grid.overlap, grid.cols * grid.tile_size + grid.overlap,
                       channels))
    weights = np.zeros((*values.shape[:2], 1))
    for index, output in enumerate(outputs):
        s = grid.source(index)
        values[s.y0:s.y1, s.x0:s.x1] += output * w
        weights[s.y0:s.y1, s.x0:s.x1] += w
    expected = (values / weights)[:grid.height, :grid.width]
    np.testing.assert_allclose(_stitch(grid, outputs, kind), expected, rtol=2e-5, atol=2e-6)


@given(blend_grids(), windows)
@settings(max_examples=60)
def test_identity_model_gives_the_input_back(grid: BlendGrid, kind: Window) -> None:
    rng = np.random.default_rng(grid.height * 31 + grid.width)
    image = rng.integers(0, 256, (grid.height, grid.width, 3), dtype=np.uint8)
    outputs = []
    for index in range(len(grid)):
        s = grid.source(index)
        outputs.append(image[np.ix_(reflect_indices(s.y0, s.y1, grid.height), reflect_indices(s.x0, s.x1, grid.width))])
    np.testing.assert_array_equal(cast_to(_stitch(grid, outputs, kind), np.dtype(np.uint8)), image)


def test_overlap_is_averaged_across_the_seam() -> None:
    grid = BlendGrid(8, 4, tile_size=4, overlap=2)  # two tiles stacked, sharing rows 4 and 5
    ones, threes = np.ones((6, 6, 1), np.float32), np.full((6, 6, 1), 3, np.float32)
    stitched = _stitch(grid, [ones, threes], "linear")[:, 0, 0]
    # linear weights over the shared rows: 2/3, 1/3 for the first tile, then 1/3, 2/3
    np.testing.assert_allclose(stitched, [1, 1, 1, 1, 3 - 4 / 3, 3 - 2 / 3, 3, 3], rtol=1e-6)


def test_tiles_out_of_order_are_refused() -> None:
    stitcher = BlendStitcher(BlendGrid(8, 8, 4, 2), 1)
    with pytest.raises(ValueError, match="in order"):
        stitcher.add(1, np.zeros((6, 6, 1), np.float32))


def test_overlap_larger_than_the_tile_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap 40"):
        BlendGrid(100, 100, tile_size=32, overlap=40)


def test_integer_outputs_are_rounded_and_clipped() -> None:
    values = np.array([[[-3.0], [0.5], [1.5], [254.6], [300.0]]], np.float32)
    assert cast_to(values, np.dtype(np.uint8)).ravel().tolist() == [0, 0, 2, 255, 255]
