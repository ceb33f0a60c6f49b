"""A source that is not what --format says is one line, not a torch traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tilecast.cli import app
from tilecast.training.models import create_model

runner = CliRunner()


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "some.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize(("source_format", "what"), [
    ("tilecast", "cannot be read as a `tilecast train` checkpoint"),
    ("pix2pix", "cannot be read as a pix2pix state dict"),
    ("torchscript", "cannot be read as TorchScript"),
])
def test_an_image_given_as_a_model_is_one_line(png: Path, tmp_path: Path, source_format: str, what: str) -> None:
    result = runner.invoke(app, ["export", "onnx", str(png), "--name", "x", "--format", source_format,
                                 "--repository", str(tmp_path / "models")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and what in said and "Traceback" not in said, said
    assert not (tmp_path / "models").exists()


def test_weights_that_do_not_fit_the_architecture_are_one_line(tmp_path: Path) -> None:
    weights = tmp_path / "latest_net_G.pth"
    torch.save(create_model("resnet_6blocks", ngf=8).state_dict(), weights)
    result = runner.invoke(app, ["export", "onnx", str(weights), "--name", "x", "--format", "pix2pix",
                                 "--arch", "resnet_9blocks", "--ngf", "8", "--repository", str(tmp_path / "m")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "do not fit the network --arch resnet_9blocks" in said, said
    assert "Traceback" not in said


def test_a_checkpoint_of_an_unknown_architecture_is_one_line(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"arch": "gone_net", "model_kwargs": {}, "state_dict": {}, "normalization": {}}, checkpoint)
    result = runner.invoke(app, ["export", "onnx", str(checkpoint), "--name", "x", "--repository", str(tmp_path)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "unknown architecture 'gone_net'" in said and "Traceback" not in said, said
