"""What a model expects of pixels beyond its tiles: per-image percentile ranges sent once in the stream
header (so every tile of an image is scaled alike; per-tile statistics make seams), and the cast from
the file's dtype to the model's wire dtype."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.overview import overview
from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.normalization import percentile_range
from tilecast.proto.v1 import inference_pb2, manifest_pb2

Array = npt.NDArray[Any]


def uses_percentiles(manifest: manifest_pb2.ModelManifest) -> bool:
    return manifest.preprocessing.mode == manifest_pb2.NORMALIZATION_MODE_PERCENTILE


def percentile_parameters(manifest: manifest_pb2.ModelManifest, pixels: Array) -> inference_pb2.ImageParameters:
    """Per-channel low/high percentiles of (a subsample of) an image, as the model's header wants them."""
    low, high = percentile_range(pixels, manifest.preprocessing.low_percentile, manifest.preprocessing.high_percentile)
    return inference_pb2.ImageParameters(channel_low=low.tolist(), channel_high=high.tolist())


def image_parameters(manifest: manifest_pb2.ModelManifest, path: Path, level: int,
                     channels: list[int] | None = None) -> inference_pb2.ImageParameters | None:
    """The header's per-image parameters for `path`, or None when the model needs none."""
    if not uses_percentiles(manifest):
        return None
    view = overview(path, level)
    return percentile_parameters(manifest, view[:, :, channels] if channels else view)


def wire_cast(source: np.dtype[Any], manifest: manifest_pb2.ModelManifest) -> Callable[[Array], Array]:
    """A function turning tiles of dtype `source` into the model's input dtype, or an error saying why not.

    8-bit into a 16-bit model is exact: values are kept for percentile models (the header's percentiles
    come from the same values) and scaled by 257 for fixed ones (255 -> 65535)."""
    want = tensors.to_numpy_dtype(manifest.inputs[0].dtype)
    if source == want:
        return lambda tile: tile
    if source == np.uint8 and want == np.uint16:
        factor = 1 if uses_percentiles(manifest) else 257
        return lambda tile: tile.astype(np.uint16) * np.uint16(factor)
    raise InvalidArgument(f"the image is {source.name}; model {manifest.name} takes {want.name}. Convert the "
                          f"image, or use a model exported with --input-dtype {source.name}")
