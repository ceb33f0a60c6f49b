"""`-o`: a folder, or one .tif/.ome.tif file for one input file. A file-like name that cannot be that is
refused with what to give, and nothing is created (it used to become a folder of that name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from tilecast.cli import app

runner = CliRunner()


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path in paths:
        tifffile.imwrite(path, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    return paths


@pytest.mark.parametrize(("output", "count", "words"), [
    ("result.png", 1, "give a .tif or .ome.tif name for one input, or a folder"),
    ("result.jpg", 2, "give a .tif or .ome.tif name for one input, or a folder"),
    ("one.tif", 2, "names one file, but 2 inputs"),
    ("one.ome.tif", 2, "names one file, but 2 inputs"),
])
def test_a_file_name_that_cannot_be_written_is_refused(images: list[Path], tmp_path: Path, output: str, count: int,
                                                       words: str) -> None:
    target = tmp_path / "out" / output
    result = runner.invoke(app, ["convert", *map(str, images[:count]), "-m", "m", "-s", "127.0.0.1:1",
                                 "-o", str(target)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "--output" in said and words in said and "Traceback" not in said, said
    assert not (tmp_path / "out").exists()


def test_one_file_name_for_a_folder_of_inputs_is_refused(images: list[Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", str(tmp_path), "-m", "m", "-s", "127.0.0.1:1",
                                 "-o", str(tmp_path / "one.tif")])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "a folder or pattern" in said and "give a folder" in said, said
    assert not (tmp_path / "one.tif").exists()


def test_an_existing_folder_with_a_file_like_name_is_still_a_folder(images: list[Path], tmp_path: Path) -> None:
    from tilecast.client.cli import plan_outputs

    (tmp_path / "results.tif").mkdir()
    jobs = plan_outputs([str(p) for p in images], tmp_path / "results.tif", "tiff")
    assert [j.output for j in jobs] == [tmp_path / "results.tif" / "a.tif", tmp_path / "results.tif" / "b.tif"]
    assert plan_outputs([str(images[0])], tmp_path / "one.ome.tif", "tiff")[0].output == tmp_path / "one.ome.tif"
