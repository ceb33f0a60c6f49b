"""The whole flow: TIFF on disk -> client tiles -> StreamPredict on a real server -> stitched TIFF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tifffile

from tests.conftest import RGB_MODEL
from tilecast.client import Client, ConvertOptions, convert_image
from tilecast.server.app import ServerThread


def whole_image_inference(model_repository: Path, image: np.ndarray, multiple: int) -> np.ndarray:
    """The model run once on the whole image in-process (bottom/right reflected to the size multiple)."""
    height, width = image.shape[:2]
    pad = ((0, -height % multiple), (0, -width % multiple), (0, 0))
    padded = np.pad(image, pad, mode="reflect")
    session = ort.InferenceSession(str(model_repository / RGB_MODEL / "1" / "model.onnx"))
    return np.asarray(session.run(None, {"image": padded[None]})[0][0, :height, :width])


@pytest.mark.parametrize("shape", [(1000, 1500), (517, 263)])
def test_crop_stitching_is_bit_identical_to_whole_image(
    tmp_path: Path, model_repository: Path, server: ServerThread, client: Client, shape: tuple[int, int]
) -> None:
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, image, tile=(128, 128), photometric="rgb", compression="zlib")

    result = convert_image(client, RGB_MODEL, source, target, ConvertOptions(tile_size=256, window=8))

    stitched = tifffile.imread(target)
    expected = whole_image_inference(model_repository, image, multiple=4)
    assert stitched.shape == expected.shape == (*shape, 3)
    assert result.tiles == -(-shape[0] // 256) * -(-shape[1] // 256)
    mismatched = int((stitched != expected).sum())
    assert mismatched == 0, f"{mismatched} values differ from whole-image inference"
    with tifffile.TiffFile(target) as written:
        page = written.pages[0]
        assert isinstance(page, tifffile.TiffPage) and page.is_tiled and written.is_bigtiff
    assert not list(tmp_path.glob(".*partial*")), "temporary output left behind"


def test_halo_matters(tmp_path: Path, model_repository: Path, client: Client) -> None:
    """Without the measured halo the seams show: the exactness above is the halo's doing."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, image, photometric="rgb")
    convert_image(client, RGB_MODEL, source, target, ConvertOptions(tile_size=256, halo=0))
    assert (tifffile.imread(target) != whole_image_inference(model_repository, image, 4)).any()


def test_unary_predict_matches_in_process(model_repository: Path, client: Client) -> None:
    rng = np.random.default_rng(2)
    batch = rng.integers(0, 256, (3, 64, 96, 3), dtype=np.uint8)
    (outputs,) = client.predict(RGB_MODEL, batch)
    session = ort.InferenceSession(str(model_repository / RGB_MODEL / "1" / "model.onnx"))
    np.testing.assert_array_equal(outputs, session.run(None, {"image": batch})[0])


def test_stream_results_carry_their_ids(client: Client) -> None:
    rng = np.random.default_rng(3)
    tiles = {i: rng.integers(0, 256, (32 + 4 * (i % 3), 48, 3), dtype=np.uint8) for i in range(40)}
    replies = {reply.id: reply for reply in client.stream(RGB_MODEL, tiles.items(), window=6)}
    assert sorted(replies) == sorted(tiles)
    for tile_id, reply in replies.items():
        (expected,) = client.predict(RGB_MODEL, tiles[tile_id][None])
        np.testing.assert_array_equal(reply.outputs[0], expected[0])
        assert reply.version == 1 and reply.compute_us > 0 and 1 <= reply.batch_size <= 6
