"""Readers return the pixels that were written, for each supported layout, and fail clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.conftest import SHARED_TESTDATA
from tilecast.client.reader import ImageReadError, TiffSource, open_image, read_reflected
from tilecast.client.tiling import Box


@pytest.mark.parametrize(
    ("shape", "dtype", "kwargs"),
    [
        ((300, 200, 3), np.uint8, {"photometric": "rgb", "tile": (64, 64)}),
        ((300, 200), np.uint16, {"photometric": "minisblack"}),
        ((300, 200, 3), np.uint8, {"photometric": "rgb", "rowsperstrip": 7, "compression": "zlib"}),
        ((4, 300, 200), np.uint16, {"photometric": "minisblack", "planarconfig": "separate"}),
    ],
    ids=["tiled-rgb", "gray16", "stripped-zlib", "planar-4ch"],
)
def test_tiff_regions(tmp_path: Path, shape: tuple[int, ...], dtype: type, kwargs: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, data, **kwargs)
    hwc = data.transpose(1, 2, 0) if len(shape) == 3 and shape[0] == 4 else data
    hwc = hwc if hwc.ndim == 3 else hwc[:, :, None]
    image = open_image(path)
    try:
        assert image.shape == hwc.shape and image.dtype == dtype
        np.testing.assert_array_equal(image.read(Box(37, 251, 5, 199)), hwc[37:251, 5:199])
        np.testing.assert_array_equal(
            read_reflected(image, Box(280, 312, 180, 208)),
            np.pad(hwc, ((0, 12), (0, 8), (0, 0)), mode="reflect")[280:312, 180:208],
        )
        for _ in range(40):  # small reads come from decoded chunks kept between reads: same pixels
            y0, x0 = int(rng.integers(0, 290)), int(rng.integers(0, 190))
            box = Box(y0, min(300, y0 + int(rng.integers(1, 90))), x0, min(200, x0 + int(rng.integers(1, 90))))
            np.testing.assert_array_equal(image.read(box), hwc[box.y0:box.y1, box.x0:box.x1])
    finally:
        image.close()


def test_patches_smaller_than_a_stored_tile_decode_it_once(tmp_path: Path) -> None:
    data = np.random.default_rng(2).integers(0, 255, (512, 768, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "tiled.tif", data, photometric="rgb", tile=(128, 128), compression="zlib")
    image = open_image(tmp_path / "tiled.tif")
    try:
        assert isinstance(image, TiffSource)
        for y in range(0, 512, 32):  # a 32 px patch grid: 16 patches per stored tile
            for x in range(0, 768, 32):
                np.testing.assert_array_equal(image.read(Box(y, y + 32, x, x + 32)), data[y:y + 32, x:x + 32])
        assert image.chunks_decoded == 4 * 6
        np.testing.assert_array_equal(image.read(Box(128, 384, 0, 768)), data[128:384])  # whole stored tiles:
        assert image.chunks_decoded == 4 * 6  # read straight through, nothing cached
    finally:
        image.close()


def test_png(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(data).save(tmp_path / "a.png")
    image = open_image(tmp_path / "a.png")
    np.testing.assert_array_equal(image.read(Box(0, 50, 0, 70)), data)


@pytest.mark.skipif(not (SHARED_TESTDATA / "aperio-small.svs").is_file(), reason="shared test data absent")
def test_real_aperio_svs() -> None:
    image = open_image(SHARED_TESTDATA / "aperio-small.svs")
    try:
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
        region = image.read(Box(0, 16, 0, 16))
        assert region.shape == (16, 16, 3) and region.std() > 0  # JPEG-decoded real pixels
    finally:
        image.close()


def test_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        open_image(tmp_path / "missing.tif")
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + b"\x13" * 64)
    with pytest.raises(ImageReadError, match=r"corrupt\.tif"):
        open_image(tmp_path / "corrupt.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageReadError, match="unsupported file type"):
        open_image(tmp_path / "notes.txt")


def _levels(rng: np.random.Generator) -> list[np.ndarray]:
    base = rng.integers(0, 256, (512, 384, 3), dtype=np.uint8)
    return [base, np.ascontiguousarray(base[::2, ::2]), np.ascontiguousarray(base[::4, ::4])]


def test_ome_tiff_pyramid_levels(tmp_path: Path) -> None:
    levels = _levels(np.random.default_rng(3))
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(levels[0], subifds=2, tile=(128, 128), photometric="rgb", compression="zlib",
                  metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        for level in levels[1:]:
            tif.write(level, subfiletype=1, tile=(128, 128), photometric="rgb", compression="zlib")
    for index, expected in enumerate(levels):
        image = open_image(path, index)
        try:
            assert image.shape == expected.shape
            np.testing.assert_array_equal(image.read(Box(10, 90, 20, 95)), expected[10:90, 20:95])
        finally:
            image.close()
    with pytest.raises(ImageReadError, match="level 3 does not exist; it has 3"):
        open_image(path, 3)


def test_svs_like_pyramid_levels_and_resolution(tmp_path: Path) -> None:
    from tilecast.client.metadata import level_for_resolution, read_metadata

    levels = _levels(np.random.default_rng(4))
    path = tmp_path / "slide.svs"
    description = "Aperio Image Library v12.0.0\r\n384x512 [0,0 384x512] (128x128) JPEG/RGB Q=70|AppMag = 40|MPP = 0.25"
    with tifffile.TiffWriter(path) as tif:  # Aperio's layout: base, thumbnail (stripped), reduced levels
        tif.write(levels[0], tile=(128, 128), photometric="rgb", description=description, metadata=None)
        tif.write(levels[2][::2, ::2], photometric="rgb", description="Aperio Image Library v12.0.0\r\nthumb",
                  metadata=None)
        for level in levels[1:]:
            tif.write(level, tile=(128, 128), photometric="rgb", subfiletype=0, metadata=None,
                      description="Aperio Image Library v12.0.0\r\nlevel")
    image = open_image(path, 2)
    try:
        np.testing.assert_array_equal(image.read(Box(0, 128, 0, 96)), levels[2])
    finally:
        image.close()
    assert read_metadata(path, 1).pixel_size_um == pytest.approx((0.5, 0.5))
    assert level_for_resolution(path, 1.1) == 2
    # The progress rate counts the level --mpp picks, not --level's.
    from tilecast.client.cli import level_megapixels

    assert level_megapixels(path, 0, 1.1) == pytest.approx(levels[2].shape[0] * levels[2].shape[1] / 1e6)
    assert level_megapixels(path, 0, None) == pytest.approx(levels[0].shape[0] * levels[0].shape[1] / 1e6)
    assert level_megapixels(path, 0, 40.0) == 0.0  # no level near it: convert explains, the rate falls back
