"""ONNX Runtime engine: the portable backend that is always there (CPU; CUDA where installed)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tilecast.proto.errors import ManifestError
from tilecast.server.backends.base import Array, TensorInfo

log = logging.getLogger(__name__)

_NUMPY_BY_ORT_TYPE: dict[str, np.dtype[np.generic]] = {
    "tensor(uint8)": np.dtype("uint8"),
    "tensor(uint16)": np.dtype("uint16"),
    "tensor(float)": np.dtype("float32"),
    "tensor(float16)": np.dtype("float16"),
    "tensor(int32)": np.dtype("int32"),
    "tensor(int64)": np.dtype("int64"),
}


def _info(arg: ort.NodeArg) -> TensorInfo:
    dtype = _NUMPY_BY_ORT_TYPE.get(arg.type)
    if dtype is None:
        raise ManifestError(f"graph tensor {arg.name!r} has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorInfo(arg.name, dtype, shape)


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int, providers: list[str] | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        chosen = [p for p in (providers or available) if p in available] or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # ORT raises its own untyped errors for bad graphs
            raise ManifestError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self._inputs = [_info(a) for a in self._session.get_inputs()]
        self._outputs = [_info(a) for a in self._session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]
        log.debug("loaded %s with providers %s", path, self._session.get_providers())

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def infer(self, feeds: dict[str, Array]) -> list[Array]:
        return list(self._session.run(self._output_names, feeds))
