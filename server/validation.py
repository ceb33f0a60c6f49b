"""Check tiles against a model's manifest before anything of their claimed size is allocated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.v1 import inference_pb2, manifest_pb2
from tilecast.server.backends.base import Array


@dataclass(frozen=True)
class TileCheck:
    """A model's rules for its image input, read from the manifest once (a stream checks every tile)."""

    model: str
    input_name: str
    dtype_code: int
    dtype: np.dtype[np.generic]
    channels: int
    min_edge: int
    max_edge: int
    multiple: int
    max_batch: int
    # (dtype, shape, batched) forms that passed every check; shared by the threads of all calls
    _accepted: set[tuple[int, tuple[int, ...], bool]] = field(default_factory=set, compare=False, repr=False)

    @staticmethod
    def of(manifest: manifest_pb2.ModelManifest) -> TileCheck:
        spec, tiling = manifest.inputs[0], manifest.tiling
        return TileCheck(manifest.name, spec.name, spec.dtype, tensors.to_numpy_dtype(spec.dtype), spec.channels,
                         max(tiling.min_size, 1), tiling.max_size, max(tiling.size_multiple, 1),
                         tiling.max_batch_size)

    def _check_edges(self, height: int, width: int) -> None:
        for axis, size in (("height", height), ("width", width)):
            if size < self.min_edge or size > self.max_edge:
                raise InvalidArgument(
                    f"model {self.model}: tile {axis} {size} is outside the accepted range "
                    f"{self.min_edge}..{self.max_edge}"
                )
            if size % self.multiple:
                raise InvalidArgument(
                    f"model {self.model}: tile {axis} {size} is not a multiple of {self.multiple}; "
                    "pad tiles to the model's size multiple"
                )

    def view(self, dtype: int, shape: tuple[int, ...], data: bytes | memoryview, *, batched: bool) -> Array:
        """Validate a tile given by its parts and view its bytes as an array (no copy)."""
        form = (dtype, shape, batched)
        if form not in self._accepted:  # a stream's tiles share a form: check it once
            self._check_form(dtype, shape, batched)
            if len(self._accepted) < 64:
                self._accepted.add(form)
        want = math.prod(shape) * self.dtype.itemsize
        if len(data) != want:
            raise InvalidArgument(
                f"model {self.model}: tensor of shape {list(shape)} and dtype {self.dtype.name} "
                f"needs {want} bytes, received {len(data)}"
            )
        return np.frombuffer(data, dtype=self.dtype).reshape(shape)

    def _check_form(self, dtype: int, shape: tuple[int, ...], batched: bool) -> None:
        model = self.model
        if dtype != self.dtype_code:
            raise InvalidArgument(
                f"model {model}: input {self.input_name!r} expects dtype {self.dtype.name}, "
                f"received {tensors.dtype_name(cast(tensors.DType, dtype))}"
            )
        layout = "NHWC" if batched else "HWC"
        if len(shape) != len(layout):
            raise InvalidArgument(
                f"model {model}: tiles must be {layout} arrays of rank {len(layout)}, received shape {list(shape)}"
            )
        if shape[-1] != self.channels:
            raise InvalidArgument(
                f"model {model}: input {self.input_name!r} expects {self.channels} channels, received {shape[-1]} "
                f"(shape {list(shape)}, layout {layout})"
            )
        if batched and not 1 <= shape[0] <= self.max_batch:
            raise InvalidArgument(f"model {model}: batch of {shape[0]} tiles; send 1..{self.max_batch} per call")
        self._check_edges(shape[-3], shape[-2])


def parameter_feeds(
    manifest: manifest_pb2.ModelManifest, parameters: inference_pb2.ImageParameters
) -> dict[str, Array]:
    """Per-sample arrays for a model's image-global inputs (low/high per channel), from the header."""
    if manifest.preprocessing.mode != manifest_pb2.NORMALIZATION_MODE_PERCENTILE:
        return {}
    low, high = checked_range(manifest, np.asarray(parameters.channel_low, np.float32),
                              np.asarray(parameters.channel_high, np.float32))
    return dict(zip(range_input_names(manifest), (low, high), strict=True))


def range_input_names(manifest: manifest_pb2.ModelManifest) -> tuple[str, str]:
    """A percentile model's two image-global inputs: (low, high)."""
    return manifest.inputs[1].name, manifest.inputs[2].name


def checked_range(manifest: manifest_pb2.ModelManifest, low: Array, high: Array) -> tuple[Array, Array]:
    """A percentile model's channel_low / channel_high, one row per image or per tile (..., channels):
    as many values as the image has channels, finite, each high above its low."""
    channels = manifest.inputs[0].channels
    if low.shape[-1:] != (channels,) or high.shape[-1:] != (channels,):
        got = [a.shape[-1] if a.ndim else 0 for a in (low, high)]
        raise InvalidArgument(
            f"model {manifest.name} normalises each image by its percentiles: send channel_low and "
            f"channel_high with {channels} values per image (received {got[0]} and {got[1]})"
        )
    if not (np.isfinite(low).all() and np.isfinite(high).all()) or np.less_equal(high, low).any():
        raise InvalidArgument(f"model {manifest.name}: every channel_high must exceed its channel_low, "
                              "and both must be finite")
    return low, high
