"""A no-op model (output = input): for measuring the pipeline itself, and for checking a deployment."""

from __future__ import annotations

from pathlib import Path

from tilecast.proto import manifest as manifest_io
from tilecast.proto.v1 import manifest_pb2


def write_identity_model(repository: Path, name: str = "identity", channels: int = 3, dtype: str = "uint8",
                         tile_size: int = 512) -> Path:
    """models/<name>/1 with an ONNX Identity graph over NHWC tiles of any size."""
    import onnx
    from onnx import helper

    elem = {"uint8": onnx.TensorProto.UINT8, "uint16": onnx.TensorProto.UINT16}[dtype]
    version_dir = repository / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["output"])], name,
        [helper.make_tensor_value_info("image", elem, ["batch", "height", "width", channels])],
        [helper.make_tensor_value_info("output", elem, ["batch", "height", "width", channels])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, version_dir / manifest_io.ONNX_FILE)
    wire = manifest_pb2.DTYPE_UINT8 if dtype == "uint8" else manifest_pb2.DTYPE_UINT16
    manifest = manifest_pb2.ModelManifest(
        name=name, version=1, kind=manifest_pb2.MODEL_KIND_GENERATOR, description="no-op: output = input",
        inputs=[manifest_pb2.TensorSpec(name="image", dtype=wire, channels=channels, layout=manifest_pb2.LAYOUT_NHWC)],
        outputs=[manifest_pb2.TensorSpec(name="output", dtype=wire, channels=channels, layout=manifest_pb2.LAYOUT_NHWC,
                                         interpretation=manifest_pb2.OUTPUT_INTERPRETATION_IMAGE)],
        tiling=manifest_pb2.Tiling(tile_size=tile_size, halo=0, size_multiple=1, min_size=1, max_size=4096,
                                   max_batch_size=16),
        backends=["onnxruntime"])
    manifest.files.extend(manifest_io.checksum_files(version_dir, [manifest_io.ONNX_FILE]))
    manifest_io.write_manifest(manifest, version_dir / manifest_io.MANIFEST_FILE)
    return version_dir
