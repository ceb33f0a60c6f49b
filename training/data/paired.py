"""Paired image data (input -> target) and random aligned crops from it.

Sources:
- `skimage:ihc`: scikit-image's immunohistochemistry sample, grayscale -> colour (rows 0..383 train,
  384..511 validate);
- a folder with `A/` and `B/` holding images of matching names (pytorch-CycleGAN-and-pix2pix's
  `combine_A_and_B.py` input), or a folder of side-by-side AB images (its `aligned` dataset: the left
  half is A, the right half B). Either may have `train/` and `val/` inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from tilecast.training.data.images import LazyImage, Region, list_images
from tilecast.training.data.samples import ihc_image, to_gray

Array = npt.NDArray[Any]
IHC_SPLIT_ROW = 384


class HalfImage:
    """The left or right half of a side-by-side AB image, read lazily."""

    def __init__(self, source: LazyImage, right: bool) -> None:
        height, width, channels = source.shape
        if width % 2:
            raise ValueError(f"{source.path}: a side-by-side AB image needs an even width, got {width}")
        self.source, self.offset = source, width // 2 if right else 0
        self.shape = (height, width // 2, channels)

    def __getitem__(self, region: tuple[slice, slice]) -> Array:
        ys, xs = region
        start, stop = xs.start or 0, self.shape[1] if xs.stop is None else xs.stop
        return self.source[ys, slice(start + self.offset, stop + self.offset, xs.step)]


@dataclass(frozen=True)
class PairedImages:
    inputs: list[Region]  # HWC, 8- or 16-bit
    targets: list[Region]
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


def load_paired_folder(root: Path) -> PairedImages:
    """A/<name> -> B/<name> (same height and width), or side-by-side AB images directly in `root`."""
    a_dir, b_dir = root / "A", root / "B"
    if not a_dir.is_dir() and not b_dir.is_dir():
        sources = [LazyImage(p) for p in list_images(root)]
        return PairedImages([HalfImage(s, right=False) for s in sources], [HalfImage(s, right=True) for s in sources],
                            f"side-by-side AB folder {root} ({len(sources)} images)")
    if not a_dir.is_dir() or not b_dir.is_dir():
        raise FileNotFoundError(f"{root} needs both A/ (inputs) and B/ (targets), or side-by-side AB images")
    names = [p.name for p in list_images(a_dir)]
    missing = [n for n in names if not (b_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{b_dir} lacks the targets for {missing[:5]}")
    inputs, targets = [LazyImage(a_dir / n) for n in names], [LazyImage(b_dir / n) for n in names]
    for name, a, b in zip(names, inputs, targets, strict=True):
        if a.shape[:2] != b.shape[:2]:
            raise ValueError(f"{name}: input {a.shape[:2]} and target {b.shape[:2]} differ in size")
    return PairedImages(list(inputs), list(targets), f"paired folder {root} ({len(names)} images)")


def split_folder(source: str, split: str) -> Path:
    """`<source>/<split>` when the folder is split (train/, val/ or test/), else `source` itself."""
    root = Path(source)
    for name in (split, "test") if split == "val" else (split,):
        if (root / name).is_dir():
            return root / name
    return root


def load_paired(source: str, split: str = "train") -> PairedImages:
    if source == "skimage:ihc":
        return load_ihc(split)
    return load_paired_folder(split_folder(source, split))


def whole(image: Region) -> Array:
    return np.asarray(image[slice(0, image.shape[0]), slice(0, image.shape[1])])


def to_tensor(image: Array) -> torch.Tensor:
    """HWC 8- or 16-bit -> CHW float in [-1, 1] (the generators' tanh range)."""
    half_range = 32767.5 if image.dtype == np.uint16 else 127.5
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / half_range - 1.0


def random_window(rng: np.random.Generator, shape: tuple[int, ...], crop: int) -> tuple[slice, slice]:
    y = int(rng.integers(shape[0] - crop + 1))
    x = int(rng.integers(shape[1] - crop + 1))
    return slice(y, y + crop), slice(x, x + crop)


def augment(rng: np.random.Generator, *images: Array) -> list[Array]:
    """The same random 90-degree rotation and mirror applied to every image of a sample."""
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    turned = [np.rot90(image, turns) for image in images]
    return [t[:, ::-1] if flip else t for t in turned]


def check_crop(images: list[Region], crop: int) -> None:
    small = [image.shape[:2] for image in images if min(image.shape[:2]) < crop]
    if small:
        raise ValueError(f"crop {crop} is larger than images of size {small[0]}; pass a smaller --crop")


class RandomPairCrops(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Aligned random crops with the same flip and 90-degree rotation applied to input and target."""

    def __init__(self, pairs: PairedImages, crop: int, seed: int = 0) -> None:
        check_crop(pairs.inputs, crop)
        self.pairs, self.crop, self.seed = pairs, crop, seed

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, index))
        k = int(rng.integers(len(self.pairs.inputs)))
        window = random_window(rng, self.pairs.inputs[k].shape, self.crop)
        a, b = augment(rng, self.pairs.inputs[k][window], self.pairs.targets[k][window])
        return to_tensor(a), to_tensor(b)
