"""Unpaired image data for CycleGAN: `trainA/ trainB/ testA/ testB/` (pytorch-CycleGAN-and-pix2pix's
unaligned layout), images of the two domains in any number and of any size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tilecast.training.data.images import LazyImage, Region, list_images
from tilecast.training.data.paired import augment, check_crop, random_window, to_tensor


@dataclass(frozen=True)
class UnpairedImages:
    domain_a: list[Region]
    domain_b: list[Region]
    description: str

    @property
    def channels(self) -> tuple[int, int]:
        return self.domain_a[0].shape[2], self.domain_b[0].shape[2]


def load_unpaired(source: str, split: str = "train") -> UnpairedImages:
    """`<source>/<split>A` and `<source>/<split>B`; the validation split is `testA/`, `testB/`
    (or `valA/`, `valB/`)."""
    root = Path(source)
    names = [split] if split == "train" else ["val", "test"]
    for name in names:
        a_dir, b_dir = root / f"{name}A", root / f"{name}B"
        if a_dir.is_dir() and b_dir.is_dir():
            a = [LazyImage(p) for p in list_images(a_dir)]
            b = [LazyImage(p) for p in list_images(b_dir)]
            return UnpairedImages(list(a), list(b), f"unpaired folders {a_dir} ({len(a)}), {b_dir} ({len(b)})")
    wanted = " or ".join(f"{n}A/ and {n}B/" for n in names)
    raise FileNotFoundError(f"{root} needs {wanted} (unpaired layout)")


class RandomUnpairedCrops(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A random crop of a random A image and, independently, of a random B image."""

    def __init__(self, images: UnpairedImages, crop: int, seed: int = 0) -> None:
        check_crop(images.domain_a + images.domain_b, crop)
        self.images, self.crop, self.seed = images, crop, seed

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, index))
        crops = []
        for domain in (self.images.domain_a, self.images.domain_b):
            image = domain[int(rng.integers(len(domain)))]
            (crop,) = augment(rng, image[random_window(rng, image.shape, self.crop)])
            crops.append(to_tensor(crop))
        return crops[0], crops[1]
