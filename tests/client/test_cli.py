"""The CLI over a real server: a conversion, and user mistakes shown as one line, not a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from typer.testing import CliRunner

from tests.conftest import RGB_MODEL
from tilecast.cli import app
from tilecast.server.app import ServerThread

runner = CliRunner()


def test_convert_and_models(tmp_path: Path, server: ServerThread) -> None:
    image = np.random.default_rng(0).integers(0, 256, (100, 130, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", image, photometric="rgb")
    address = f"127.0.0.1:{server.port}"
    result = runner.invoke(app, ["convert", str(tmp_path / "a.tif"), "-m", RGB_MODEL, "-s", address,
                                 "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert tifffile.imread(tmp_path / "out" / "a.tif").shape == (100, 130, 3)
    pyramid = runner.invoke(app, ["convert", str(tmp_path / "a.tif"), "-m", RGB_MODEL, "-s", address, "--format",
                                  "ome-tiff", "--stitch", "blend", "--blend-window", "linear", "--overlap", "16",
                                  "--tile-deadline-ms", "60000", "-o", str(tmp_path / "out")])
    assert pyramid.exit_code == 0, pyramid.output
    with tifffile.TiffFile(tmp_path / "out" / "a.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].shape == (100, 130, 3)
    listing = runner.invoke(app, ["models", "-s", address])
    assert listing.exit_code == 0 and RGB_MODEL in listing.output and "ready" in listing.output


def test_user_mistakes_are_one_clear_line(tmp_path: Path, server: ServerThread) -> None:
    address = f"127.0.0.1:{server.port}"
    gray = tmp_path / "gray.tif"
    tifffile.imwrite(gray, np.zeros((64, 64), np.uint8))
    cases = [
        (["convert", str(tmp_path / "missing.tif"), "-m", RGB_MODEL, "-s", address], "no such file", 1),
        (["convert", str(gray), "-m", RGB_MODEL, "-s", address, "-o", str(tmp_path / "o.tif")],
         "has 1 channel(s); model rgb-generator takes 3", 1),
        (["convert", str(gray), "-m", "nope", "-s", address], "model 'nope' not found", 1),
        (["convert", str(gray), "-m", RGB_MODEL, "-s", address, "--mpp", "0.5"], "does not record its pixel size", 1),
        (["convert", str(gray), "-m", RGB_MODEL, "-s", address, "--tile-deadline-ms", "-5", "--channels", "0,0,0"],
         "a per-tile deadline must be 0 (none) or a positive number of ms, not -5", 2),
        (["convert", str(gray), "-m", RGB_MODEL, "-s", address, "--blend-window", "cosine"],
         "--blend-window 'cosine': use one of gaussian, linear", 2),
        (["convert", str(gray), "-m", RGB_MODEL, "-s", address, "--stitch", "blend", "--overlap", "7",
          "--channels", "0,0,0"], "blend overlap 7 must be a multiple", 1),
        (["convert", str(gray), "-m", RGB_MODEL, "-s", address, "--wait-s", "-1"], "--wait-s -1: give the seconds", 2),
    ]
    for args, message, status in cases:  # 2: a value bad on its face (a usage error); 1: bad for this file/model
        result = runner.invoke(app, args)
        assert result.exit_code == status, result.output
        assert message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "o.tif").exists()
