"""Tissue vs background on a low-resolution view: Otsu's threshold on HSV saturation, the rule that
tiatoolbox and MONAI use for brightfield slides (glass is bright and grey, stained tissue is coloured)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.proto.errors import InvalidArgument

Array = npt.NDArray[Any]


def saturation(rgb: Array) -> Array:
    """HSV saturation in [0, 1]: (max - min) / max per pixel, 0 where the pixel is black."""
    values = rgb[..., :3].astype(np.float32)
    high, low = values.max(axis=-1), values.min(axis=-1)
    return np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0).astype(np.float32)


def otsu_threshold(values: Array, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of a histogram (Otsu 1979)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_below = np.cumsum(counts).astype(np.float64)
    weight_above = weight_below[-1] - weight_below
    sum_below = np.cumsum(counts * centres)
    mean_below = sum_below / np.maximum(weight_below, 1)
    mean_above = (sum_below[-1] - sum_below) / np.maximum(weight_above, 1)
    between = weight_below * weight_above * (mean_below - mean_above) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def tissue_mask(view: Array) -> Array:
    """Boolean tissue mask of an RGB(A) view (any integer dtype)."""
    if view.shape[-1] < 3:
        raise InvalidArgument("a tissue mask needs an RGB brightfield image; this one has "
                              f"{view.shape[-1]} channel(s). Leave out --tissue-only")
    sat = saturation(view)
    return np.asarray(sat > otsu_threshold(sat))
