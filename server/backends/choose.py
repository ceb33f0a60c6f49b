"""Pick the engine for a model version: a matching TensorRT plan where possible, else ONNX Runtime."""

from __future__ import annotations

import logging
from pathlib import Path

from tilecast.proto import manifest as manifest_io
from tilecast.proto.v1 import manifest_pb2
from tilecast.server.backends.base import Backend
from tilecast.server.settings import Settings

log = logging.getLogger(__name__)


def open_instances(version_dir: Path, manifest: manifest_pb2.ModelManifest, settings: Settings,
                   instances: int, max_batch: int) -> list[Backend]:
    """One engine per instance; says in one log line which engine serves the version and why."""
    label = f"{manifest.name}/{manifest.version}"
    if "tensorrt" in settings.providers:
        from tilecast.server.backends.tensorrt import TensorRTBackend, usable_plan

        plan, reason = usable_plan(manifest)
        if plan is not None:
            log.info("%s: serving TensorRT plan %s", label, plan.path)
            return [TensorRTBackend(version_dir / plan.path) for _ in range(instances)]
        if manifest.plans:
            log.info("%s: %s; serving %s with ONNX Runtime", label, reason, manifest_io.ONNX_FILE)
    from tilecast.server.backends.ort import OnnxRuntimeBackend, provider_options

    providers = provider_options(settings.providers, manifest, max_batch=max_batch, fp16=settings.trt_fp16,
                                 cache=settings.engine_cache)
    threads = settings.threads_per_instance(instances)
    edge = manifest.tiling.tile_size + 2 * manifest.tiling.halo
    engines = [OnnxRuntimeBackend(version_dir / manifest_io.ONNX_FILE, threads, providers,
                                  usual_batch_pixels=max_batch * edge * edge) for _ in range(instances)]
    log.info("%s: ONNX Runtime with %s, %d instance(s) x %d thread(s)", label,
             ", ".join(engines[0].providers), instances, threads)
    return list(engines)
