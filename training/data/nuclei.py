"""Synthetic fluorescence nuclei with exact masks: blobs of varied size, shape, brightness and texture,
touching or overlapping, blurred, on uneven background with shot and read noise, stored as 8- or 16-bit at
a random gain. Textures cut from scikit-image's sample images give the background structure that real
slides have. No torch here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

Array = npt.NDArray[Any]
TEXTURES = ("gravel", "grass", "brick", "camera", "moon", "coins")


@cache
def _textures() -> tuple[Array, ...]:
    from skimage import data

    return tuple(np.asarray(getattr(data, name)(), np.float32) / 255.0 for name in TEXTURES)


def _texture(rng: np.random.Generator, size: int) -> Array:
    image = _textures()[int(rng.integers(len(TEXTURES)))]
    if image.ndim == 3:
        image = image.mean(axis=2)
    y, x = (int(rng.integers(max(1, s - size + 1))) for s in image.shape[:2])
    patch = image[y:y + size, x:x + size]
    patch = np.pad(patch, ((0, size - patch.shape[0]), (0, size - patch.shape[1])), mode="reflect")
    return np.asarray(ndimage.gaussian_filter(patch, float(rng.uniform(1, 4))))


def synthesize(rng: np.random.Generator, size: int = 256) -> tuple[Array, Array]:
    """One (image HW1 uint8 or uint16, mask HW uint8 with 1 = nucleus) pair."""
    radius_mean = float(rng.uniform(4, 16))
    coverage = float(rng.uniform(0.05, 0.5))
    count = max(1, int(coverage * size * size / (np.pi * radius_mean**2)))
    signal = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), bool)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(count):
        r = radius_mean * float(rng.uniform(0.6, 1.4))
        a, b = r * float(rng.uniform(1.0, 1.6)), r * float(rng.uniform(0.6, 1.0))
        cy, cx, angle = float(rng.uniform(0, size)), float(rng.uniform(0, size)), float(rng.uniform(0, np.pi))
        y0, y1 = max(0, int(cy - a - 2)), min(size, int(cy + a + 3))
        x0, x1 = max(0, int(cx - a - 2)), min(size, int(cx + a + 3))
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / a
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / b
        wobble = 1 + 0.08 * np.sin(3 * np.arctan2(v, u) + float(rng.uniform(0, 6.3)))
        inside = (u * u + v * v) <= wobble**2
        brightness = float(rng.uniform(0.25, 1.0))
        texture = 1 + float(rng.uniform(0, 0.35)) * rng.standard_normal(inside.shape).astype(np.float32)
        region = signal[y0:y1, x0:x1]
        np.maximum(region, np.where(inside, brightness * texture, 0), out=region)
        mask[y0:y1, x0:x1] |= inside
    signal = ndimage.gaussian_filter(signal, float(rng.uniform(0.5, 2.0)))
    ramp = (yy * float(rng.uniform(-1, 1)) + xx * float(rng.uniform(-1, 1))) / size
    background = float(rng.uniform(0, 0.15)) * (1 + 0.5 * ramp) + float(rng.uniform(0, 0.12)) * _texture(rng, size)
    image = np.clip(signal + background, 0, None)
    photons = float(rng.uniform(30, 1000))  # shot noise: fewer photons, noisier image
    image = rng.poisson(image * photons).astype(np.float32) / photons
    image += float(rng.uniform(0, 0.03)) * rng.standard_normal(image.shape).astype(np.float32)
    bits16 = bool(rng.integers(2))
    full = 65535.0 if bits16 else 255.0
    gain = full * float(rng.uniform(0.05, 0.9)) / max(float(image.max()), 1e-3)
    stored = np.clip(image * gain, 0, full).astype(np.uint16 if bits16 else np.uint8)
    return stored[:, :, None], mask.astype(np.uint8)
