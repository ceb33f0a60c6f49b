"""Models that need more than tiles: per-image percentile ranges in the stream header, 8-bit images into a
16-bit model, channels and z-planes chosen as model channels, and classifiers' heat maps with a tissue
mask, CSV and overlay. Real exporter, real server on loopback, real files."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tifffile
import torch
from PIL import Image

from tests.conftest import local_settings
from tests.export.nets import TinyClassifier, TinySegmenter
from tilecast.client import Client, convert_image
from tilecast.client.convert import ConvertOptions
from tilecast.client.heatmap import heatmap_paths
from tilecast.client.plan import cell_tissue
from tilecast.client.tissue import otsu_threshold, tissue_mask
from tilecast.export.onnx_export import ExportConfig, export_model
from tilecast.export.sources import LoadedModel
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.normalization import percentile_range
from tilecast.server.app import ServerThread

PERCENTILES = (1.0, 99.8)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("per-image") / "models"
    torch.manual_seed(0)
    segmenter = LoadedModel(TinySegmenter(2, 3), "segmenter", 2, 3, [0.0, 0.0], [1.0, 1.0], "tiny percentile",
                            percentiles=PERCENTILES, class_names=["background", "a", "b"])
    export_model(segmenter, ExportConfig(root, "percentile-seg", tile_size=64, max_size=512, input_dtype="uint16"))
    classifier = LoadedModel(TinyClassifier(3, 2), "classifier", 3, 2, [0.5] * 3, [0.25] * 3, "tiny classifier",
                             class_names=["sparse", "dense"])
    export_model(classifier, ExportConfig(root, "patches", tile_size=32, max_size=64))
    return root


@pytest.fixture(scope="module")
def client(repository: Path) -> Iterator[Client]:
    with ServerThread(local_settings(repository)) as server, Client(f"127.0.0.1:{server.port}", timeout=60) as c:
        yield c


def _whole_image_labels(repository: Path, image: np.ndarray) -> np.ndarray:
    low, high = percentile_range(image, *PERCENTILES)
    session = ort.InferenceSession(str(repository / "percentile-seg" / "1" / "model.onnx"))
    labels = session.run(None, {"image": image[None].astype(np.uint16), "channel_low": low[None],
                                "channel_high": high[None]})[0][0]  # size multiple 1: the whole image as it is
    return labels  # type: ignore[no-any-return]


def test_percentile_model_gets_the_whole_image_range_in_the_header(client: Client, repository: Path,
                                                                  tmp_path: Path) -> None:
    """Tiles of one image are scaled by the image's own percentiles (sent once), so the tiled result equals
    whole-image inference, 8-bit input included (cast exactly into the 16-bit model)."""
    rng = np.random.default_rng(0)
    planes = np.zeros((130, 150, 4), np.uint16)  # Z planes 0..3; the model takes planes 3 and 1
    planes[..., 1] = rng.integers(100, 900, (130, 150))
    planes[..., 3] = rng.integers(0, 60000, (130, 150))
    tifffile.imwrite(tmp_path / "stack.ome.tif", np.moveaxis(planes, 2, 0), photometric="minisblack",
                     metadata={"axes": "ZYX"})
    options = ConvertOptions(channels=(3, 1))
    convert_image(client, "percentile-seg", tmp_path / "stack.ome.tif", tmp_path / "labels.tif", options)
    got = tifffile.imread(tmp_path / "labels.tif")
    np.testing.assert_array_equal(got, _whole_image_labels(repository, planes[..., [3, 1]])[..., 0])

    eight_bit = rng.integers(0, 255, (70, 90, 2), np.uint8)
    tifffile.imwrite(tmp_path / "small.tif", eight_bit, photometric="minisblack", planarconfig="contig")
    convert_image(client, "percentile-seg", tmp_path / "small.tif", tmp_path / "small-labels.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "small-labels.tif"),
                                  _whole_image_labels(repository, eight_bit.astype(np.uint16))[..., 0])


def test_channel_choice_mistakes_are_clear(client: Client, tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "three.tif", np.zeros((40, 40, 3), np.uint16), photometric="minisblack",
                     planarconfig="contig")
    with pytest.raises(InvalidArgument, match=r"has 3 channel\(s\); model percentile-seg takes 2"):
        convert_image(client, "percentile-seg", tmp_path / "three.tif", tmp_path / "x.tif")
    with pytest.raises(InvalidArgument, match=r"\[5\] do not exist"):
        convert_image(client, "percentile-seg", tmp_path / "three.tif", tmp_path / "x.tif",
                      ConvertOptions(channels=(0, 5)))
    assert not (tmp_path / "x.tif").exists()


def _slide(height: int, width: int) -> np.ndarray:
    """Grey glass with a pink tissue rectangle in its left half."""
    slide = np.full((height, width, 3), 235, np.uint8)
    rng = np.random.default_rng(1)
    stain = np.array([180, 90, 150])
    slide[20:height - 20, 10:width // 2] = rng.integers(0, 40, (height - 40, width // 2 - 10, 3)) + stain
    return slide


def test_classifier_heat_map_matches_patchwise_inference(client: Client, repository: Path,
                                                          tmp_path: Path) -> None:
    slide = _slide(150, 200)
    tifffile.imwrite(tmp_path / "slide.tif", slide, tile=(64, 64))
    result = convert_image(client, "patches", tmp_path / "slide.tif", tmp_path / "heat.tif",
                           ConvertOptions(stride=32))
    heat_path, overlay_path, csv_path = heatmap_paths(tmp_path / "heat.tif")
    heat = tifffile.imread(heat_path)
    assert heat.shape == (5, 7, 2) and result.tiles == 35
    np.testing.assert_allclose(heat.sum(axis=-1), 1, atol=1e-5)
    session = ort.InferenceSession(str(repository / "patches" / "1" / "model.onnx"))
    # cell (1, 2) covers rows 32..63, cols 64..95: its patch is exactly that window
    expected = session.run(None, {"image": slide[None, 32:64, 64:96]})[0][0]
    np.testing.assert_allclose(heat[1, 2], expected, atol=1e-6)
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 35 and set(rows[0]) >= {"y", "x", "predicted", "sparse", "dense"}
    with Image.open(overlay_path) as preview:
        assert preview.size == (200, 150)


def test_tissue_mask_skips_background(client: Client, tmp_path: Path) -> None:
    slide = _slide(160, 256)
    tifffile.imwrite(tmp_path / "slide.tif", slide)
    mask = tissue_mask(slide)
    assert mask[20:140, 10:128].mean() > 0.95 and mask[:, 140:].mean() < 0.05
    result = convert_image(client, "patches", tmp_path / "slide.tif", tmp_path / "heat.tif",
                           ConvertOptions(tissue_only=True))
    heat = tifffile.imread(tmp_path / "heat.tif")
    classified = ~np.isnan(heat[..., 0])
    assert result.tiles == int(classified.sum())
    assert classified[:, :4].any() and not classified[:, 5:].any()  # tissue ends at x = 128 (cell 4)


def test_otsu_and_cell_fractions() -> None:
    values = np.concatenate([np.full(100, 0.1), np.full(300, 0.8)])
    assert 0.1 <= otsu_threshold(values) < 0.8
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # the top-left quarter of a 64 x 64 image
    fractions = cell_tissue(mask, (64, 64), 2, 2, 32)
    np.testing.assert_allclose(fractions, [[1, 0], [0, 0]])
    fine = cell_tissue(mask, (64, 64), 8, 8, 8)  # cells smaller than mask pixels take the nearest pixel
    assert fine[0, 0] == 1 and fine[7, 7] == 0


def test_heat_map_carries_the_input_pixel_size_times_the_stride(client: Client, tmp_path: Path) -> None:
    """QuPath and napari place a heat map by its resolution tags: 0.5 µm pixels x stride 32 = 16 µm cells."""
    from tilecast.client.metadata import read_metadata

    tifffile.imwrite(tmp_path / "slide.tif", _slide(128, 160), photometric="rgb",
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    convert_image(client, "patches", tmp_path / "slide.tif", tmp_path / "heat.tif", ConvertOptions(stride=32))
    with tifffile.TiffFile(tmp_path / "heat.tif") as tif:
        page = tif.pages[0]
        assert isinstance(page, tifffile.TiffPage)
        tags = page.tags
        assert tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        x_num, x_den = tags["XResolution"].value
        assert x_num / x_den == pytest.approx(1e4 / 16, rel=1e-4)
    assert read_metadata(tmp_path / "heat.tif").pixel_size_um == pytest.approx((16, 16), rel=1e-4)


def test_an_all_background_heat_map_is_reported(client: Client, tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "slide.tif", _slide(160, 256))
    tifffile.imwrite(tmp_path / "glass.tif", np.full((160, 256, 3), 242, np.uint8))  # no tissue anywhere
    result = convert_image(client, "patches", tmp_path / "glass.tif", tmp_path / "heat.tif",
                           ConvertOptions(tissue_only=True))
    assert result.tiles == 0
    assert np.isnan(tifffile.imread(tmp_path / "heat.tif")).all()
    assert len(result.warnings) == 1 and "--min-tissue" in result.warnings[0]
    ok = convert_image(client, "patches", tmp_path / "slide.tif", tmp_path / "heat2.tif",
                       ConvertOptions(tissue_only=True))
    assert ok.warnings == ()


def test_heat_map_outputs_appear_together_or_not_at_all(client: Client, tmp_path: Path) -> None:
    """The overlay cannot be renamed into place (a folder has its name): no CSV or heat map appears either."""
    tifffile.imwrite(tmp_path / "slide.tif", _slide(96, 96))
    heat_path, overlay_path, _ = heatmap_paths(tmp_path / "out" / "heat.tif")
    (overlay_path / "in-the-way").mkdir(parents=True)
    with pytest.raises(OSError):
        convert_image(client, "patches", tmp_path / "slide.tif", heat_path, ConvertOptions(stride=32))
    assert sorted(p.name for p in heat_path.parent.iterdir()) == [overlay_path.name]


def test_a_slide_is_opened_once_for_tissue_mask_overlay_and_patches(client: Client, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.client.test_pipeline import count_opens

    source = tmp_path / "slide.tif"
    tifffile.imwrite(source, _slide(160, 256), tile=(64, 64), photometric="rgb",
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    opened = count_opens(monkeypatch, source)
    result = convert_image(client, "patches", source, tmp_path / "heat.tif",
                           ConvertOptions(tissue_only=True, microns_per_pixel=0.5))
    assert result.tiles > 0
    assert len(opened) == 1, f"the slide was opened {len(opened)} times"


def test_resume_redoes_a_heat_map_whose_csv_is_gone(client: Client, tmp_path: Path) -> None:
    from tilecast.client.archive import Job, convert_many

    tifffile.imwrite(tmp_path / "slide.tif", _slide(96, 96))
    jobs = [Job(tmp_path / "slide.tif", tmp_path / "out" / "slide.tif")]
    options = ConvertOptions(stride=32)
    assert convert_many(client, "patches", jobs, options)[0].status == "converted"
    assert convert_many(client, "patches", jobs, options)[0].status == "skipped"
    heatmap_paths(jobs[0].output)[2].unlink()
    assert convert_many(client, "patches", jobs, options)[0].status == "converted"
    assert heatmap_paths(jobs[0].output)[2].is_file()
