"""Image files for training: listed by folder, read whole or lazily by region, normalised for a network.

Large TIFFs are read through tifffile's zarr store, so a random crop decodes only the tiles or strips it
touches; PNG and JPEG are decoded whole (their formats have no random access).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tilecast.proto.normalization import percentile_range

Array = npt.NDArray[Any]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
FULL_RANGE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class Region(Protocol):
    """An image readable by region: a NumPy HWC array or a LazyImage."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, region: tuple[slice, slice]) -> Array: ...


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; an empty or missing folder is an error."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def as_hwc(image: Array) -> Array:
    return image if image.ndim == 3 else image[:, :, None]


def read_image(path: Path) -> Array:
    """The whole image as HWC (8- or 16-bit as stored)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return as_hwc(np.asarray(tifffile.imread(path)))
    from PIL import Image

    with Image.open(path) as handle:
        return as_hwc(np.asarray(handle))


class LazyImage:
    """An image read by region: `image[y0:y1, x0:x1]` decodes only that region of a TIFF."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._array: Any = None
        if self._is_tiff:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                self.shape = tuple(series.levels[0].shape) if series.levels else tuple(series.shape)
                self.dtype = series.dtype
        else:
            self._array = read_image(path)
            self.shape, self.dtype = self._array.shape, self._array.dtype
        if len(self.shape) == 2:
            self.shape = (*self.shape, 1)
        if len(self.shape) != 3:
            raise ValueError(f"{path}: expected a 2-D image with optional channels, got shape {self.shape}")

    @property
    def _is_tiff(self) -> bool:
        return self.path.suffix.lower() in (".tif", ".tiff")

    def _open(self) -> Any:
        if self._array is None:  # opened on first read, so datasets pickle cheaply into worker processes
            import tifffile
            import zarr

            self._store = tifffile.imread(self.path, aszarr=True, level=0)
            self._array = zarr.open(self._store, mode="r")
        return self._array

    def __del__(self) -> None:
        store = self.__dict__.get("_store")
        if store is not None:
            store.close()

    def __getitem__(self, region: tuple[slice, slice]) -> Array:
        return as_hwc(np.asarray(self._open()[region]))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._is_tiff:
            state["_array"] = state["_store"] = None
        return state


@dataclass(frozen=True)
class Normalization:
    """How raw pixels become network input; saved in checkpoints and baked into exports.

    fixed: x / full_range, then (x - mean) / std per channel (statistics of the training set).
    percentile: per image and channel, (x - p_low) / (p_high - p_low), the percentiles taken over the
    whole image, so 8- and 16-bit images of any brightness look alike to the network.
    """

    mode: str  # "fixed" or "percentile"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    low_percentile: float = 1.0
    high_percentile: float = 99.8

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "mean": list(self.mean), "std": list(self.std),
                "low_percentile": self.low_percentile, "high_percentile": self.high_percentile}

    def image_range(self, image: Array) -> tuple[Array, Array]:
        """Per-channel (low, high) for one whole image (or a subsample of it)."""
        if self.mode == "percentile":
            return percentile_range(image, self.low_percentile, self.high_percentile)
        full = FULL_RANGE.get(image.dtype, 1.0)
        zeros = np.zeros(image.shape[-1], np.float32)
        return zeros, zeros + np.float32(full)

    def apply(self, crop: Array, low: Array, high: Array) -> Array:
        """HWC raw -> CHW float32 network input."""
        x = (crop.astype(np.float32) - low) / (high - low)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))


def subsample(image: Region, side: int = 1024) -> Array:
    """Every k-th pixel of an image so that about side x side remain: cheap image-wide statistics."""
    height, width = image.shape[:2]
    step = max(1, max(height, width) // side)
    return np.asarray(image[slice(0, height, step), slice(0, width, step)])


def fit_normalization(images: list[Region], mode: str, channels: int) -> Normalization:
    """Mean and std of the training set in [0, 1] units ('fixed'), or identity after percentiles."""
    if mode == "percentile":
        return Normalization("percentile", (0.0,) * channels, (1.0,) * channels)
    if mode != "fixed":
        raise ValueError(f"normalization {mode!r} is not one of fixed, percentile")
    samples = [subsample(image, 256) for image in images[:64]]
    scaled = np.concatenate([s.reshape(-1, channels) / FULL_RANGE.get(s.dtype, 1.0) for s in samples])
    mean, std = scaled.mean(axis=0), np.maximum(scaled.std(axis=0), 1e-3)
    return Normalization("fixed", tuple(float(m) for m in mean), tuple(float(s) for s in std))
