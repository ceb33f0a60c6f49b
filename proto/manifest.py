"""The model manifest on disk: models/<name>/<version>/manifest.json, validated against its files."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import json_format

from tilecast.proto.errors import ManifestError
from tilecast.proto.v1 import manifest_pb2

MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
PROBE_FILE = "parity_probe.npz"  # an input and the graph's answer, recorded at export for `verify`
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

ModelManifest = manifest_pb2.ModelManifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_files(version_dir: Path, names: Iterable[str]) -> list[manifest_pb2.FileChecksum]:
    """FileChecksum entries for files inside a version directory."""
    return [
        manifest_pb2.FileChecksum(
            path=name, sha256=sha256_file(version_dir / name), size_bytes=(version_dir / name).stat().st_size
        )
        for name in sorted(names)
    ]


def to_json(manifest: ModelManifest) -> str:
    return json_format.MessageToJson(manifest, indent=2, preserving_proto_field_name=True) + "\n"


def write_manifest(manifest: ModelManifest, path: Path) -> None:
    path.write_text(to_json(manifest))


def read_manifest(path: Path) -> ModelManifest:
    """Parse manifest.json; a malformed file raises ManifestError naming the file and the problem."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return json_format.Parse(text, ModelManifest())
    except json_format.ParseError as exc:
        raise ManifestError(f"{path} is not a valid manifest: {exc}") from exc


def manifest_problems(manifest: ModelManifest) -> list[str]:
    """Everything wrong with a manifest on its own, without looking at files (empty when valid)."""
    problems = []
    if not MODEL_NAME.match(manifest.name):
        problems.append(f"name {manifest.name!r} must be 1-128 letters, digits, '_', '.' or '-'")
    if manifest.version < 1:
        problems.append(f"version must be a positive integer, got {manifest.version}")
    if manifest.kind == manifest_pb2.MODEL_KIND_UNSPECIFIED:
        problems.append("kind is not set (generator, segmenter or classifier)")
    if not manifest.inputs:
        problems.append("no inputs are declared")
    if not manifest.outputs:
        problems.append("no outputs are declared")
    for role, specs in (("input", manifest.inputs), ("output", manifest.outputs)):
        for spec in specs:
            if not spec.name:
                problems.append(f"an {role} has no name")
            if spec.dtype == manifest_pb2.DTYPE_UNSPECIFIED:
                problems.append(f"{role} {spec.name!r} has no dtype")
            if spec.channels < 1:
                problems.append(f"{role} {spec.name!r} must have at least one channel")
    t = manifest.tiling
    if t.size_multiple < 1:
        problems.append(f"tiling.size_multiple must be >= 1, got {t.size_multiple}")
    else:
        for field in ("tile_size", "halo", "min_size"):
            value = getattr(t, field)
            if value % t.size_multiple:
                problems.append(f"tiling.{field}={value} is not a multiple of size_multiple={t.size_multiple}")
    if manifest.kind == manifest_pb2.MODEL_KIND_CLASSIFIER:  # tile_size is the patch size, any edge
        if t.tile_size < 1:
            problems.append(f"tiling.tile_size (the patch size) must be positive, got {t.tile_size}")
    elif t.tile_size < 16 or t.tile_size % 16:  # image outputs are written in tiles of this edge
        problems.append(f"tiling.tile_size must be a positive multiple of 16, got {t.tile_size}")
    if t.halo < 0:
        problems.append(f"tiling.halo must be >= 0, got {t.halo}")
    if t.max_size < t.tile_size + 2 * t.halo:
        problems.append(
            f"tiling.max_size={t.max_size} is smaller than tile_size + 2*halo = {t.tile_size + 2 * t.halo}"
        )
    if t.max_batch_size < 1:
        problems.append(f"tiling.max_batch_size must be >= 1, got {t.max_batch_size}")
    return problems


def file_problems(manifest: ModelManifest, version_dir: Path) -> list[str]:
    """Mismatches between the manifest's checksums and the files in its version directory."""
    problems = []
    listed = {entry.path for entry in manifest.files}
    if ONNX_FILE not in listed:
        problems.append(f"{ONNX_FILE} is not listed in files")
    for entry in manifest.files:
        path = version_dir / entry.path
        if not path.is_file():
            problems.append(f"{entry.path} is listed but missing")
            continue
        size = path.stat().st_size
        if size != entry.size_bytes:
            problems.append(f"{entry.path} has {size} bytes, the manifest says {entry.size_bytes}")
        elif sha256_file(path) != entry.sha256:
            problems.append(f"{entry.path} does not match its sha256 (changed or corrupt)")
    return problems


def load_version(version_dir: Path) -> ModelManifest:
    """Read and fully check one version directory's manifest; raises ManifestError listing all problems."""
    manifest = read_manifest(version_dir / MANIFEST_FILE)
    problems = manifest_problems(manifest)
    name, version = version_dir.parent.name, version_dir.name
    if manifest.name != name:
        problems.append(f"manifest name {manifest.name!r} differs from its folder {name!r}")
    if str(manifest.version) != version:
        problems.append(f"manifest version {manifest.version} differs from its folder {version!r}")
    problems += file_problems(manifest, version_dir)
    if problems:
        raise ManifestError(f"{version_dir}: " + "; ".join(problems))
    return manifest


Shape = tuple[int, ...]


def engine_profile(manifest: ModelManifest, max_batch: int) -> list[tuple[str, Shape, Shape, Shape]]:
    """(name, min, opt, max) shapes of every graph input, for a TensorRT optimisation profile.

    TensorRT (and ONNX Runtime's TensorRT provider, once any profile is given) needs one for each input
    whose shape is dynamic: the image, and a percentile model's per-sample channel_low/high (N, C).
    Tiles run from the smallest allowed edge to max_size, best at a tile with its halo.
    """
    t = manifest.tiling
    smallest, best = max(t.min_size, t.size_multiple), t.tile_size + 2 * t.halo
    profile = []
    for spec in manifest.inputs:
        c = spec.channels
        if spec.layout == manifest_pb2.LAYOUT_NHWC:
            shapes: tuple[Shape, Shape, Shape] = ((1, smallest, smallest, c), (max_batch, best, best, c),
                                                  (max_batch, t.max_size, t.max_size, c))
        elif spec.layout == manifest_pb2.LAYOUT_NC:
            shapes = ((1, c), (max_batch, c), (max_batch, c))
        else:
            raise ManifestError(f"input {spec.name!r} has layout {manifest_pb2.Layout.Name(spec.layout)}: "
                                "a TensorRT profile needs NHWC images or NC vectors")
        profile.append((spec.name, *shapes))
    return profile
