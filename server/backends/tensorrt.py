"""Native TensorRT engine for `.plan` files listed in the manifest.

Deserialises the plan, sets the input shape of every batch, and runs on its own CUDA stream.
Needs the `tensorrt` and `cuda-python` packages and a GPU of the architecture the plan was built for.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from tilecast.proto.errors import Internal, ManifestError, Unavailable
from tilecast.proto.v1 import manifest_pb2
from tilecast.server.backends.base import Array, TensorInfo


def _check(result: Any) -> Any:
    """cuda-python calls return (error, *values); raise on an error, return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise Internal(f"CUDA call failed with error {int(error)} ({error})")
    return values[0] if len(values) == 1 else values


def gpu_architecture() -> str | None:
    """Compute capability of GPU 0 as 'major.minor', or None where there is no usable GPU."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    error, props = cudart.cudaGetDeviceProperties(0)
    if int(error) != 0:
        return None
    return f"{props.major}.{props.minor}"


def usable_plan(manifest: manifest_pb2.ModelManifest) -> tuple[manifest_pb2.EnginePlan | None, str]:
    """The manifest's plan for this GPU and TensorRT version, or None and the reason there is none."""
    if not manifest.plans:
        return None, "the manifest lists no TensorRT plans"
    try:
        import tensorrt
    except ImportError:
        return None, "TensorRT is not installed"
    arch = gpu_architecture()
    if arch is None:
        return None, "no CUDA GPU is available"
    for plan in manifest.plans:
        if plan.gpu_architecture == arch and plan.tensorrt_version == tensorrt.__version__:
            return plan, ""
    built = ", ".join(f"sm {p.gpu_architecture}/TensorRT {p.tensorrt_version}" for p in manifest.plans)
    return None, f"no plan matches this GPU (sm {arch}) and TensorRT {tensorrt.__version__}; plans: {built}"


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: Path) -> None:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        self._trt, self._cudart = trt, cudart
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ManifestError(f"TensorRT cannot deserialise {path}")
        self._context = self._engine.create_execution_context()
        self._stream = _check(cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._lock = threading.Lock()  # one execution context: one batch at a time
        self._closed = False
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        infos = {n: self._info(n) for n in names}
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [infos[n] for n in names if is_input[n]]
        self.outputs = [infos[n] for n in names if not is_input[n]]

    def _info(self, name: str) -> TensorInfo:
        dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
        shape = tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(name))
        return TensorInfo(name, dtype, shape)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _check(self._cudart.cudaFree(pointer))
            pointer = int(_check(self._cudart.cudaMalloc(nbytes)))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def close(self) -> None:
        """Free the device buffers and the CUDA stream, then the execution context and the engine
        (their device memory goes with them): without this every reload would leak GPU memory."""
        with self._lock:  # after a batch that still runs
            if self._closed:
                return
            self._closed = True
            try:
                _check(self._cudart.cudaStreamSynchronize(self._stream))
                for pointer, _size in self._buffers.values():
                    _check(self._cudart.cudaFree(pointer))
                _check(self._cudart.cudaStreamDestroy(self._stream))
            finally:
                self._buffers.clear()
                del self._context, self._engine  # TensorRT frees their device memory as they go

    def infer(self, feeds: dict[str, Array]) -> list[Array]:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            if self._closed:
                raise Unavailable("this TensorRT engine has been closed (its version was unloaded); retry")
            for info in self.inputs:
                array = np.ascontiguousarray(feeds[info.name], dtype=info.dtype)
                self._context.set_input_shape(info.name, array.shape)
                pointer = self._device_buffer(info.name, array.nbytes)
                _check(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, h2d, self._stream))
                self._context.set_tensor_address(info.name, pointer)
            results = []
            for info in self.outputs:
                shape = tuple(self._context.get_tensor_shape(info.name))
                result = np.empty(shape, info.dtype)
                self._context.set_tensor_address(info.name, self._device_buffer(info.name, result.nbytes))
                results.append(result)
            if not self._context.execute_async_v3(self._stream):
                raise Internal("TensorRT execution failed")
            for info, result in zip(self.outputs, results, strict=True):
                pointer = self._buffers[info.name][0]
                _check(cudart.cudaMemcpyAsync(result.ctypes.data, pointer, result.nbytes, d2h, self._stream))
            _check(cudart.cudaStreamSynchronize(self._stream))
        return results
