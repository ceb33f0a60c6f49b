from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument

dtypes = st.sampled_from([np.uint8, np.uint16, np.float32, np.float16, np.int32, np.int64])


@given(dtypes.flatmap(lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=1, max_dims=4, max_side=6))))
def test_round_trip(array: np.ndarray) -> None:
    decoded = tensors.decode(tensors.encode(array))
    assert decoded.dtype == array.dtype.newbyteorder("<") and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_big_endian_arrays_travel_little_endian() -> None:
    array = np.arange(6, dtype=">u2").reshape(2, 3)
    message = tensors.encode(array)
    assert message.data == np.arange(6, dtype="<u2").tobytes()


def test_byte_count_is_checked() -> None:
    message = tensors.encode(np.zeros((2, 3), np.uint16))
    message.data += b"\x00"
    with pytest.raises(InvalidArgument, match="needs 12 bytes, received 13"):
        tensors.decode(message)


def test_unsupported_dtype() -> None:
    with pytest.raises(InvalidArgument, match="complex128"):
        tensors.encode(np.zeros(3, np.complex128))
