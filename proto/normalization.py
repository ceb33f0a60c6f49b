"""What a percentile model's `channel_low` / `channel_high` inputs mean, defined once for training,
export and the client: per-channel percentiles of a whole image (or a regular subsample of it), with
`high` kept above `low` so a flat channel does not divide by zero."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
MIN_SPAN = 1e-3


def percentile_range(pixels: Array, low_percentile: float, high_percentile: float) -> tuple[Array, Array]:
    """(low, high) float32 per channel of an (..., C) array, over every axis but the last."""
    values = pixels.reshape(-1, pixels.shape[-1]).astype(np.float32)
    low = np.percentile(values, low_percentile, axis=0).astype(np.float32)
    high = np.maximum(np.percentile(values, high_percentile, axis=0), low + MIN_SPAN).astype(np.float32)
    return low, high
