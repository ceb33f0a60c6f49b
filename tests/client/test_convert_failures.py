"""A conversion that fails part-way leaves no output file, and says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import RGB_MODEL
from tilecast.client import Client, ConvertOptions, convert_image
from tilecast.client.reader import ImageReadError
from tilecast.proto.errors import InvalidArgument


def corrupt_tile(path: Path, index: int) -> None:
    """Overwrite the compressed bytes of one tile with garbage."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert isinstance(page, tifffile.TiffPage)
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = b"\xff" * count
    path.write_bytes(bytes(data))


def test_corrupt_region_midway_leaves_nothing_behind(tmp_path: Path, client: Client) -> None:
    image = np.random.default_rng(0).integers(0, 256, (768, 768, 3), dtype=np.uint8)
    source, target = tmp_path / "in.tif", tmp_path / "out" / "result.tif"
    tifffile.imwrite(source, image, tile=(128, 128), photometric="rgb", compression="zlib")
    corrupt_tile(source, 30)  # row 5 of 6: several output tiles are already written by then

    with pytest.raises(ImageReadError, match=r"cannot decode the region"):
        convert_image(client, RGB_MODEL, source, target, ConvertOptions(tile_size=128, window=4))

    assert list(target.parent.iterdir()) == [], "a partial or final output file was left behind"


def test_tile_override_beyond_model_limit_is_refused(tmp_path: Path, client: Client) -> None:
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    with pytest.raises(InvalidArgument, match="exceeds the model's largest input 1024"):
        convert_image(client, RGB_MODEL, source, tmp_path / "o.tif", ConvertOptions(tile_size=1024))
    assert not (tmp_path / "o.tif").exists()
