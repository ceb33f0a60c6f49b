"""Pyramidal OME-TIFF output through a real server: every level right, pixel size and channel names
carried over, pyramid levels chosen by µm/px, resume recognises finished OME-TIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import local_settings
from tilecast.client import Client, ConvertOptions, convert_image
from tilecast.client.archive import already_done, convert_many, plan_jobs, stamp
from tilecast.client.metadata import level_for_resolution, read_metadata
from tilecast.client.pyramid import downsample, level_shapes
from tilecast.client.reader import ImageReadError
from tilecast.export.identity import write_identity_model
from tilecast.server.app import ServerThread

TESTDATA = Path(__file__).parents[3] / "shared" / "testdata"


def _halve(image: np.ndarray) -> np.ndarray:
    """Reference 2 x 2 mean with an odd edge averaged with itself."""
    padded = np.pad(image.astype(float), ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
    total = padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]
    halved: np.ndarray = np.rint(total / 4)
    return halved


def _convert(tmp_path: Path, channels: int, dtype: str, source: Path, target: Path, **options: object) -> None:
    write_identity_model(tmp_path / "models", "noop", channels=channels, dtype=dtype)
    with ServerThread(local_settings(tmp_path / "models")) as server, Client(f"127.0.0.1:{server.port}") as client:
        convert_image(client, "noop", source, target, ConvertOptions(window=4, **options),  # type: ignore[arg-type]
                      description=stamp("noop", 1, source))


def test_rgb_pyramid_levels_and_pixel_size(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (300, 470, 3), dtype=np.uint8)
    source, target = tmp_path / "slide.tif", tmp_path / "out.ome.tif"
    tifffile.imwrite(source, image, photometric="rgb", resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    _convert(tmp_path, 3, "uint8", source, target, tile_size=64)
    with tifffile.TiffFile(target) as tif:
        assert tif.is_ome
        levels = [level.asarray() for level in tif.series[0].levels]
    assert [lv.shape[:2] for lv in levels] == level_shapes(300, 470, 64) == [(300, 470), (150, 235), (75, 118),
                                                                             (38, 59)]
    np.testing.assert_array_equal(levels[0], image)
    expected = image
    for level in levels[1:]:
        expected = _halve(expected).astype(np.uint8)
        np.testing.assert_array_equal(level, expected)
    assert read_metadata(target).pixel_size_um == pytest.approx((0.25, 0.25))
    assert read_metadata(target, level=2).pixel_size_um == pytest.approx((0.25 * 300 / 75, 0.25 * 470 / 118))
    assert level_for_resolution(target, 1.0) == 2
    assert already_done(target, "noop", 1, source)
    assert not list(tmp_path.glob(".*")), "no staged files are left behind"


def test_multichannel_16bit_is_stored_one_plane_per_named_channel(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 65535, (2, 140, 90), dtype=np.uint16)  # CYX
    source, target = tmp_path / "cells.ome.tif", tmp_path / "out" / "cells.ome.tif"
    tifffile.imwrite(source, image, metadata={"axes": "CYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65,
                                               "Channel": {"Name": ["DAPI", "GFP"]}})
    _convert(tmp_path, 2, "uint16", source, target, tile_size=64, compression="zstd")
    with tifffile.TiffFile(target) as tif:
        base = tif.series[0].levels[0].asarray()
        level1 = tif.series[0].levels[1].asarray()
    np.testing.assert_array_equal(base, image)
    np.testing.assert_array_equal(level1, np.moveaxis(_halve(np.moveaxis(image, 0, 2)), 2, 0))
    metadata = read_metadata(target)
    assert metadata.channel_names == ("DAPI", "GFP")
    assert metadata.pixel_size_um == pytest.approx((0.65, 0.65))


def test_bigtiff_output_keeps_the_pixel_size(tmp_path: Path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (50, 60), dtype=np.uint8)
    source, target = tmp_path / "a.tif", tmp_path / "a.out.tif"
    tifffile.imwrite(source, image, resolution=(25400 / 0.5, 25400 / 0.5), resolutionunit="INCH")
    _convert(tmp_path, 1, "uint8", source, target)
    assert read_metadata(target).pixel_size_um == pytest.approx((0.5, 0.5))


def test_label_levels_subsample_and_never_invent_classes() -> None:
    labels = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.uint8)[:, :, None]
    assert downsample(labels, labels=True)[:, :, 0].tolist() == [[1, 3], [7, 9]]
    assert downsample(labels, labels=False)[:, :, 0].tolist() == [[3, 4], [8, 9]]  # means 3, 4.5->4, 7.5->8, 9


def test_resolution_picks_a_level_of_a_real_slide_or_says_what_exists(tmp_path: Path) -> None:
    svs = TESTDATA / "aperio-small.svs"
    assert read_metadata(svs).pixel_size_um == pytest.approx((0.499, 0.499))
    assert level_for_resolution(svs, 0.5) == 0
    with pytest.raises(ImageReadError, match=r"no level near 2 µm/px \(level 0: 0.499"):
        level_for_resolution(svs, 2.0)
    plain = tmp_path / "plain.png"
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((4, 4), np.uint8))
    plain.write_bytes(b"")
    with pytest.raises(ImageReadError, match="does not record its pixel size"):
        level_for_resolution(tmp_path / "x.tif", 0.5)


def test_folders_convert_to_ome_tiff_and_resume(tmp_path: Path) -> None:
    write_identity_model(tmp_path / "models", "noop", channels=1, dtype="uint8")
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("a.tif", "sub/b.tif"):
        tifffile.imwrite(tmp_path / "in" / name, np.full((40, 40), 7, np.uint8))
    jobs = plan_jobs([str(tmp_path / "in")], tmp_path / "out", ".ome.tif")
    assert [j.output.relative_to(tmp_path / "out").as_posix() for j in jobs] == ["a.ome.tif", "sub/b.ome.tif"]
    with ServerThread(local_settings(tmp_path / "models")) as server, Client(f"127.0.0.1:{server.port}") as client:
        first = convert_many(client, "noop", jobs, ConvertOptions())
        again = convert_many(client, "noop", jobs, ConvertOptions())
    assert [o.status for o in first] == ["converted"] * 2
    assert [o.status for o in again] == ["skipped"] * 2
