"""The bundled repository (models/) validates, serves, and the README's demo runs on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

from tests.conftest import REPO_ROOT, local_settings
from tilecast.client import Client, convert_image
from tilecast.proto import manifest as manifest_io
from tilecast.proto.v1 import manifest_pb2
from tilecast.server.app import ServerThread

BUNDLED = REPO_ROOT / "models"


def test_bundled_generator_manifest_is_complete() -> None:
    manifest = manifest_io.load_version(BUNDLED / "ihc-colorize" / "1")
    assert manifest.kind == manifest_pb2.MODEL_KIND_GENERATOR
    assert (manifest.inputs[0].channels, manifest.outputs[0].channels) == (1, 3)
    assert manifest.provenance.command == "bash scripts/build_models.sh"
    assert manifest.provenance.metrics["val_psnr_db"] > 20
    assert manifest.provenance.parity["fp32_core_max_abs_diff"] <= 1e-4
    assert manifest.provenance.parity["int_max_abs_diff"] <= 1
    assert manifest.provenance.parity["int_fraction_differing"] <= 1e-3
    assert not manifest.tiling.has_global_ops
    assert (BUNDLED / "ihc-colorize" / "1" / "model.onnx").stat().st_size < 10 * 1024 * 1024


def test_bundled_generator_colours_a_gray_image(tmp_path: Path) -> None:
    from tilecast.training.data.samples import ihc_image, to_gray

    rgb = ihc_image()[:300, :200]
    tifffile.imwrite(tmp_path / "gray.tif", to_gray(rgb)[:, :, 0])
    with ServerThread(local_settings(BUNDLED)) as server, \
            Client(f"127.0.0.1:{server.port}") as client:
        convert_image(client, "ihc-colorize", tmp_path / "gray.tif", tmp_path / "out.tif")
    colour = tifffile.imread(tmp_path / "out.tif").astype(np.float32)
    assert colour.shape == (300, 200, 3)
    # Stained tissue is coloured, not gray: the channels differ, and the result is close to the real stain.
    assert np.abs(colour[..., 0] - colour[..., 2]).mean() > 10
    assert np.abs(colour - rgb).mean() < 20


def test_rgb_slide_into_a_one_channel_model_is_turned_grey_on_request(tmp_path: Path) -> None:
    """An RGB slide into the 1-channel colourisation model: refused with what fits (one channel, or
    `gray`), and with channels="gray" fed the BT.601 luminance, exactly as a grey file of it would be."""
    import pytest

    from tilecast.client.convert import ConvertOptions
    from tilecast.client.normalization import to_gray
    from tilecast.proto.errors import InvalidArgument
    from tilecast.training.data.samples import ihc_image

    rgb = ihc_image()[:200, :160]
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    grey = to_gray(rgb)
    expected = np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114])
    assert grey.dtype == np.uint8 and np.abs(grey[..., 0] - expected).max() <= 1
    tifffile.imwrite(tmp_path / "grey.tif", grey[..., 0])
    with ServerThread(local_settings(BUNDLED)) as server, Client(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(InvalidArgument, match="takes 1") as refused:
            convert_image(client, "ihc-colorize", tmp_path / "rgb.tif", tmp_path / "no.tif")
        assert "--channels 1" in str(refused.value) and "--channels gray" in str(refused.value)
        assert "0,2" not in str(refused.value)
        convert_image(client, "ihc-colorize", tmp_path / "rgb.tif", tmp_path / "from-rgb.tif",
                      ConvertOptions(channels="gray"))
        convert_image(client, "ihc-colorize", tmp_path / "grey.tif", tmp_path / "from-grey.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "from-rgb.tif"),
                                  tifffile.imread(tmp_path / "from-grey.tif"))


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tilecast", "demo", "--size", "1024", "--output", str(tmp_path),
         "--repository", str(BUNDLED)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert tifffile.imread(tmp_path / "ihc-colorized.tif").shape == (1024, 1024, 3)
    assert (tmp_path / "preview.png").stat().st_size > 10_000
    assert "preview:" in result.stdout
    scores = tifffile.imread(tmp_path / "ihc-density.tif")  # one cell per 64 px patch, both classes
    assert scores.shape == (16, 16, 2)
    np.testing.assert_allclose(scores.sum(axis=-1), 1, atol=1e-4)
    assert 0 < (scores[..., 1] > 0.5).mean() < 1  # the sample has both dense and sparse regions
    assert (tmp_path / "ihc-density.overlay.png").stat().st_size > 10_000
    assert len((tmp_path / "ihc-density.csv").read_text().splitlines()) == 1 + 16 * 16
    assert "heat map:" in result.stdout
    labels = tifffile.imread(tmp_path / "nuclei-labels.tif")  # the fluorescence field: half the edge
    assert labels.shape == (512, 512) and set(np.unique(labels)) == {0, 1}
    said = " ".join(result.stdout.split())
    dice = float(said.split("Dice ")[1].split()[0])
    assert dice > 0.9, said
    assert (tmp_path / "nuclei.png").stat().st_size > 10_000


def test_bundled_models_are_small_and_record_their_validation() -> None:
    nuclei = manifest_io.load_version(BUNDLED / "nuclei" / "1")
    assert nuclei.kind == manifest_pb2.MODEL_KIND_SEGMENTER
    assert nuclei.preprocessing.mode == manifest_pb2.NORMALIZATION_MODE_PERCENTILE
    assert nuclei.provenance.metrics["val_dice"] > 0.9
    assert nuclei.provenance.metrics["stardist_img2d_dice"] > 0.8  # real fluorescence nuclei, never trained on
    density = manifest_io.load_version(BUNDLED / "ihc-density" / "1")
    assert density.kind == manifest_pb2.MODEL_KIND_CLASSIFIER and list(density.class_names) == ["sparse", "dense"]
    assert density.provenance.metrics["val_roc_auc"] > 0.9
    for name in ("ihc-colorize", "nuclei", "ihc-density"):
        manifest = manifest_io.load_version(BUNDLED / name / "1")
        assert manifest.provenance.command == "bash scripts/build_models.sh"
        assert sum(f.size_bytes for f in manifest.files) < 10 * 1024 * 1024


def test_bundled_segmenter_finds_nuclei_in_an_8_bit_image(tmp_path: Path) -> None:
    from tilecast.training.data.nuclei import synthesize
    from tilecast.training.metrics import dice_iou

    # a fresh synthetic field (seed outside the training and validation streams), stored as 8-bit
    image, mask = synthesize(np.random.default_rng(987654321), 256)
    image8 = (image.astype(np.float64) / image.max() * 200).astype(np.uint8)
    tifffile.imwrite(tmp_path / "nuclei.tif", image8[:, :, 0])
    with ServerThread(local_settings(BUNDLED)) as server, Client(f"127.0.0.1:{server.port}") as client:
        convert_image(client, "nuclei", tmp_path / "nuclei.tif", tmp_path / "labels.tif")
    labels = tifffile.imread(tmp_path / "labels.tif")
    assert dice_iou(labels, mask, 2)["dice"] > 0.85


def test_bundled_classifier_heat_map_follows_nuclei_density(tmp_path: Path) -> None:
    from tilecast.client.convert import ConvertOptions
    from tilecast.training.data.classes import nuclei_fraction_map
    from tilecast.training.data.samples import ihc_image

    rgb = ihc_image()
    tifffile.imwrite(tmp_path / "ihc.tif", rgb)
    with ServerThread(local_settings(BUNDLED)) as server, Client(f"127.0.0.1:{server.port}") as client:
        convert_image(client, "ihc-density", tmp_path / "ihc.tif", tmp_path / "heat.tif", ConvertOptions(stride=32))
    dense = tifffile.imread(tmp_path / "heat.tif")[..., 1]
    nuclei = nuclei_fraction_map(rgb).reshape(16, 32, 16, 32).mean(axis=(1, 3))  # per 32 px cell
    assert dense.shape == (16, 16)
    assert np.corrcoef(dense.ravel(), nuclei.ravel())[0, 1] > 0.7
