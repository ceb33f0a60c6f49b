"""The model repository: models/<name>/<version>/{model.onnx, manifest.json}, loaded and checked."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tilecast.proto import manifest as manifest_io
from tilecast.proto import tensors
from tilecast.proto.errors import ManifestError, NotFound, TilecastError, Unavailable
from tilecast.proto.v1 import inference_pb2, manifest_pb2
from tilecast.server.backends.base import Backend, TensorInfo

log = logging.getLogger(__name__)

OpenBackend = Callable[[Path], Backend]


@dataclass
class ModelVersion:
    """One version directory: its manifest and engine when ready, or the reason it is not."""

    name: str
    version: int
    path: Path
    state: inference_pb2.ModelState = inference_pb2.MODEL_STATE_LOADING
    reason: str = ""
    manifest: manifest_pb2.ModelManifest | None = None
    backend: Backend | None = field(default=None, repr=False)

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


def scan(root: Path) -> list[tuple[str, int, Path]]:
    """(name, version, path) of every version directory; names and versions sorted."""
    if not root.is_dir():
        raise NotFound(f"model repository {root} does not exist or is not a folder")
    found = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for version_dir in model_dir.iterdir():
            if version_dir.is_dir() and version_dir.name.isdigit() and int(version_dir.name) > 0:
                found.append((model_dir.name, int(version_dir.name), version_dir))
    return sorted(found, key=lambda item: (item[0], item[1]))


def load_version(name: str, version: int, path: Path, open_backend: OpenBackend) -> ModelVersion:
    """Load one version; failures are recorded on the result, never raised."""
    entry = ModelVersion(name, version, path)
    try:
        manifest = manifest_io.load_version(path)
        backend = open_backend(path / manifest_io.ONNX_FILE)
        check_io(manifest, backend)
    except TilecastError as exc:
        entry.state, entry.reason = inference_pb2.MODEL_STATE_FAILED, str(exc)
        log.error("model %s version %d failed to load: %s", name, version, exc)
        return entry
    entry.manifest, entry.backend = manifest, backend
    entry.state = inference_pb2.MODEL_STATE_READY
    log.info("model %s version %d ready (%s)", name, version, backend.name)
    return entry


class Registry:
    """The loaded versions by name, and lookups that say exactly what is missing."""

    def __init__(self, versions: list[ModelVersion]) -> None:
        self.versions = versions

    def statuses(self) -> list[inference_pb2.ModelStatus]:
        return [v.status() for v in self.versions]

    def get(self, name: str, version: int = 0) -> ModelVersion:
        """The requested version, or the newest ready one when version is 0."""
        candidates = [v for v in self.versions if v.name == name]
        if not candidates:
            known = sorted({v.name for v in self.versions})
            raise NotFound(f"model {name!r} not found; this server has {known or 'no models'}")
        if version:
            match = [v for v in candidates if v.version == version]
            if not match:
                have = [v.version for v in candidates]
                raise NotFound(f"model {name!r} has no version {version}; versions: {have}")
            chosen = match[0]
        else:
            ready = [v for v in candidates if v.state == inference_pb2.MODEL_STATE_READY]
            if not ready:
                reasons = "; ".join(f"v{v.version}: {v.reason}" for v in candidates)
                raise Unavailable(f"model {name!r} has no ready version ({reasons})")
            chosen = ready[-1]
        if chosen.state != inference_pb2.MODEL_STATE_READY:
            raise Unavailable(f"model {name!r} version {chosen.version} is not ready: {chosen.reason}")
        return chosen
