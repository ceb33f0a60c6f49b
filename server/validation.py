"""Check tiles against a model's manifest before anything of their claimed size is allocated."""

from __future__ import annotations

import math

import numpy as np

from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.v1 import inference_pb2, manifest_pb2
from tilecast.server.backends.base import Array


def _check_edges(model: str, tiling: manifest_pb2.Tiling, height: int, width: int) -> None:
    for axis, size in (("height", height), ("width", width)):
        if size < max(tiling.min_size, 1) or size > tiling.max_size:
            raise InvalidArgument(
                f"model {model}: tile {axis} {size} is outside the accepted range "
                f"{max(tiling.min_size, 1)}..{tiling.max_size}"
            )
        if size % tiling.size_multiple:
            raise InvalidArgument(
                f"model {model}: tile {axis} {size} is not a multiple of {tiling.size_multiple}; "
                "pad tiles to the model's size multiple"
            )


def check_image_tensor(
    manifest: manifest_pb2.ModelManifest, tensor: inference_pb2.Tensor, *, batched: bool
) -> Array:
    """Validate an HWC tile (or NHWC batch) for the manifest's first input and view it as an array."""
    spec = manifest.inputs[0]
    model = manifest.name
    if tensor.dtype != spec.dtype:
        raise InvalidArgument(
            f"model {model}: input {spec.name!r} expects dtype {tensors.dtype_name(spec.dtype)}, "
            f"received {tensors.dtype_name(tensor.dtype)}"
        )
    shape = list(tensor.shape)
    layout = "NHWC" if batched else "HWC"
    if len(shape) != len(layout):
        raise InvalidArgument(
            f"model {model}: tiles must be {layout} arrays of rank {len(layout)}, received shape {shape}"
        )
    if shape[-1] != spec.channels:
        raise InvalidArgument(
            f"model {model}: input {spec.name!r} expects {spec.channels} channels, received {shape[-1]} "
            f"(shape {shape}, layout {layout})"
        )
    if batched and not 1 <= shape[0] <= manifest.tiling.max_batch_size:
        raise InvalidArgument(
            f"model {model}: batch of {shape[0]} tiles; send 1..{manifest.tiling.max_batch_size} per call"
        )
    _check_edges(model, manifest.tiling, shape[-3], shape[-2])
    dtype = tensors.to_numpy_dtype(spec.dtype)
    want = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != want:
        raise InvalidArgument(
            f"model {model}: tensor of shape {shape} and dtype {dtype.name} "
            f"needs {want} bytes, received {len(tensor.data)}"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def parameter_feeds(
    manifest: manifest_pb2.ModelManifest, parameters: inference_pb2.ImageParameters
) -> dict[str, Array]:
    """Per-sample arrays for a model's image-global inputs (low/high per channel), from the header."""
    if manifest.preprocessing.mode != manifest_pb2.NORMALIZATION_MODE_PERCENTILE:
        return {}
    channels = manifest.inputs[0].channels
    low, high = list(parameters.channel_low), list(parameters.channel_high)
    if len(low) != channels or len(high) != channels:
        raise InvalidArgument(
            f"model {manifest.name} normalises each image by its percentiles: send channel_low and "
            f"channel_high with {channels} values each (received {len(low)} and {len(high)})"
        )
    if any(h <= lo for lo, h in zip(low, high, strict=True)):
        raise InvalidArgument(f"model {manifest.name}: every channel_high must exceed its channel_low")
    names = [spec.name for spec in manifest.inputs[1:3]]
    return {names[0]: np.asarray(low, np.float32), names[1]: np.asarray(high, np.float32)}
