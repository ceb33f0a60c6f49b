"""`tilecast export inspect` and `verify`: read a version without opening the graph, or re-check it."""

from __future__ import annotations

from pathlib import Path

from tilecast.export import parity
from tilecast.proto import manifest as manifest_io
from tilecast.proto import tensors
from tilecast.proto.errors import ManifestError
from tilecast.proto.v1 import manifest_pb2


def _enum(enum: object, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()  # type: ignore[attr-defined]


def describe(manifest: manifest_pb2.ModelManifest) -> list[tuple[str, str]]:
    """The manifest as (field, value) rows for a person to read."""
    t, p = manifest.tiling, manifest.provenance

    def specs(items: list[manifest_pb2.TensorSpec]) -> str:
        return "; ".join(f"{s.name}: {tensors.dtype_name(s.dtype)} x {s.channels} "
                         f"{_enum(manifest_pb2.Layout, s.layout, 'LAYOUT_')}" for s in items)

    rows = [
        ("model", f"{manifest.name} version {manifest.version}"),
        ("kind", _enum(manifest_pb2.ModelKind, manifest.kind, "MODEL_KIND_")),
        ("description", manifest.description),
        ("inputs", specs(list(manifest.inputs))),
        ("outputs", specs(list(manifest.outputs))),
        ("tiling", f"tile {t.tile_size}, halo {t.halo} (receptive radius {t.receptive_radius}), "
                   f"multiple of {t.size_multiple}, edges {t.min_size}..{t.max_size}, batch <= {t.max_batch_size}"),
        ("image-global ops", "yes: crop stitching is not exact" if t.has_global_ops else "no: crop stitching is exact"),
        ("preprocessing", manifest.preprocessing.description),
        ("classes", ", ".join(manifest.class_names) or "-"),
        ("architecture", p.architecture),
        ("training data", p.training_data or "-"),
        ("reproduce", p.command or "-"),
        ("metrics", ", ".join(f"{k} {v:.4g}" for k, v in sorted(p.metrics.items())) or "-"),
        ("parity", ", ".join(f"{k} {v:.3g}" for k, v in sorted(p.parity.items())) or "-"),
        ("exported", f"{p.created} by tilecast {p.tilecast_version}, {p.exporter}, opset {p.opset}"),
        ("files", "; ".join(f"{f.path} ({f.size_bytes} bytes, sha256 {f.sha256[:12]}...)" for f in manifest.files)),
        ("engines", ", ".join(manifest.backends) + "".join(
            f"; TensorRT {e.tensorrt_version} sm {e.gpu_architecture} {e.precision}" for e in manifest.plans)),
    ]
    return rows


def verify(version_dir: Path) -> list[str]:
    """Every problem with a version: checksums, manifest against itself, and drift of the parity probe."""
    try:
        manifest = manifest_io.load_version(version_dir)
    except ManifestError as exc:
        return [str(exc)]
    listed = {f.path for f in manifest.files}
    if manifest_io.PROBE_FILE not in listed:
        return [f"{version_dir}: no {manifest_io.PROBE_FILE} was recorded at export; parity cannot be re-run"]
    problems = parity.check_probe(version_dir / manifest_io.PROBE_FILE, version_dir / manifest_io.ONNX_FILE,
                                  manifest.inputs[0].name)
    return [f"{version_dir}: {p}" for p in problems]
