"""`tilecast export onnx`: a trained generator checkpoint -> a checked version in a model repository."""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

import tilecast
from tilecast.export.receptive_field import has_global_ops, measure_receptive_radius
from tilecast.export.wrappers import Uint8ImageGenerator
from tilecast.proto import manifest as manifest_io
from tilecast.proto.v1 import manifest_pb2
from tilecast.training.data.paired import load_paired
from tilecast.training.models import create_model
from tilecast.training.pix2pix import load_checkpoint

log = logging.getLogger(__name__)
INPUT_NAME, OUTPUT_NAME = "image", "generated"


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: Path
    repository: Path
    name: str
    version: int = 0  # 0: one past the newest version in the repository
    tile_size: int = 512
    max_size: int = 2048
    max_batch_size: int = 16
    opset: int = 18
    description: str = ""
    command: str = ""  # the command that reproduces the model, recorded in the manifest


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _export_graph(wrapper: torch.nn.Module, in_channels: int, multiple: int, max_size: int,
                  path: Path, opset: int) -> None:
    """Dynamic batch, height and width; the height and width are declared as multiples of `multiple`."""
    # torch.export specialises dimensions of size 0 and 1, so the example avoids them.
    example = torch.zeros(2, 8 * multiple, 8 * multiple, in_channels, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1024)
    h = torch.export.Dim("h_cells", min=2, max=max_size // multiple)
    w = torch.export.Dim("w_cells", min=2, max=max_size // multiple)
    with warnings.catch_warnings():
        # torch's own exporter trips over its own deprecations; nothing a user can act on.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, external_data=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"image": {0: batch, 1: multiple * h, 2: multiple * w}}, verbose=False,
        )
    assert program is not None  # dynamo export always returns the program
    program.save(str(path), external_data=False)


def parity(wrapper: torch.nn.Module, path: Path, inputs: list[npt.NDArray[np.uint8]]) -> dict[str, float]:
    """ONNX Runtime vs PyTorch on the same uint8 inputs: largest level difference, share of values differing."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, differing, total = 0, 0, 0
    for batch in inputs:
        with torch.no_grad():
            expected = wrapper(torch.from_numpy(batch)).numpy().astype(np.int16)
        got = session.run(None, {INPUT_NAME: batch})[0].astype(np.int16)
        diff = np.abs(got - expected)
        worst, differing, total = max(worst, int(diff.max())), differing + int((diff > 0).sum()), total + diff.size
    return {"uint8_max_abs_diff": float(worst), "uint8_fraction_differing": differing / total}


def validation_inputs(ckpt: dict[str, Any], multiple: int) -> list[npt.NDArray[np.uint8]]:
    """The checkpoint's own validation inputs, cropped to the size multiple: real images for parity."""
    source = ckpt.get("config", {}).get("data")
    if not source:
        return []
    images = load_paired(source, "val").inputs
    return [img[: img.shape[0] // multiple * multiple, : img.shape[1] // multiple * multiple] for img in images]


def export_generator(config: ExportConfig) -> Path:
    """Export a pix2pix generator checkpoint; returns the new version directory."""
    ckpt: dict[str, Any] = load_checkpoint(config.checkpoint)
    core = create_model(ckpt["arch"], **ckpt["model_kwargs"])
    core.load_state_dict(ckpt["state_dict"], strict=True)
    core.eval()
    in_c, out_c = ckpt["model_kwargs"]["input_nc"], ckpt["model_kwargs"]["output_nc"]
    norm = ckpt["normalization"]
    wrapper = Uint8ImageGenerator(core, norm["mean"], norm["std"]).eval()
    multiple = int(getattr(core, "size_multiple", 1))
    radius = measure_receptive_radius(core, in_c, multiple)
    halo = -(-radius // multiple) * multiple
    tile_size = config.tile_size
    if tile_size % 16 or tile_size % multiple:
        raise ValueError(f"tile size {tile_size} must be a multiple of 16 and of {multiple}")

    model_dir = config.repository / config.name
    version = config.version or next_version(model_dir)
    if (model_dir / str(version)).exists():
        raise FileExistsError(f"{model_dir / str(version)} already exists; choose another version")
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=model_dir))
    try:
        onnx_path = staging / manifest_io.ONNX_FILE
        _export_graph(wrapper, in_c, multiple, config.max_size, onnx_path, config.opset)
        import onnx

        onnx.checker.check_model(str(onnx_path), full_check=True)
        rng = np.random.default_rng(0)
        probes = [rng.integers(0, 256, (2, 64 + multiple * 9, 96, in_c), dtype=np.uint8)]
        probes += [np.ascontiguousarray(r[None]) for r in validation_inputs(ckpt, multiple)]
        checks = parity(wrapper, onnx_path, probes)
        manifest = manifest_pb2.ModelManifest(
            name=config.name, version=version, kind=manifest_pb2.MODEL_KIND_GENERATOR,
            description=config.description,
            inputs=[manifest_pb2.TensorSpec(name=INPUT_NAME, dtype=manifest_pb2.DTYPE_UINT8, channels=in_c,
                                            layout=manifest_pb2.LAYOUT_NHWC)],
            outputs=[manifest_pb2.TensorSpec(name=OUTPUT_NAME, dtype=manifest_pb2.DTYPE_UINT8, channels=out_c,
                                             layout=manifest_pb2.LAYOUT_NHWC,
                                             interpretation=manifest_pb2.OUTPUT_INTERPRETATION_IMAGE)],
            tiling=manifest_pb2.Tiling(
                tile_size=tile_size, halo=halo, size_multiple=multiple, min_size=max(multiple, 16),
                max_size=config.max_size, max_batch_size=config.max_batch_size,
                has_global_ops=has_global_ops(core), receptive_radius=radius),
            preprocessing=manifest_pb2.Preprocessing(
                mode=manifest_pb2.NORMALIZATION_MODE_FIXED, mean=norm["mean"], std=norm["std"],
                baked_into_graph=True,
                description="uint8 -> (x/255 - mean)/std -> network -> tanh -> round((y+1)*127.5) -> uint8"),
            provenance=manifest_pb2.Provenance(
                training_data=ckpt.get("training_data", ""), command=config.command,
                architecture=f"{ckpt['arch']} {ckpt['model_kwargs']}",
                metrics=ckpt.get("metrics", {}), parity=checks,
                created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                tilecast_version=tilecast.__version__, exporter=f"torch {torch.__version__} dynamo",
                opset=config.opset),
            backends=["onnxruntime"],
        )
        manifest.files.extend(manifest_io.checksum_files(staging, [manifest_io.ONNX_FILE]))
        manifest_io.write_manifest(manifest, staging / manifest_io.MANIFEST_FILE)
        final = model_dir / str(version)
        staging.chmod(0o755)  # mkdtemp makes it private; a server may run as another user
        os.rename(staging, final)  # atomic: a server never sees a half-written version
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s version %d: halo %d, parity %s", config.name, version, halo, checks)
    return final
