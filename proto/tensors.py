"""Tensor messages <-> NumPy arrays: raw little-endian bytes with an explicit dtype and shape."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tilecast.proto.errors import InvalidArgument
from tilecast.proto.v1 import inference_pb2, manifest_pb2

DType = manifest_pb2.DType

_NUMPY_BY_DTYPE: dict[manifest_pb2.DType, np.dtype[np.generic]] = {
    manifest_pb2.DTYPE_UINT8: np.dtype("<u1"),
    manifest_pb2.DTYPE_UINT16: np.dtype("<u2"),
    manifest_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    manifest_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    manifest_pb2.DTYPE_INT32: np.dtype("<i4"),
    manifest_pb2.DTYPE_INT64: np.dtype("<i8"),
}
_DTYPE_BY_NAME = {dt.name: code for code, dt in _NUMPY_BY_DTYPE.items()}
# Keyed by np.dtype itself (hashable, equal across byte orders' canonical forms): a hot-path lookup
# without the cost of building dtype names.
_DTYPE_BY_NUMPY = {dt: code for code, dt in _NUMPY_BY_DTYPE.items()} | {
    dt.newbyteorder(">"): code for code, dt in _NUMPY_BY_DTYPE.items()}


def dtype_name(dtype: manifest_pb2.DType) -> str:
    """Short lower-case name of a wire dtype, e.g. 'uint8', for messages and tables."""
    if dtype in _NUMPY_BY_DTYPE:
        return _NUMPY_BY_DTYPE[dtype].name
    return manifest_pb2.DType.Name(dtype) if dtype in manifest_pb2.DType.values() else str(dtype)


def to_numpy_dtype(dtype: manifest_pb2.DType) -> np.dtype[np.generic]:
    """The little-endian NumPy dtype of a wire dtype."""
    try:
        return _NUMPY_BY_DTYPE[dtype]
    except KeyError:
        raise InvalidArgument(
            f"unsupported tensor dtype {dtype_name(dtype)}; "
            f"use one of {', '.join(sorted(_DTYPE_BY_NAME))}"
        ) from None


def from_numpy_dtype(dtype: npt.DTypeLike) -> manifest_pb2.DType:
    """The wire dtype of a NumPy dtype."""
    code = _DTYPE_BY_NUMPY.get(dtype if isinstance(dtype, np.dtype) else np.dtype(dtype))
    if code is None:
        raise InvalidArgument(
            f"arrays of dtype {np.dtype(dtype).name} cannot travel; use one of {', '.join(sorted(_DTYPE_BY_NAME))}"
        )
    return code


def packed(array: npt.NDArray[np.generic]) -> tuple[manifest_pb2.DType, npt.NDArray[np.generic]]:
    """The wire dtype of an array and the array as it travels: C order, little-endian (a copy only if needed)."""
    code = from_numpy_dtype(array.dtype)
    wire = _NUMPY_BY_DTYPE[code]
    return code, array if array.dtype == wire and array.flags.c_contiguous else np.ascontiguousarray(array, dtype=wire)


def encode(array: npt.NDArray[np.generic]) -> inference_pb2.Tensor:
    """Pack an array into a Tensor message (C order, little-endian)."""
    code, data = packed(array)
    return inference_pb2.Tensor(dtype=code, shape=data.shape, data=data.tobytes())


def decode(tensor: inference_pb2.Tensor) -> npt.NDArray[np.generic]:
    """View a Tensor message as a read-only array, after checking the byte count against the shape.

    Nothing of the claimed shape is allocated before the check: the result is a view on the bytes.
    """
    dtype = to_numpy_dtype(tensor.dtype)
    shape = tuple(int(s) for s in tensor.shape)
    if any(s < 0 for s in shape):
        raise InvalidArgument(f"tensor shape {list(shape)} has a negative dimension")
    want = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != want:
        raise InvalidArgument(
            f"tensor of shape {list(shape)} and dtype {dtype.name} needs {want} bytes, "
            f"received {len(tensor.data)}"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)
