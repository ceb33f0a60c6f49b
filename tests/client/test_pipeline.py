"""The conversion pipeline as a user meets it: each input file opened once, outputs that appear together
or not at all, temporaries of killed runs cleaned up, and resume that redoes what changed or was damaged.
Real server on loopback, real no-op model, real files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from tests.conftest import local_settings
from tilecast.client import Client, ConvertOptions, convert_image
from tilecast.client.archive import Job, convert_many
from tilecast.client.writer import Staging, remove_stale
from tilecast.export.identity import write_identity_model
from tilecast.server.app import ServerThread


@pytest.fixture(scope="module")
def noop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("noop") / "models"
    write_identity_model(root, "noop", channels=3, dtype="uint8")
    with ServerThread(local_settings(root)) as server, Client(f"127.0.0.1:{server.port}", timeout=60) as client:
        yield client


def count_opens(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[str]:
    """Every tifffile.TiffFile constructed for `path` from now on (tifffile's class, wrapped to count)."""
    opened: list[str] = []
    original = tifffile.TiffFile

    class Counting(original):  # type: ignore[misc, valid-type]
        def __init__(self, file: Any, *args: Any, **kwargs: Any) -> None:
            if Path(str(file)).resolve() == path.resolve():
                opened.append(str(file))
            super().__init__(file, *args, **kwargs)

    monkeypatch.setattr(tifffile, "TiffFile", Counting)
    return opened


def pyramid_input(path: Path) -> np.ndarray:
    """A 2-level OME-TIFF of 0.5 µm pixels (level 1: 1 µm)."""
    image = np.random.default_rng(3).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(image, subifds=1, tile=(64, 64), photometric="rgb",
                  metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
        tif.write(image[::2, ::2], subfiletype=1, tile=(64, 64), photometric="rgb")
    return image


def test_an_input_is_opened_once(noop: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "slide.ome.tif"
    image = pyramid_input(source)
    opened = count_opens(monkeypatch, source)
    convert_image(noop, "noop", source, tmp_path / "out.ome.tif",
                  ConvertOptions(tile_size=64, window=4, microns_per_pixel=1.0))
    assert len(opened) == 1, f"the input was opened {len(opened)} times"
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.ome.tif"), image[::2, ::2])


def test_a_failing_rename_takes_back_the_outputs_renamed_before(tmp_path: Path) -> None:
    """The last rename fails (its name is taken by a folder): the outputs renamed before it are taken back."""
    staging = Staging()
    first, second = tmp_path / "a.tif", tmp_path / "b.tif"
    staging.temporary(first).write_bytes(b"1")
    staging.temporary(second).write_bytes(b"2")
    (second / "taken").mkdir(parents=True)
    with pytest.raises(OSError):
        staging.commit()
    staging.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tif"], "only the folder in the way is left"


def test_stale_temporaries_of_killed_runs_are_removed(noop: Client, tmp_path: Path) -> None:
    source, target = tmp_path / "in.tif", tmp_path / "out" / "in.tif"
    tifffile.imwrite(source, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    target.parent.mkdir()
    dead = 2 ** 22 + 12345  # above Linux's default pid_max: no process has it
    stale = [target.with_name(f".in.tif.partial-{dead}"), target.with_name(f".in.tif.base-{dead}.tif"),
             target.with_name(f".in.tif.level2-{dead}")]
    running = target.with_name(f".in.tif.partial-{os.getppid()}")  # a live process: a run in progress
    for path in [*stale, running]:
        path.write_bytes(b"left by a run killed part-way")
    convert_image(noop, "noop", source, target, ConvertOptions(tile_size=64))
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([running.name, "in.tif"])
    assert remove_stale(target) == []  # the live one is kept


def test_resume_redoes_changed_settings_inputs_and_damaged_outputs(noop: Client, tmp_path: Path) -> None:
    source, target = tmp_path / "in.tif", tmp_path / "out" / "in.tif"
    image = np.random.default_rng(4).integers(0, 256, (600, 700, 3), dtype=np.uint8)
    tifffile.imwrite(source, image, photometric="rgb")
    jobs = [Job(source, target)]
    options = ConvertOptions(tile_size=64, window=4)

    def status(opts: ConvertOptions = options) -> str:
        return convert_many(noop, "noop", jobs, opts)[0].status

    assert status() == "converted"
    assert status() == "skipped"
    assert status(ConvertOptions(tile_size=128, window=4)) == "converted"  # a setting that changes the file
    assert status(ConvertOptions(tile_size=128, window=8)) == "skipped"  # one that does not
    os.truncate(target, 100_000)
    assert status(ConvertOptions(tile_size=128, window=8)) == "converted"
    np.testing.assert_array_equal(tifffile.imread(target), image)
    tifffile.imwrite(source, image[::-1], photometric="rgb")  # the input changed
    assert status(ConvertOptions(tile_size=128)) == "converted"
    np.testing.assert_array_equal(tifffile.imread(target), image[::-1])


def test_read_ahead_returns_each_tile_and_holds_at_most_its_depth() -> None:
    from tilecast.client.streaming import ReadAhead

    started: list[int] = []

    def read(index: int) -> np.ndarray:
        started.append(index)
        return np.full((2, 2, 1), index, np.uint8)

    order = list(range(20))
    ahead = ReadAhead(read, order, depth=3, workers=2)
    try:
        asked = [0, 1, 2, 7, 3, 4, 5, 6, *range(8, 20), 4]  # 7 early, 4 again (a resend)
        for index in asked:
            assert int(ahead(index)[0, 0, 0]) == index
            assert ahead.held <= 3
    finally:
        ahead.close()
    assert sorted(set(started)) == order
