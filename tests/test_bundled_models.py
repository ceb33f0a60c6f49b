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
