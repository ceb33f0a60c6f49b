"""The one small protocol every engine implements; a new engine is one file beside this one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.generic]


@dataclass(frozen=True)
class TensorInfo:
    """An engine's view of one input or output: name, element type and shape (None = dynamic)."""

    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[int | None, ...]


class Backend(Protocol):
    """A loaded engine. `infer` is called from a worker thread and must release the GIL while it computes;
    `close` frees what the engine holds."""

    name: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def infer(self, feeds: dict[str, Array]) -> list[Array]:
        """Run one batch; outputs in the order of `outputs`."""
        ...

    def close(self) -> None:
        """Release the engine's memory (sessions, device buffers, streams) when its version is retired:
        unloaded, replaced or shut down. Called once no batch runs on it; `infer` refuses afterwards."""
        ...
