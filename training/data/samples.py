"""Real sample images that a package ships (no downloads), and conversions used on them. No torch here."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


def to_gray(rgb: Array) -> Array:
    """ITU-R BT.709 luma of an RGB uint8 image as HW1 uint8 (the weights scikit-image's rgb2gray uses)."""
    luma = rgb[..., :3].astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, :, None]


def ihc_image() -> Array:
    """scikit-image's 512x512 immunohistochemistry sample (RGB uint8), shipped inside the package."""
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError("the sample images need scikit-image: pip install 'tilecast[train]'") from exc
    return np.asarray(data.immunohistochemistry())  # type: ignore[no-untyped-call]


def dihedral(image: Array, k: int) -> Array:
    """The k-th (0..7) of the eight rotations and mirror images of an image."""
    turned = np.rot90(image, k % 4)
    return turned[:, ::-1] if k >= 4 else turned
