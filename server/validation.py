"""Check tiles against a model's manifest before anything of their claimed size is allocated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument, ResourceExhausted, echo
from tilecast.proto.spec import ModelSpec
from tilecast.proto.v1 import inference_pb2, manifest_pb2
from tilecast.server.backends.base import Array

# Bytes a reply carries besides its tensors (names, shapes, timing); generous, so the check errs on
# the side of computing a reply that then fits.
_REPLY_OVERHEAD = 4096


@dataclass(frozen=True)
class TileCheck:
    """A model's rules for its image input, read from the manifest once (a stream checks every tile),
    and the largest reply the server may send."""

    model: str
    input_name: str
    dtype_code: int
    dtype: np.dtype[np.generic]
    channels: int
    min_edge: int
    max_edge: int
    multiple: int
    max_batch: int
    max_reply_bytes: int
    # per output: bytes per pixel of a tile (an image output) or per tile (a vector of class scores)
    output_bytes: tuple[tuple[int, bool], ...]
    # (dtype, shape, batched, outputs) forms that passed every check; shared by the threads of all calls
    _accepted: set[tuple[int, tuple[int, ...], bool, tuple[int, ...] | None]] = field(
        default_factory=set, compare=False, repr=False)

    @staticmethod
    def of(spec: ModelSpec, max_reply_bytes: int) -> TileCheck:
        """The checks of a model's tiles; replies over `max_reply_bytes` are refused before computing."""
        image, tiling = spec.image, spec.tiling
        outputs = tuple((o.channels * tensors.to_numpy_dtype(o.dtype).itemsize, o.layout == manifest_pb2.LAYOUT_NHWC)
                        for o in spec.outputs)
        return TileCheck(spec.name, image.name, image.dtype, tensors.to_numpy_dtype(image.dtype), image.channels,
                         max(tiling.min_size, 1), tiling.max_size, max(tiling.size_multiple, 1),
                         tiling.max_batch_size, max_reply_bytes, outputs)

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

    def view(self, dtype: int, shape: tuple[int, ...], data: bytes | memoryview, *, batched: bool,
             outputs: tuple[int, ...] | None = None) -> Array:
        """Validate a tile given by its parts and view its bytes as an array (no copy). `outputs`: the
        indexes of the outputs the reply will carry (None: all), for the reply's size."""
        form = (dtype, shape, batched, outputs)
        if form not in self._accepted:  # a stream's tiles share a form: check it once
            self._check_form(dtype, shape, batched)
            self._check_reply(shape if batched else (1, *shape), outputs)
            if len(self._accepted) < 64:
                self._accepted.add(form)
        want = math.prod(shape) * self.dtype.itemsize
        if len(data) != want:
            raise InvalidArgument(
                f"model {self.model}: tensor of shape {echo(shape)} and dtype {self.dtype.name} "
                f"needs {want} bytes, received {len(data)}"
            )
        return np.frombuffer(data, dtype=self.dtype).reshape(shape)

    def reply_bytes(self, tiles: int, height: int, width: int, outputs: tuple[int, ...] | None = None) -> int:
        """The size of the reply to `tiles` tiles of height x width, from the model's output specs."""
        chosen = range(len(self.output_bytes)) if outputs is None else outputs
        return _REPLY_OVERHEAD + sum(
            tiles * (height * width if per_pixel else 1) * size
            for size, per_pixel in (self.output_bytes[i] for i in chosen))

    def _check_reply(self, shape: tuple[int, ...], outputs: tuple[int, ...] | None) -> None:
        """Refuse, before computing, a batch whose reply would exceed the largest message the server sends."""
        size = self.reply_bytes(shape[0], shape[1], shape[2], outputs)
        if size > self.max_reply_bytes:
            raise ResourceExhausted(
                f"model {self.model}: the reply to {shape[0]} tile(s) of {shape[1]}x{shape[2]} would be "
                f"{size:,} bytes, over the server's message limit of {self.max_reply_bytes:,} bytes "
                "(--max-message-bytes); send fewer or smaller tiles per call, or stream them")

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
                f"model {model}: tiles must be {layout} arrays of rank {len(layout)}, received shape {echo(shape)}"
            )
        if shape[-1] != self.channels:
            raise InvalidArgument(
                f"model {model}: input {self.input_name!r} expects {self.channels} channels, received {shape[-1]} "
                f"(shape {echo(shape)}, layout {layout})"
            )
        if batched and not 1 <= shape[0] <= self.max_batch:
            raise InvalidArgument(f"model {model}: batch of {shape[0]} tiles; send 1..{self.max_batch} per call")
        self._check_edges(shape[-3], shape[-2])


def parameter_feeds(spec: ModelSpec, parameters: inference_pb2.ImageParameters) -> dict[str, Array]:
    """Per-sample arrays for a model's image-global inputs (low/high per channel), from the header."""
    if spec.range_inputs is None:
        return {}
    low, high = checked_range(spec, np.asarray(parameters.channel_low, np.float32),
                              np.asarray(parameters.channel_high, np.float32))
    return dict(zip(spec.range_inputs, (low, high), strict=True))


def checked_range(spec: ModelSpec, low: Array, high: Array) -> tuple[Array, Array]:
    """A percentile model's channel_low / channel_high, one row per image or per tile (..., channels):
    as many values as the image has channels, finite, each high above its low."""
    channels = spec.channels
    if low.shape[-1:] != (channels,) or high.shape[-1:] != (channels,):
        got = [a.shape[-1] if a.ndim else 0 for a in (low, high)]
        raise InvalidArgument(
            f"model {spec.name} normalises each image by its percentiles: send channel_low and "
            f"channel_high with {channels} values per image (received {got[0]} and {got[1]})"
        )
    if not (np.isfinite(low).all() and np.isfinite(high).all()) or np.less_equal(high, low).any():
        raise InvalidArgument(f"model {spec.name}: every channel_high must exceed its channel_low, "
                              "and both must be finite")
    return low, high
