"""A tiny real training run: data -> loop -> checkpoint with config, normalisation and metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tilecast.training.data.paired import load_paired
from tilecast.training.pix2pix import Pix2PixConfig, load_checkpoint, train


def test_one_iteration_writes_a_complete_checkpoint(tmp_path: Path) -> None:
    config = Pix2PixConfig(out=str(tmp_path / "run"), steps=1, batch_size=2, crop=32, ngf=4, ndf=4)
    path = train(config)
    ckpt = load_checkpoint(path)
    assert ckpt["arch"] == "resnet_6blocks" and ckpt["model_kwargs"]["input_nc"] == 1
    assert ckpt["config"]["steps"] == 1 and ckpt["normalization"]["mean"] == [0.5]
    assert np.isfinite(ckpt["metrics"]["val_l1"]) and ckpt["metrics"]["val_psnr_db"] > 0


def test_paired_folder_pairs_by_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
    images = {}
    for name in ("x.png", "y.png"):
        a, b = rng.integers(0, 255, (40, 40), np.uint8), rng.integers(0, 255, (40, 40, 3), np.uint8)
        Image.fromarray(a).save(tmp_path / "A" / name)
        Image.fromarray(b).save(tmp_path / "B" / name)
        images[name] = (a, b)
    pairs = load_paired(str(tmp_path))
    assert pairs.channels == (1, 3)
    for (a, b), got_a, got_b in zip(images.values(), pairs.inputs, pairs.targets, strict=True):
        np.testing.assert_array_equal(got_a[:, :, 0], a)
        np.testing.assert_array_equal(got_b, b)
    (tmp_path / "B" / "y.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"y\.png"):
        load_paired(str(tmp_path))
