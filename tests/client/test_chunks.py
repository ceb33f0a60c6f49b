"""Decoded chunks are kept within a byte budget, and heat-map patches visit them so each is decoded once."""

from __future__ import annotations

import functools

import numpy as np

from tilecast.client.chunks import ChunkCache
from tilecast.client.plan import BAND_PX, band_order


def cache_over(image: np.ndarray, chunk: int, budget_chunks: int) -> ChunkCache:
    def read_chunk(rows: slice, cols: slice) -> np.ndarray:
        return image[rows, cols].copy()

    budget = budget_chunks * chunk * chunk * image.shape[2] * image.itemsize
    return ChunkCache(read_chunk, image.shape, (chunk, chunk, image.shape[2]), 0, 1, budget=budget)


def decodes_for(order: list[int], image: np.ndarray, cols: int, patch: int) -> int:
    cache = cache_over(image, 128, budget_chunks=6)
    for index in order:
        row, col = divmod(index, cols)
        y, x = row * patch, col * patch
        np.testing.assert_array_equal(cache.read(y, y + patch, x, x + patch), image[y:y + patch, x:x + patch])
    return cache.decoded


def test_band_order_decodes_each_chunk_of_a_wide_image_once() -> None:
    image = np.random.default_rng(0).integers(0, 255, (2 * BAND_PX, 4096, 3), dtype=np.uint8)
    patch = 64
    rows, cols = image.shape[0] // patch, image.shape[1] // patch
    cells = list(range(rows * cols))
    banded = sorted(cells, key=functools.partial(band_order, cols=cols, stride=patch))
    assert sorted(banded) == cells
    chunks = (image.shape[0] // 128) * (image.shape[1] // 128)
    assert decodes_for(banded, image, cols, patch) == chunks
    # Row by row, a row of 32 chunks outgrows a 6-chunk budget: every chunk is decoded once per patch row in it.
    assert decodes_for(cells, image, cols, patch) == chunks * 128 // patch


def test_a_region_across_chunk_edges_and_the_image_edge() -> None:
    image = np.arange(300 * 200 * 2, dtype=np.uint16).reshape(300, 200, 2)
    cache = cache_over(image, 64, budget_chunks=2)
    for y0, y1, x0, x1 in ((0, 300, 0, 200), (63, 65, 63, 65), (250, 300, 190, 200), (10, 11, 5, 6)):
        np.testing.assert_array_equal(cache.read(y0, y1, x0, x1), image[y0:y1, x0:x1])
