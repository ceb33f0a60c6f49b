"""ONNX Runtime engine: the portable backend that is always there (TensorRT EP, CUDA EP or CPU)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tilecast.proto import manifest as manifest_io
from tilecast.proto.errors import ManifestError, Unavailable
from tilecast.proto.v1 import manifest_pb2
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
# After an engine call on a large batch, the CPU arena gives back what it holds beyond what the session
# keeps: one batch of large tiles would otherwise leave gigabytes reserved for good (2.6 GB after two
# 2048² tiles of ihc-colorize). Batches up to the threshold (a full batch of the model's tiles with their
# halo, what serving sends; at least 8 tiles of 512²) keep the arena: CPU time per 512² tile, 1 thread,
# median of 6: arena 503 ms, shrinking after every call 612 ms, no arena at all 536 ms. The run options
# are only read, so every thread can share them.
_SHRINK_AFTER_PIXELS = 8 * 512 * 512
_SHRINK = ort.RunOptions()
_SHRINK.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def _run_options(feeds: dict[str, Array], shrink_after: int) -> ort.RunOptions | None:
    pixels = max((math.prod(a.shape[:3]) for a in feeds.values() if a.ndim == 4), default=0)
    return _SHRINK if pixels > shrink_after else None


ORT_PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "cpu": "CPUExecutionProvider"}


def _info(arg: Any) -> TensorInfo:
    dtype = _NUMPY_BY_ORT_TYPE.get(arg.type)
    if dtype is None:
        raise ManifestError(f"graph tensor {arg.name!r} has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorInfo(arg.name, dtype, shape)


def tensorrt_options(manifest: manifest_pb2.ModelManifest, *, max_batch: int, fp16: bool,
                     cache: Path) -> dict[str, Any]:
    """The TensorRT provider's options: an engine cache, and a profile naming every input of the graph
    (the provider refuses a profile that leaves out a dynamic input, such as channel_low)."""
    profile = manifest_io.engine_profile(manifest, max_batch)

    def shapes(which: int) -> str:  # ONNX Runtime's format: "name:1x64x64x3,other:1x3"
        return ",".join(f"{entry[0]}:{'x'.join(map(str, entry[which]))}" for entry in profile)

    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_fp16_enable": fp16,
        "trt_profile_min_shapes": shapes(1),
        "trt_profile_opt_shapes": shapes(2),
        "trt_profile_max_shapes": shapes(3),
    }


def provider_options(
    preferred: tuple[str, ...], manifest: manifest_pb2.ModelManifest, *, max_batch: int,
    fp16: bool, cache: Path,
) -> list[tuple[str, dict[str, Any]]]:
    """The providers to ask for, in order, from what is installed; CPU is always last.

    The TensorRT EP gets `tensorrt_options`.
    """
    available = set(ort.get_available_providers())
    chosen: list[tuple[str, dict[str, Any]]] = []
    for key in preferred:
        name = ORT_PROVIDERS[key]
        if name not in available or key == "cpu":
            continue
        options = tensorrt_options(manifest, max_batch=max_batch, fp16=fp16, cache=cache) if key == "tensorrt" else {}
        chosen.append((name, options))
    chosen.append((ORT_PROVIDERS["cpu"], {}))
    return chosen


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int, providers: list[tuple[str, dict[str, Any]]] | None = None,
                 usual_batch_pixels: int = 0) -> None:
        """`usual_batch_pixels`: the pixels of a full batch the server sends (tiles with halo); the CPU arena
        is shrunk only after batches larger than that (and than 8 tiles of 512²)."""
        self._shrink_after = max(_SHRINK_AFTER_PIXELS, usual_batch_pixels)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle engine threads must not spin: on a few cores they would starve the gRPC threads.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen = providers or [(ORT_PROVIDERS["cpu"], {})]
        try:
            session = ort.InferenceSession(
                str(path), options, providers=[name for name, _ in chosen],
                provider_options=[opts for _, opts in chosen])
        except Exception as exc:  # ORT raises its own untyped errors for bad graphs
            raise ManifestError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self._session: ort.InferenceSession | None = session
        self.providers = list(session.get_providers())
        self.inputs = [_info(a) for a in session.get_inputs()]
        self.outputs = [_info(a) for a in session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]
        self._path = path

    @property
    def closed(self) -> bool:
        return self._session is None

    def infer(self, feeds: dict[str, Array]) -> list[Array]:
        session = self._session
        if session is None:
            raise Unavailable(f"the engine of {self._path} has been closed (its version was unloaded); retry")
        return list(session.run(self._output_names, feeds, _run_options(feeds, self._shrink_after)))

    def close(self) -> None:
        """Drop the session: ONNX Runtime frees its memory when the last reference goes."""
        self._session = None
