"""Images with label masks for segmenters: `images/` and `masks/` with matching file stems (8- or
16-bit masks; binary 0/255 or 0/1, class ids 0..K-1, or instance labels read as foreground), or
`synthetic:nuclei`, nuclei synthesised by `nuclei.py`. Either may have `train/` and `val/` inside."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from tilecast.training.data.images import LazyImage, Normalization, Region, list_images, subsample
from tilecast.training.data.nuclei import synthesize
from tilecast.training.data.paired import augment, check_crop, random_window, split_folder, whole

Array = npt.NDArray[Any]
SYNTHETIC = "synthetic:nuclei"
SYNTHETIC_SIZE = 256
MASK_MODES = ("auto", "binary", "labels")


@dataclass(frozen=True)
class MaskedImages:
    images: list[Region]
    masks: list[Region]
    classes: int
    description: str
    mask_mode: str = "labels"
    synthetic_seed: int | None = None  # images are drawn from the synthesiser, not read
    class_names: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return self.images[0].shape[2] if self.images else 1


def to_labels(mask: Array, mode: str) -> Array:
    """HW(1) mask -> HW int64 class ids."""
    mask = mask[..., 0] if mask.ndim == 3 else mask
    if mode == "binary":
        return (mask > 0).astype(np.int64)
    return mask.astype(np.int64)


def _mask_for(masks: Path, image: Path) -> Path:
    candidates = [p for p in masks.glob(image.stem + ".*") if p.stem == image.stem]
    if not candidates:
        raise FileNotFoundError(f"{masks} has no mask for {image.name} (same name, any image suffix)")
    return candidates[0]


def load_masked(source: str, split: str, mask_mode: str = "auto", seed: int = 0) -> MaskedImages:
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask mode {mask_mode!r} is not one of {', '.join(MASK_MODES)}")
    if source == SYNTHETIC:
        return MaskedImages([], [], 2, f"synthetic nuclei (tilecast.training.data.nuclei, {split})",
                            synthetic_seed=seed if split == "train" else seed + 1_000_003,
                            class_names=["background", "nucleus"])
    root = split_folder(source, split)
    image_paths = list_images(root / "images")
    images = [LazyImage(p) for p in image_paths]
    masks = [LazyImage(_mask_for(root / "masks", p)) for p in image_paths]
    for path, image, mask in zip(image_paths, images, masks, strict=True):
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(f"{path.name}: image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    values = np.unique(np.concatenate([np.unique(subsample(m, 512)) for m in masks]))
    if mask_mode == "auto":
        mask_mode = "binary" if set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1} else "labels"
    classes = 2 if mask_mode == "binary" else int(values.max()) + 1
    return MaskedImages(list(images), list(masks), max(classes, 2), f"masked images {root} ({len(images)} images)",
                        mask_mode)


class RandomMaskedCrops(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(normalised image CHW float, labels HW int64) crops; flips and rotations applied to both. The
    normalisation range of each image is taken over the whole image, as the client does at inference."""

    def __init__(self, data: MaskedImages, normalization: Normalization, crop: int, seed: int = 0) -> None:
        if data.synthetic_seed is None:
            check_crop(data.images, crop)
            self.ranges = [normalization.image_range(subsample(image)) for image in data.images]
        elif crop > SYNTHETIC_SIZE:
            raise ValueError(f"crop {crop} is larger than the synthetic images ({SYNTHETIC_SIZE})")
        self.data, self.normalization, self.crop, self.seed = data, normalization, crop, seed

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, index))
        if self.data.synthetic_seed is not None:
            image, labels = synthesize(np.random.default_rng((self.data.synthetic_seed, index)), SYNTHETIC_SIZE)
            low, high = self.normalization.image_range(image)
            labels = labels.astype(np.int64)
        else:
            k = int(rng.integers(len(self.data.images)))
            window = random_window(rng, self.data.images[k].shape, self.crop)
            image, labels = self.data.images[k][window], to_labels(self.data.masks[k][window], self.data.mask_mode)
            low, high = self.ranges[k]
        window = random_window(rng, image.shape, self.crop)
        image, labels = augment(rng, image[window], labels[window])
        return torch.from_numpy(self.normalization.apply(image, low, high)), torch.from_numpy(labels.copy())


def validation_pairs(data: MaskedImages, count: int = 8) -> list[tuple[Array, Array]]:
    """Whole (raw image, labels) validation pairs."""
    if data.synthetic_seed is not None:
        pairs = [synthesize(np.random.default_rng((data.synthetic_seed, i)), SYNTHETIC_SIZE) for i in range(count)]
        return [(image, mask.astype(np.int64)) for image, mask in pairs]
    return [(whole(i), to_labels(whole(m), data.mask_mode)) for i, m in zip(data.images, data.masks, strict=True)]
