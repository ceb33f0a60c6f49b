"""What a model expects of pixels beyond its tiles: the channels it is fed (chosen, or RGB turned to grey),
per-image percentile ranges sent once in the stream header (so every tile of an image is scaled alike;
per-tile statistics make seams), and the cast from the file's dtype to the model's wire dtype."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.options import GRAY, Channels
from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.normalization import percentile_range
from tilecast.proto.spec import ModelSpec
from tilecast.proto.v1 import inference_pb2

Array = npt.NDArray[Any]
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601: Y' = 0.299 R + 0.587 G + 0.114 B


def to_gray(pixels: Array) -> Array:
    """RGB(A) HWC pixels as one luminance channel (BT.601 weights; alpha ignored), rounded into their dtype."""
    luma = np.tensordot(pixels[..., :3].astype(np.float32), np.asarray(LUMA_WEIGHTS, np.float32), axes=([-1], [0]))
    if np.issubdtype(pixels.dtype, np.integer):
        info = np.iinfo(pixels.dtype)
        luma = np.clip(np.rint(luma), info.min, info.max)
    return luma.astype(pixels.dtype)[..., None]


@dataclass(frozen=True)
class ModelInput:
    """How the file's pixels become the model's input: `select` picks (or makes) the channels it is fed,
    `cast` turns them into its wire dtype."""

    select: Callable[[Array], Array]
    cast: Callable[[Array], Array]

    def __call__(self, pixels: Array) -> Array:
        return np.ascontiguousarray(self.cast(self.select(pixels)))


def _suggestion(available: int, wanted: int) -> str:
    """What --channels would fit a model taking `wanted` channels, for an image with `available`."""
    if wanted > available:
        return f"it cannot be fed from {available}; use an image with {wanted} channels or another model"
    first = ",".join(str(c) for c in range(wanted)) if wanted > 1 else "1"
    hint = f"choose {wanted} with --channels, e.g. --channels {first}"
    return hint + (f", or --channels {GRAY} for luminance" if wanted == 1 and available in (3, 4) else "")


def model_input(spec: ModelSpec, path: object, available: int, dtype: np.dtype[Any],
                channels: Channels = ()) -> ModelInput:
    """The ModelInput for an image of `available` channels and `dtype`, or a clear error saying what fits."""
    if isinstance(channels, str):  # GRAY
        if available not in (3, 4) or spec.channels != 1:
            raise InvalidArgument(f"--channels {GRAY} turns RGB into one channel: {path} has {available} "
                                  f"channel(s), model {spec.name} takes {spec.channels}")
        return ModelInput(to_gray, wire_cast(dtype, spec))
    picked = list(channels)
    bad = [c for c in picked if not 0 <= c < available]
    if bad:
        raise InvalidArgument(f"{path} has channels/planes 0..{available - 1}; {bad} do not exist")
    count = len(picked) or available
    if count != spec.channels:
        chosen = f"{count} channel(s) chosen from" if picked else "has"
        raise InvalidArgument(f"{path} {chosen} {available} channel(s); model {spec.name} takes "
                              f"{spec.channels} ({_suggestion(available, spec.channels)})")
    select: Callable[[Array], Array] = (lambda tile: tile[:, :, picked]) if picked else (lambda tile: tile)
    return ModelInput(select, wire_cast(dtype, spec))


def percentile_parameters(spec: ModelSpec, pixels: Array) -> inference_pb2.ImageParameters:
    """Per-channel low/high percentiles of (a subsample of) an image, as the model's header wants them."""
    pre = spec.manifest.preprocessing
    low, high = percentile_range(pixels, pre.low_percentile, pre.high_percentile)
    return inference_pb2.ImageParameters(channel_low=low.tolist(), channel_high=high.tolist())


def image_parameters(spec: ModelSpec, overview: Callable[[], Array],
                     fed: ModelInput) -> inference_pb2.ImageParameters | None:
    """The header's per-image parameters, from an overview of the channels the model is fed; None when the
    model needs none."""
    if not spec.uses_percentiles:
        return None
    return percentile_parameters(spec, fed.select(overview()))


def wire_cast(source: np.dtype[Any], spec: ModelSpec) -> Callable[[Array], Array]:
    """A function turning tiles of dtype `source` into the model's input dtype, or an error saying why not.

    8-bit into a 16-bit model is exact: values are kept for percentile models (the header's percentiles
    come from the same values) and scaled by 257 for fixed ones (255 -> 65535)."""
    want = tensors.to_numpy_dtype(spec.image.dtype)
    if source == want:
        return lambda tile: tile
    if source == np.uint8 and want == np.uint16:
        factor = 1 if spec.uses_percentiles else 257
        return lambda tile: tile.astype(np.uint16) * np.uint16(factor)
    raise InvalidArgument(f"the image is {source.name}; model {spec.name} takes {want.name}. Convert the "
                          f"image, or use a model exported with --input-dtype {source.name}")
