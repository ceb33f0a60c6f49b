"""Through a real server, a no-op model gives every image back exactly: 8- and 16-bit, any size and tiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import local_settings
from tilecast.client import Client, ConvertOptions, convert_image
from tilecast.export.identity import write_identity_model
from tilecast.server.app import ServerThread


@pytest.mark.parametrize(("shape", "dtype", "tile"), [((1, 1, 3), np.uint8, 16), ((333, 517, 3), np.uint8, 128),
                                                       ((250, 90, 1), np.uint16, 64)])
def test_identity_model_returns_the_input(tmp_path: Path, shape: tuple[int, int, int], dtype: type,
                                          tile: int) -> None:
    channels = shape[2]
    write_identity_model(tmp_path / "models", "noop", channels=channels, dtype=np.dtype(dtype).name)
    image = np.random.default_rng(sum(shape)).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, image if channels > 1 else image[:, :, 0], photometric="rgb" if channels == 3 else None)
    with ServerThread(local_settings(tmp_path / "models")) as server, Client(f"127.0.0.1:{server.port}") as client:
        convert_image(client, "noop", source, target, ConvertOptions(tile_size=tile, window=5))
    written = tifffile.imread(target)
    np.testing.assert_array_equal(written.reshape(shape), image)
    assert written.dtype == dtype


@pytest.mark.parametrize("window", ["gaussian", "linear"])
def test_blend_stitching_of_an_identity_model_returns_the_input(tmp_path: Path, window: str) -> None:
    write_identity_model(tmp_path / "models", "noop", channels=3, dtype="uint8")
    image = np.random.default_rng(5).integers(0, 256, (301, 177, 3), dtype=np.uint8)
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, image, photometric="rgb")
    options = ConvertOptions(tile_size=64, overlap=32, stitch="blend", blend_window=window, window=4)  # type: ignore[arg-type]
    with ServerThread(local_settings(tmp_path / "models")) as server, Client(f"127.0.0.1:{server.port}") as client:
        result = convert_image(client, "noop", source, target, options)
    assert result.tiles == 5 * 3
    np.testing.assert_array_equal(tifffile.imread(target), image)
