"""Property tests for the tiler: cover every pixel once, stay aligned, reflect like NumPy."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tilecast.client.tiling import Grid, crop_core, reflect_indices

multiples = st.sampled_from([1, 2, 4, 8])


@st.composite
def grids(draw: st.DrawFn) -> Grid:
    m = draw(multiples)
    tile = m * draw(st.integers(1, 16))
    halo = m * draw(st.integers(0, 6))
    min_size = m * draw(st.integers(1, 4))
    return Grid(draw(st.integers(1, 300)), draw(st.integers(1, 300)), tile, halo, m, min_size)


@given(grids())
def test_cores_cover_every_pixel_exactly_once(grid: Grid) -> None:
    hits = np.zeros((grid.height, grid.width), np.int32)
    for tile in grid:
        hits[tile.core.y0:tile.core.y1, tile.core.x0:tile.core.x1] += 1
    assert (hits == 1).all()
    assert [t.index for t in grid] == list(range(len(grid)))


@given(grids())
def test_sources_are_aligned_and_hold_core_and_halo(grid: Grid) -> None:
    m = grid.size_multiple
    for tile in grid:
        s, c = tile.source, tile.core
        assert s.y0 % m == 0 and s.x0 % m == 0, "strided layers need sources on the size-multiple grid"
        assert s.height % m == 0 and s.width % m == 0
        assert s.height >= min(grid.min_size, grid.canvas_height)
        assert s.y0 >= 0 and s.y1 <= grid.canvas_height and s.x0 >= 0 and s.x1 <= grid.canvas_width
        # Every core pixel sees its full halo, except where the canvas ends (as whole-image inference would).
        assert s.y0 <= max(0, c.y0 - grid.halo) and s.y1 >= min(grid.canvas_height, c.y1 + grid.halo)
        assert s.x0 <= max(0, c.x0 - grid.halo) and s.x1 >= min(grid.canvas_width, c.x1 + grid.halo)


@given(grids(), st.integers(1, 4))
@settings(max_examples=50)
def test_identity_model_reproduces_the_input(grid: Grid, channels: int) -> None:
    rng = np.random.default_rng(grid.height * 1000 + grid.width)
    image = rng.integers(0, 65535, (grid.height, grid.width, channels), dtype=np.uint16)
    canvas = np.pad(image, ((0, grid.canvas_height - grid.height), (0, grid.canvas_width - grid.width), (0, 0)),
                    mode="reflect" if min(grid.height, grid.width) > 1 else "edge")
    out = np.zeros_like(image)
    for tile in grid:
        s = tile.source
        output = canvas[s.y0:s.y1, s.x0:s.x1]  # the identity model
        out[tile.core.y0:tile.core.y1, tile.core.x0:tile.core.x1] = crop_core(output, tile)
    np.testing.assert_array_equal(out, image)


@given(st.integers(2, 40), st.integers(0, 90), st.integers(0, 90))
def test_reflection_matches_numpy(size: int, before: int, after: int) -> None:
    values = np.arange(size)
    expected = np.pad(values, (before, after), mode="reflect")
    np.testing.assert_array_equal(values[reflect_indices(-before, size + after, size)], expected)


def test_single_pixel_axis_repeats_it() -> None:
    assert reflect_indices(0, 5, 1).tolist() == [0, 0, 0, 0, 0]
