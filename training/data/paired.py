"""Paired image data (input -> target) and random aligned crops from it.

Sources: `skimage:ihc` (scikit-image's immunohistochemistry sample, grayscale -> colour; rows
0..383 train, 384..511 validate) or a folder with `A/` and `B/` holding images of matching names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from tilecast.training.data.samples import ihc_image, to_gray

Array = npt.NDArray[Any]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
IHC_SPLIT_ROW = 384


@dataclass(frozen=True)
class PairedImages:
    inputs: list[Array]  # HWC uint8
    targets: list[Array]
    description: str

    @property
    def channels(self) -> tuple[int, int]:
        return self.inputs[0].shape[2], self.targets[0].shape[2]


def load_ihc(split: str) -> PairedImages:
    rgb = ihc_image()
    start, stop = (0, IHC_SPLIT_ROW) if split == "train" else (IHC_SPLIT_ROW, rgb.shape[0])
    part = np.ascontiguousarray(rgb[start:stop])
    return PairedImages([to_gray(part)], [part],
                        f"scikit-image immunohistochemistry sample (grayscale -> RGB), {split} rows {start}-{stop - 1}")


def _read(path: Path) -> Array:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        image = np.asarray(tifffile.imread(path))
    else:
        from PIL import Image

        with Image.open(path) as handle:
            image = np.asarray(handle)
    return image if image.ndim == 3 else image[:, :, None]


def load_paired_folder(root: Path) -> PairedImages:
    """A/<name> -> B/<name>; every A image needs its B twin of the same height and width."""
    a_dir, b_dir = root / "A", root / "B"
    if not a_dir.is_dir() or not b_dir.is_dir():
        raise FileNotFoundError(f"{root} needs subfolders A/ (inputs) and B/ (targets)")
    names = sorted(p.name for p in a_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise FileNotFoundError(f"{a_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    missing = [n for n in names if not (b_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{b_dir} lacks the targets for {missing[:5]}")
    inputs, targets = [_read(a_dir / n) for n in names], [_read(b_dir / n) for n in names]
    for name, a, b in zip(names, inputs, targets, strict=True):
        if a.shape[:2] != b.shape[:2]:
            raise ValueError(f"{name}: input {a.shape[:2]} and target {b.shape[:2]} differ in size")
    return PairedImages(inputs, targets, f"paired folder {root} ({len(names)} images)")


def load_paired(source: str, split: str = "train") -> PairedImages:
    if source == "skimage:ihc":
        return load_ihc(split)
    return load_paired_folder(Path(source) / split if (Path(source) / split).is_dir() else Path(source))


def to_tensor(image: Array) -> torch.Tensor:
    """HWC uint8 -> CHW float in [-1, 1] (the generators' tanh range)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 127.5 - 1.0


class RandomPairCrops(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Aligned random crops with the same flip and 90-degree rotation applied to input and target."""

    def __init__(self, pairs: PairedImages, crop: int, length: int, seed: int = 0) -> None:
        small = [a.shape[:2] for a in pairs.inputs if min(a.shape[:2]) < crop]
        if small:
            raise ValueError(f"crop {crop} is larger than images of size {small[0]}")
        self.pairs, self.crop, self.length, self.seed = pairs, crop, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, index))
        k = int(rng.integers(len(self.pairs.inputs)))
        a, b = self.pairs.inputs[k], self.pairs.targets[k]
        y = int(rng.integers(a.shape[0] - self.crop + 1))
        x = int(rng.integers(a.shape[1] - self.crop + 1))
        a, b = a[y:y + self.crop, x:x + self.crop], b[y:y + self.crop, x:x + self.crop]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        a, b = np.rot90(a, turns), np.rot90(b, turns)
        if flip:
            a, b = a[:, ::-1], b[:, ::-1]
        return to_tensor(a), to_tensor(b)
