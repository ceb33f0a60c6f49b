"""Folders of images: mirrored outputs, one corrupt file reported while the rest convert, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import RGB_MODEL
from tilecast.cli import app
from tilecast.client.archive import plan_jobs
from tilecast.server.app import ServerThread

runner = CliRunner()


def make_archive(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "case1" / "slides").mkdir(parents=True)
    (root / "case2").mkdir()
    tifffile.imwrite(root / "case1" / "slides" / "a.ome.tif", rng.integers(0, 256, (70, 90, 3), np.uint8),
                     photometric="rgb")
    tifffile.imwrite(root / "case1" / "b.tiff", rng.integers(0, 256, (64, 64, 3), np.uint8), photometric="rgb")
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), np.uint8)).save(root / "case2" / "c.png")
    (root / "case2" / "broken.tif").write_bytes(b"II*\x00" + bytes(100))
    (root / "case2" / "notes.txt").write_text("not an image")


def test_plan_mirrors_folders_and_globs(tmp_path: Path) -> None:
    make_archive(tmp_path / "in")
    jobs = plan_jobs([str(tmp_path / "in")], tmp_path / "out")
    outputs = sorted(str(j.output.relative_to(tmp_path / "out")) for j in jobs)
    assert outputs == ["case1/b.tif", "case1/slides/a.tif", "case2/broken.tif", "case2/c.tif"]
    globbed = plan_jobs([str(tmp_path / "in" / "case*" / "*.tif*")], tmp_path / "out")
    assert sorted(str(j.output.relative_to(tmp_path / "out")) for j in globbed) == ["case1/b.tif", "case2/broken.tif"]


def test_folder_with_a_corrupt_file_then_resume(tmp_path: Path, server: ServerThread) -> None:
    make_archive(tmp_path / "in")
    address = f"127.0.0.1:{server.port}"
    args = ["convert", str(tmp_path / "in"), "-m", RGB_MODEL, "-s", address, "-o", str(tmp_path / "out"),
            "--tile-size", "64", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output  # one file failed
    outcomes = {Path(o["source"]).name: o for o in json.loads(first.stdout)}
    assert outcomes["broken.tif"]["status"] == "failed" and "broken.tif" in outcomes["broken.tif"]["message"]
    assert {outcomes[n]["status"] for n in ("a.ome.tif", "b.tiff", "c.png")} == {"converted"}
    assert tifffile.imread(tmp_path / "out" / "case1" / "slides" / "a.tif").shape == (70, 90, 3)
    assert not (tmp_path / "out" / "case2" / "broken.tif").exists()
    assert not list((tmp_path / "out").rglob(".*partial*"))

    second = runner.invoke(app, args)
    outcomes = {Path(o["source"]).name: o for o in json.loads(second.stdout)}
    assert {outcomes[n]["status"] for n in ("a.ome.tif", "b.tiff", "c.png")} == {"skipped"}
    assert outcomes["broken.tif"]["status"] == "failed"
    table = runner.invoke(app, args[:-1])
    assert "skipped" in table.output and "failed" in table.output and "Traceback" not in table.output
