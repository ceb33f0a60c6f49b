"""Labelled patches for classifiers: class subfolders (`<root>/<class>/*.png`, with optional train/ and
val/ inside), or `skimage:ihc-density`, patches of scikit-image's IHC sample labelled by how much of the
patch is hematoxylin-stained nuclei. Sampling can be class-balanced: each sample first draws a class
uniformly, then a patch of it, so a rare class (tumour) is seen as often as a common one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from tilecast.training.data.images import LazyImage, Normalization, Region, list_images
from tilecast.training.data.paired import augment, random_window, split_folder, whole
from tilecast.training.data.samples import ihc_image

Array = npt.NDArray[Any]
IHC_DENSITY = "skimage:ihc-density"
IHC_SPLIT_ROW = 384
DENSE_FRACTION = 0.25  # a patch is "dense" when nuclei cover more than this fraction of it


@dataclass(frozen=True)
class LabelledPatches:
    """Images with a class each; `windows` lists (image index, y, x) patch corners when the labels belong
    to windows of larger images rather than to whole files."""

    images: list[Region]
    labels: list[int]
    class_names: list[str]
    description: str
    windows: list[tuple[int, int, int]] | None = None
    window_size: int = 0  # edge of each window, when `windows` is set

    @property
    def channels(self) -> int:
        return self.images[0].shape[2]

    def __len__(self) -> int:
        return len(self.windows) if self.windows is not None else len(self.images)

    def patch(self, k: int) -> Array:
        """The pixels of patch k: a whole file, or a window of a larger image."""
        if self.windows is None:
            return whole(self.images[k])
        image, y, x = self.windows[k]
        size = self.window_size
        return np.asarray(self.images[image][slice(y, y + size), slice(x, x + size)])


def nuclei_fraction_map(rgb: Array) -> Array:
    """1 where hematoxylin (nuclei) dominates, from Ruifrok & Johnston colour deconvolution (skimage's
    rgb2hed) thresholded by Otsu's method."""
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu

    hematoxylin = rgb2hed(rgb)[..., 0]
    threshold = float(threshold_otsu(hematoxylin))  # type: ignore[no-untyped-call]
    return np.asarray(hematoxylin > threshold, np.float32)


def ihc_density(split: str, patch: int, stride: int | None = None) -> LabelledPatches:
    """Every `stride`-th window of the IHC sample's rows for `split`, labelled sparse (0) or dense (1)."""
    rgb = ihc_image()
    nuclei = nuclei_fraction_map(rgb)
    rows = (0, IHC_SPLIT_ROW) if split == "train" else (IHC_SPLIT_ROW, rgb.shape[0])
    stride = stride or max(1, patch // 8)
    windows, labels = [], []
    for y in range(rows[0], rows[1] - patch + 1, stride):
        for x in range(0, rgb.shape[1] - patch + 1, stride):
            windows.append((0, y, x))
            labels.append(int(nuclei[y:y + patch, x:x + patch].mean() > DENSE_FRACTION))
    if not windows:
        raise ValueError(f"patch {patch} does not fit the IHC sample's {split} rows {rows}")
    return LabelledPatches([rgb], labels, ["sparse", "dense"],
                           f"scikit-image immunohistochemistry sample, {split} rows {rows[0]}-{rows[1] - 1}, "
                           f"{patch}px windows labelled dense when hematoxylin covers > {DENSE_FRACTION:.0%}", windows,
                           patch)


def load_classes(source: str, split: str, patch: int) -> LabelledPatches:
    if source == IHC_DENSITY:
        return ihc_density(split, patch)
    root = split_folder(source, split)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(class_dirs) < 2:
        raise FileNotFoundError(f"{root} needs one subfolder per class (at least two), each holding patches")
    images: list[Region] = []
    labels: list[int] = []
    for label, folder in enumerate(class_dirs):
        for path in list_images(folder):
            images.append(LazyImage(path))
            labels.append(label)
    return LabelledPatches(images, labels, [d.name for d in class_dirs],
                           f"class folders {root} ({len(images)} patches)")


class RandomPatches(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(normalised patch CHW float, class) samples: a random crop of the patch (or of the labelled
    window), flipped and rotated; class-balanced when `balanced`."""

    def __init__(self, data: LabelledPatches, normalization: Normalization, crop: int, balanced: bool,
                 seed: int = 0) -> None:
        self.data, self.normalization, self.crop, self.seed = data, normalization, crop, seed
        labels = np.asarray(data.labels)
        self.by_class = [np.flatnonzero(labels == k) for k in range(len(data.class_names))]
        self.by_class = [members for members in self.by_class if len(members)]
        self.balanced = balanced

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, index))
        if self.balanced:
            members = self.by_class[int(rng.integers(len(self.by_class)))]
            k = int(members[int(rng.integers(len(members)))])
        else:
            k = int(rng.integers(len(self.data)))
        patch = self.data.patch(k)
        if min(patch.shape[:2]) < self.crop:
            raise ValueError(f"patch {k} of size {patch.shape[:2]} is smaller than --crop {self.crop}")
        (patch,) = augment(rng, patch[random_window(rng, patch.shape, self.crop)])
        low, high = self.normalization.image_range(patch)
        return torch.from_numpy(self.normalization.apply(patch, low, high)), torch.tensor(self.data.labels[k])
