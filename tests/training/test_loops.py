"""Each loop on tiny data: one step writes a complete checkpoint, and resuming continues exactly as an
uninterrupted run would (same weights, bit for bit)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tilecast.training import classifier, cyclegan, pix2pix, segmenter
from tilecast.training.base import load_checkpoint


def _unpaired(root: Path) -> str:
    rng = np.random.default_rng(1)
    for folder in ("trainA", "trainB", "testA", "testB"):
        (root / folder).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (36, 36, 3), np.uint8)).save(root / folder / f"{k}.png")
    return str(root)


LOOPS: dict[str, tuple[Callable[..., Path], Callable[[Path], Any]]] = {
    "pix2pix": (pix2pix.train, lambda tmp: pix2pix.Pix2PixConfig(crop=32, ngf=4, ndf=4, batch_size=2)),
    "cyclegan": (cyclegan.train, lambda tmp: cyclegan.CycleGanConfig(data=_unpaired(tmp / "data"), crop=32, ngf=4,
                                                                      ndf=4, pool_size=2)),
    "segmenter": (segmenter.train, lambda tmp: segmenter.SegmenterConfig(arch="unet_segmenter_small", crop=32,
                                                                          ngf=4, batch_size=2)),
    "classifier": (classifier.train, lambda tmp: classifier.ClassifierConfig(crop=32, ngf=4, batch_size=4)),
}
METRICS = {"pix2pix": "val_ssim", "cyclegan": "val_cycle_l1_a", "segmenter": "val_dice", "classifier": "val_roc_auc"}


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_checkpoint_and_exact_resume(loop: str, tmp_path: Path) -> None:
    train, make = LOOPS[loop]
    base = make(tmp_path)
    straight = load_checkpoint(train(dataclasses.replace(base, out=str(tmp_path / "straight"), steps=3, threads=1)))
    assert straight["step"] == 3 and straight["kind"] in ("generator", "segmenter", "classifier")
    assert np.isfinite(straight["metrics"][METRICS[loop]])
    assert straight["config"]["steps"] == 3 and "normalization" in straight and straight["training_data"]
    assert (tmp_path / "straight" / "tensorboard").is_dir()

    interrupted = dataclasses.replace(base, out=str(tmp_path / "resumed"), steps=2, threads=1)
    train(interrupted)
    resumed = load_checkpoint(train(dataclasses.replace(interrupted, steps=3), resume=True))
    assert resumed["step"] == 3
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_resume_refuses_changed_settings(tmp_path: Path) -> None:
    config = classifier.ClassifierConfig(out=str(tmp_path), crop=32, ngf=4, batch_size=2, steps=1)
    classifier.train(config)
    with pytest.raises(ValueError, match="lr"):
        classifier.train(dataclasses.replace(config, lr=0.1, steps=2), resume=True)
