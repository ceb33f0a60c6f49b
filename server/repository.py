"""The model repository: models/<name>/<version>/{model.onnx, manifest.json}, loaded and checked."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tilecast.proto import manifest as manifest_io
from tilecast.proto import tensors
from tilecast.proto.errors import ManifestError, NotFound, TilecastError
from tilecast.proto.spec import ModelSpec
from tilecast.proto.v1 import inference_pb2, manifest_pb2
from tilecast.server.backends.base import Backend, TensorInfo

log = logging.getLogger(__name__)

OpenBackends = Callable[[Path, manifest_pb2.ModelManifest], list[Backend]]  # one engine per instance


@dataclass
class ModelVersion:
    """One version directory: its manifest and engine when ready, or the reason it is not."""

    name: str
    version: int
    path: Path
    state: inference_pb2.ModelState = inference_pb2.MODEL_STATE_LOADING
    reason: str = ""
    manifest: manifest_pb2.ModelManifest | None = None
    backends: list[Backend] = field(default_factory=list, repr=False)
    fingerprint: str = ""  # sha256 of manifest.json, "" until loaded: a changed file means a replaced version

    def status(self) -> inference_pb2.ModelStatus:
        kind = self.manifest.kind if self.manifest else manifest_pb2.MODEL_KIND_UNSPECIFIED
        return inference_pb2.ModelStatus(
            name=self.name, version=self.version, state=self.state, reason=self.reason, kind=kind
        )


def _spec_problems(role: str, declared: list[manifest_pb2.TensorSpec], graph: list[TensorInfo]) -> list[str]:
    """Where the manifest's declared tensors disagree with the ONNX graph's."""
    problems = []
    by_name = {info.name: info for info in graph}
    for spec in declared:
        info = by_name.get(spec.name)
        if info is None:
            problems.append(f"{role} {spec.name!r} is not in the graph (graph has {sorted(by_name)})")
            continue
        want = tensors.to_numpy_dtype(spec.dtype)
        if info.dtype != want:
            problems.append(f"{role} {spec.name!r} is {info.dtype.name} in the graph, {want.name} in the manifest")
        rank = 4 if spec.layout == manifest_pb2.LAYOUT_NHWC else 2
        if len(info.shape) != rank:
            problems.append(f"{role} {spec.name!r} has rank {len(info.shape)} in the graph, layout needs {rank}")
        elif info.shape[-1] is not None and info.shape[-1] != spec.channels:
            problems.append(
                f"{role} {spec.name!r} has {info.shape[-1]} channels in the graph, {spec.channels} in the manifest"
            )
    return problems


def check_io(manifest: manifest_pb2.ModelManifest, backend: Backend) -> None:
    """Raise ManifestError when the manifest's inputs/outputs do not match the loaded graph."""
    problems = _spec_problems("input", list(manifest.inputs), backend.inputs)
    problems += _spec_problems("output", list(manifest.outputs), backend.outputs)
    declared = {s.name for s in manifest.inputs}
    extra = [i.name for i in backend.inputs if i.name not in declared]
    if extra:
        problems.append(f"graph inputs {extra} are not declared in the manifest")
    if problems:
        raise ManifestError("; ".join(problems))


def require_repository(root: Path) -> None:
    if not root.is_dir():
        raise NotFound(f"model repository {root} does not exist or is not a folder: pass --repository "
                       "(or TILECAST_REPOSITORY) naming a folder of <model>/<version>/ directories")


def scan(root: Path) -> list[tuple[str, int, Path]]:
    """(name, version, path) of every version directory; names and versions sorted."""
    require_repository(root)
    found = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for version_dir in model_dir.iterdir():
            if version_dir.is_dir() and version_dir.name.isdigit() and int(version_dir.name) > 0:
                found.append((model_dir.name, int(version_dir.name), version_dir))
    return sorted(found, key=lambda item: (item[0], item[1]))


def fingerprint(version_dir: Path) -> str:
    """Identity of a version's contents: the manifest lists the sha256 of every other file."""
    try:
        return manifest_io.sha256_file(version_dir / manifest_io.MANIFEST_FILE)
    except OSError:
        return "missing"


def load_version(name: str, version: int, path: Path, open_backends: OpenBackends) -> ModelVersion:
    """Load one version; failures are recorded on the result, never raised."""
    entry = ModelVersion(name, version, path, fingerprint=fingerprint(path))
    backends: list[Backend] = []
    try:
        manifest = manifest_io.load_version(path)
        ModelSpec.of(manifest)  # its inputs fit its preprocessing
        backends = open_backends(path, manifest)
        for backend in backends:
            check_io(manifest, backend)
    except Exception as exc:
        _close(backends)
        return _failed(entry, exc)
    entry.manifest, entry.backends = manifest, backends
    entry.state = inference_pb2.MODEL_STATE_READY
    log.info("model %s version %d ready (%s)", name, version, backends[0].name)
    return entry


def _close(backends: list[Backend]) -> None:
    """Free the engines a version opened before it failed to load (an engine each, or GPU memory, otherwise)."""
    for backend in backends:
        try:
            backend.close()
        except Exception:
            log.exception("closing an engine of a version that failed to load failed")


def _failed(entry: ModelVersion, exc: Exception) -> ModelVersion:
    name, version = entry.name, entry.version
    if isinstance(exc, TilecastError):
        entry.state, entry.reason = inference_pb2.MODEL_STATE_FAILED, str(exc)
        log.error("model %s version %d failed to load: %s", name, version, exc)
        return entry
    # An engine's own failure (driver, plugin): report it, keep the others serving.
    entry.state, entry.reason = inference_pb2.MODEL_STATE_FAILED, f"{type(exc).__name__}: {exc}"
    log.error("model %s version %d failed to load", name, version, exc_info=exc)
    return entry
