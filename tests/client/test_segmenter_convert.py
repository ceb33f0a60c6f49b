"""Segmenters through convert: a label image and a probability map per input, both exact; classifiers refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tifffile
import torch

from tests.conftest import local_settings
from tests.export.nets import TinyClassifier, TinySegmenter
from tilecast.client import Client, ConvertOptions, convert_image
from tilecast.export.onnx_export import ExportConfig, export_model
from tilecast.export.sources import LoadedModel
from tilecast.proto.errors import InvalidArgument
from tilecast.server.app import ServerThread


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seg") / "models"
    torch.manual_seed(0)
    export_model(LoadedModel(TinySegmenter(3, 5), "segmenter", 3, 5, [0.5] * 3, [0.25] * 3, "tiny"),
                 ExportConfig(root, "nuclei", tile_size=64, probabilities=True))
    export_model(LoadedModel(TinySegmenter(3, 5), "segmenter", 3, 5, [0.5] * 3, [0.25] * 3, "tiny"),
                 ExportConfig(root, "labels-only", tile_size=64))
    export_model(LoadedModel(TinyClassifier(3, 2), "classifier", 3, 2, [0.5] * 3, [0.25] * 3, "tiny"),
                 ExportConfig(root, "tumour", tile_size=96))
    return root


def test_labels_and_probabilities_are_written_exactly(tmp_path: Path, repository: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (150, 201, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "cells.tif", image, photometric="rgb")
    with ServerThread(local_settings(repository)) as server, Client(f"127.0.0.1:{server.port}") as client:
        convert_image(client, "nuclei", tmp_path / "cells.tif", tmp_path / "out" / "cells.tif",
                      ConvertOptions(tile_size=64, window=3))
        convert_image(client, "tumour", tmp_path / "cells.tif", tmp_path / "out" / "t.tif")  # a heat map
    session = ort.InferenceSession(str(repository / "nuclei" / "1" / "model.onnx"))
    labels, probabilities = session.run(None, {"image": image[None]})
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "cells.tif"), labels[0, :, :, 0])
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "cells.probabilities.tif"), probabilities[0])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cells.probabilities.tif", "cells.tif", "t.csv", "t.overlay.png", "t.tif"]


def test_failure_midway_leaves_neither_output(tmp_path: Path, repository: Path) -> None:
    from tests.client.test_convert_failures import corrupt_tile
    from tilecast.client.reader import ImageReadError

    image = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image, tile=(64, 64), photometric="rgb", compression="zlib")
    corrupt_tile(tmp_path / "in.tif", 40)
    (tmp_path / "out").mkdir()
    with ServerThread(local_settings(repository)) as server, Client(f"127.0.0.1:{server.port}") as client, \
            pytest.raises(ImageReadError):
        convert_image(client, "nuclei", tmp_path / "in.tif", tmp_path / "out" / "in.tif",
                      ConvertOptions(tile_size=64, window=2))
    assert list((tmp_path / "out").iterdir()) == []


def test_blend_stitching_averages_probabilities_and_takes_their_argmax(tmp_path: Path, repository: Path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (150, 201, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "cells.tif", image, photometric="rgb")
    blend = ConvertOptions(tile_size=64, overlap=32, stitch="blend", window=3)
    with ServerThread(local_settings(repository)) as server, Client(f"127.0.0.1:{server.port}") as client:
        convert_image(client, "nuclei", tmp_path / "cells.tif", tmp_path / "out.tif", blend)
        with pytest.raises(InvalidArgument, match="class labels only, which cannot be blended"):
            convert_image(client, "labels-only", tmp_path / "cells.tif", tmp_path / "no.tif", blend)
    assert not (tmp_path / "no.tif").exists()
    session = ort.InferenceSession(str(repository / "nuclei" / "1" / "model.onnx"))
    whole_labels, whole_probabilities = session.run(None, {"image": image[None]})
    labels, probabilities = tifffile.imread(tmp_path / "out.tif"), tifffile.imread(tmp_path / "out.probabilities.tif")
    # The tiny net's context fits in the overlap, so away from the right and bottom edges (where tiles
    # see reflected pixels, whole-image inference the network's zero padding) blending only rounds.
    r = json.loads((repository / "nuclei" / "1" / "manifest.json").read_text())["tiling"]["receptive_radius"]
    inside = np.s_[:150 - r, :201 - r]
    assert np.abs(probabilities[inside].astype(int) - whole_probabilities[0][inside]).max() <= 1
    # Labels are the argmax of the blended probabilities: compare where the top class is clear.
    top2 = np.sort(probabilities.astype(int), axis=2)[:, :, -2:]
    clear = top2[:, :, 1] - top2[:, :, 0] >= 2
    np.testing.assert_array_equal(labels[clear], np.argmax(probabilities, axis=2)[clear])
    np.testing.assert_array_equal(labels[inside][clear[inside]], whole_labels[0, :, :, 0][inside][clear[inside]])


@pytest.mark.parametrize("name", ["cells.tif", "cells.ome.tif"])
def test_a_failing_second_output_leaves_no_output_at_all(tmp_path: Path, repository: Path, name: str) -> None:
    """The probabilities cannot take their name (a folder has it): the labels, written fine, do not appear."""
    image = np.random.default_rng(0).integers(0, 256, (100, 130, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "cells.tif", image, photometric="rgb")
    target = tmp_path / "out" / name
    blocker = target.with_name(name.replace("cells.", "cells.probabilities."))
    (blocker / "in-the-way").mkdir(parents=True)
    with ServerThread(local_settings(repository)) as server, Client(f"127.0.0.1:{server.port}") as client, \
            pytest.raises(OSError):
        convert_image(client, "nuclei", tmp_path / "cells.tif", target, ConvertOptions(tile_size=64, window=3))
    assert sorted(p.name for p in target.parent.iterdir()) == [blocker.name]
