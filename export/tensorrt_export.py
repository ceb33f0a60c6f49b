"""`tilecast export tensorrt`: build TensorRT engines from a version's ONNX model, beside it.

TensorRT 10 takes precision from builder flags; TensorRT 11 and later take it from the ONNX dtypes,
so fp16 engines are built from the fp16 ONNX variant. Engines are named by GPU architecture and
TensorRT version and recorded in the manifest with their parity against ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tilecast.proto import manifest as manifest_io
from tilecast.proto import tensors
from tilecast.proto.errors import FailedPrecondition
from tilecast.proto.v1 import manifest_pb2


def require_tensorrt() -> tuple[object, str]:
    """(the tensorrt module, GPU compute capability), or a one-line reason why there are none."""
    try:
        import tensorrt
    except ImportError:
        raise FailedPrecondition("TensorRT is not installed (pip install 'tilecast[gpu]' on a GPU host)") from None
    from tilecast.server.backends.tensorrt import gpu_architecture

    arch = gpu_architecture()
    if arch is None:
        raise FailedPrecondition("no CUDA GPU is available to build a TensorRT engine for")
    return tensorrt, arch


def build_plan(version_dir: Path, fp16: bool, timing_cache: Path | None, hardware_compatible: bool) -> Path:
    """Build one engine for this GPU, check it against ONNX Runtime, record it in the manifest."""
    trt, arch = require_tensorrt()
    manifest = manifest_io.load_version(version_dir)
    major = int(str(trt.__version__).split(".")[0])  # type: ignore[attr-defined]
    source = version_dir / ("model.fp16.onnx" if fp16 and major >= 11 else manifest_io.ONNX_FILE)
    if not source.is_file():
        raise FailedPrecondition(f"{source.name} is missing: export with --fp16 first")
    logger = trt.Logger(trt.Logger.WARNING)  # type: ignore[attr-defined]
    builder = trt.Builder(logger)  # type: ignore[attr-defined]
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)  # type: ignore[attr-defined]
    if not parser.parse(source.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise FailedPrecondition(f"TensorRT cannot parse {source.name}: {errors}")
    config = builder.create_builder_config()
    if fp16 and major < 11:
        config.set_flag(trt.BuilderFlag.FP16)  # type: ignore[attr-defined]
    if hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS  # type: ignore[attr-defined]
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    shapes = manifest_io.engine_profile(manifest, manifest.tiling.max_batch_size)
    profile = builder.create_optimization_profile()
    for name, low, opt, high in shapes:  # every input: TensorRT refuses a profile missing a dynamic one
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    _, low, opt, high = shapes[0]  # the image's range is the plan's, as the manifest records it
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FailedPrecondition("TensorRT could not build an engine; see its messages above")
    if timing_cache:
        timing_cache.write_bytes(bytes(cache.serialize()))
    precision = "fp16" if fp16 else "fp32"
    name = f"model.sm{arch.replace('.', '')}.trt{trt.__version__}.{precision}.plan"  # type: ignore[attr-defined]
    (version_dir / name).write_bytes(bytes(serialized))
    plan = manifest_pb2.EnginePlan(path=name, gpu_architecture=arch, tensorrt_version=str(trt.__version__),  # type: ignore[attr-defined]
                                   precision=precision, min_shape=low, opt_shape=opt, max_shape=high)
    plan.parity.update(_parity(version_dir, name, manifest))
    manifest.plans.append(plan)
    manifest.backends.append("tensorrt")
    kept = [f for f in manifest.files if f.path != name]
    del manifest.files[:]
    manifest.files.extend(kept + manifest_io.checksum_files(version_dir, [name]))
    temporary = version_dir / f".{manifest_io.MANIFEST_FILE}.partial"
    manifest_io.write_manifest(manifest, temporary)
    temporary.replace(version_dir / manifest_io.MANIFEST_FILE)
    return version_dir / name


def _parity(version_dir: Path, plan_name: str, manifest: manifest_pb2.ModelManifest) -> dict[str, float]:
    import onnxruntime as ort

    from tilecast.server.backends.tensorrt import TensorRTBackend

    feeds = probe_feeds(manifest, batch=2)
    engine = TensorRTBackend(version_dir / plan_name).infer(feeds)
    reference = ort.InferenceSession(str(version_dir / manifest_io.ONNX_FILE)).run(None, feeds)
    diff = max(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) for a, b in zip(engine, reference,
                                                                                                 strict=True))
    return {"max_abs_diff_vs_onnxruntime": diff}


def probe_feeds(manifest: manifest_pb2.ModelManifest, batch: int) -> dict[str, np.ndarray]:
    """A batch of random tiles of the profile's best size and, for a percentile model, the image
    dtype's whole range as channel_low / channel_high: a value for every input the graph takes."""
    (image, _, shape, _), *vectors = manifest_io.engine_profile(manifest, batch)
    dtype = tensors.to_numpy_dtype(manifest.inputs[0].dtype)
    top = float(np.iinfo(dtype.str).max) if dtype.kind in "ui" else 1.0
    feeds = {image: (np.random.default_rng(0).random(shape) * top).astype(dtype)}
    for index, (name, _, vector, _) in enumerate(vectors):  # inputs 1 and 2: low, then high
        feeds[name] = np.full(vector, (0.0, top)[index], np.float32)
    return feeds
