"""`tilecast export onnx`: a network -> a checked, self-describing version in a model repository.

The steps, each recorded in the manifest: wrap with per-pixel pre/postprocessing; measure the halo,
size multiple and image-global operations; export with dynamic batch, height and width (declared as
multiples of the size multiple); onnx.checker; save ONNX Runtime's BASIC optimisation (portable);
parity against PyTorch on the float core and on the wire dtypes, random and real inputs; an fp16
variant on request; a parity probe for `tilecast export verify`; checksums; an atomic rename.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from tilecast.export import parity
from tilecast.export.checks import check_export_config
from tilecast.export.graph import INPUT_NAME, PARAMETER_NAMES, export_graph, save_basic_optimised
from tilecast.export.receptive_field import has_global_ops, measure_receptive_radius
from tilecast.export.sources import KINDS, LoadedModel
from tilecast.export.wrappers import (
    Classifier,
    Half,
    ImageGenerator,
    ImageOnly,
    ImageOnlyTwoOutputs,
    Segmenter,
    SegmenterWithProbabilities,
)
from tilecast.proto import manifest as manifest_io
from tilecast.proto.normalization import percentile_range
from tilecast.proto.v1 import manifest_pb2
from tilecast.version import __version__

log = logging.getLogger(__name__)
FP16_FILE = "model.fp16.onnx"
WIRE_DTYPES = {"uint8": manifest_pb2.DTYPE_UINT8, "uint16": manifest_pb2.DTYPE_UINT16,
               "float32": manifest_pb2.DTYPE_FLOAT32}
TORCH_INPUT = {"uint8": torch.uint8, "uint16": torch.uint16, "float32": torch.float32}


@dataclass(frozen=True)
class ExportConfig:
    repository: Path
    name: str
    version: int = 0  # 0: one past the newest version in the repository
    tile_size: int = 512
    max_size: int = 2048
    max_batch_size: int = 16
    opset: int = 18
    input_dtype: str = "uint8"
    output_dtype: str = "uint8"  # generators
    probabilities: bool = False  # segmenters: also return per-class probabilities
    class_names: tuple[str, ...] = ()
    fp16: bool = False
    description: str = ""
    command: str = ""  # the command that reproduces the model, recorded in the manifest

    def __post_init__(self) -> None:
        check_export_config(self)


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def wrap(source: LoadedModel, config: ExportConfig, core: nn.Module | None = None) -> nn.Module:
    """The network with the wire dtypes' pre- and postprocessing around it (scripted around TorchScript)."""
    core = source.module if core is None else core
    wrapper: nn.Module
    if source.kind == "generator":
        wrapper = ImageGenerator(core, source.mean, source.std, config.input_dtype, config.output_dtype)
    elif source.kind == "segmenter":
        segmenter = SegmenterWithProbabilities if config.probabilities else Segmenter
        wrapper = segmenter(core, source.mean, source.std, config.input_dtype, source.out_channels)
    else:
        wrapper = Classifier(core, source.mean, source.std, config.input_dtype)
    wrapper.eval()
    if not source.scripted:
        return wrapper
    scripted = torch.jit.script(wrapper)
    if source.percentiles:
        return scripted
    adapter = ImageOnlyTwoOutputs if source.kind == "segmenter" and config.probabilities else ImageOnly
    return torch.jit.script(adapter(scripted).eval())


def output_specs(source: LoadedModel, config: ExportConfig) -> list[manifest_pb2.TensorSpec]:
    nhwc, interp = manifest_pb2.LAYOUT_NHWC, manifest_pb2
    if source.kind == "generator":
        return [manifest_pb2.TensorSpec(name="generated", dtype=WIRE_DTYPES[config.output_dtype],
                                        channels=source.out_channels, layout=nhwc,
                                        interpretation=interp.OUTPUT_INTERPRETATION_IMAGE)]
    if source.kind == "segmenter":
        labels = manifest_pb2.DTYPE_UINT8 if source.out_channels <= 256 else manifest_pb2.DTYPE_UINT16
        specs = [manifest_pb2.TensorSpec(name="labels", dtype=labels, channels=1, layout=nhwc,
                                         interpretation=interp.OUTPUT_INTERPRETATION_CLASS_LABELS)]
        if config.probabilities:
            specs.append(manifest_pb2.TensorSpec(
                name="probabilities", dtype=manifest_pb2.DTYPE_UINT8, channels=source.out_channels, layout=nhwc,
                interpretation=interp.OUTPUT_INTERPRETATION_CLASS_PROBABILITIES))
        return specs
    return [manifest_pb2.TensorSpec(name="scores", dtype=manifest_pb2.DTYPE_FLOAT32, channels=source.out_channels,
                                    layout=manifest_pb2.LAYOUT_NC,
                                    interpretation=interp.OUTPUT_INTERPRETATION_CLASS_PROBABILITIES)]


def measure_halo(source: LoadedModel) -> tuple[int, int, bool]:
    """(receptive radius, halo rounded up to the size multiple, has image-global operations)."""
    multiple = source.size_multiple
    global_ops = has_global_ops(source.module)
    if source.kind == "classifier":  # one answer per patch: the patch is the whole context
        return 0, 0, global_ops
    try:
        radius = measure_receptive_radius(source.module, source.in_channels, multiple)
    except ValueError:
        if not global_ops:
            raise
        radius = 0  # a scripted network whose global layers could not be set aside
        log.warning("%s has image-global operations; its halo could not be measured", source.description)
    return radius, -(-radius // multiple) * multiple, global_ops


def _probe_inputs(source: LoadedModel, config: ExportConfig, real: list[npt.NDArray[Any]]) -> list[parity.Feeds]:
    m = source.size_multiple
    side = max(2, -(-96 // m)) * m
    rng = np.random.default_rng(0)
    shape = (2, side, side + m, source.in_channels)
    if config.input_dtype == "float32":
        probes = [rng.random(shape, dtype=np.float32)]
    else:
        probes = [rng.integers(0, np.iinfo(config.input_dtype).max + 1, shape, dtype=config.input_dtype)]
    dtype = probes[0].dtype
    for image in real:
        batch = image if image.ndim == 4 else image[None]  # classifiers' validation patches come as a batch
        h, w = batch.shape[1] // m * m, batch.shape[2] // m * m
        if h and w:
            probes.append(_to_wire(np.ascontiguousarray(batch[:, :h, :w]), dtype))
    return [_with_parameters(source, probe) for probe in probes]


def _to_wire(batch: npt.NDArray[Any], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """Real pixels in the wire dtype, rescaled between integer ranges (float tiles travel in [0, 1])."""
    if batch.dtype == dtype or not np.issubdtype(batch.dtype, np.integer):
        return batch.astype(dtype)
    scaled = batch / np.iinfo(batch.dtype).max
    if dtype == np.float32:
        return scaled.astype(np.float32)
    return np.rint(scaled * np.iinfo(dtype).max).astype(dtype)


def _with_parameters(source: LoadedModel, batch: npt.NDArray[Any]) -> parity.Feeds:
    """The image feed, plus each sample's percentile range when the model normalises per image."""
    if source.percentiles is None:
        return {INPUT_NAME: batch}
    ranges = [percentile_range(sample, *source.percentiles) for sample in batch]
    low, high = (np.stack(r) for r in zip(*ranges, strict=True))
    return {INPUT_NAME: batch, PARAMETER_NAMES[0]: low, PARAMETER_NAMES[1]: high}


def export_model(source: LoadedModel, config: ExportConfig, real_inputs: list[npt.NDArray[Any]] | None = None) -> Path:
    """Export, check and add a new version to the repository; returns the version directory."""
    multiple = source.size_multiple
    if config.tile_size % multiple or (source.kind != "classifier" and config.tile_size % 16):
        raise ValueError(f"tile size {config.tile_size} must be a multiple of 16 and of the size multiple {multiple}")
    radius, halo, global_ops = measure_halo(source)
    if config.tile_size + 2 * halo > config.max_size:
        raise ValueError(f"tile size {config.tile_size} + 2 x halo {halo} exceeds --max-size {config.max_size}")
    model_dir = config.repository / config.name
    version = config.version or next_version(model_dir)
    if (model_dir / str(version)).exists():
        raise FileExistsError(f"{model_dir / str(version)} already exists; choose another version")
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=model_dir))
    try:
        manifest = _export_into(staging, source, config, radius, halo, global_ops, real_inputs or [])
        manifest.version = version
        manifest_io.write_manifest(manifest, staging / manifest_io.MANIFEST_FILE)
        staging.chmod(0o755)  # mkdtemp makes it private; a server may run as another user
        os.rename(staging, model_dir / str(version))  # atomic: a server never sees a half-written version
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s version %d: halo %d, parity %s", config.name, version, halo,
             dict(manifest.provenance.parity))
    return model_dir / str(version)


def _export_into(staging: Path, source: LoadedModel, config: ExportConfig, radius: int, halo: int,
                 global_ops: bool, real_inputs: list[npt.NDArray[Any]]) -> manifest_pb2.ModelManifest:
    import onnx

    multiple, in_c = source.size_multiple, source.in_channels
    wrapper = wrap(source, config)
    outputs = output_specs(source, config)
    example = torch.zeros(2, 8 * multiple, 8 * multiple, in_c, dtype=TORCH_INPUT[config.input_dtype])
    onnx_path = staging / manifest_io.ONNX_FILE
    parameters = in_c if source.percentiles else 0
    export_graph(wrapper, example, onnx_path, opset=config.opset, multiple=multiple, max_size=config.max_size,
                 output_names=[o.name for o in outputs], layout="NHWC", scripted=source.scripted,
                 parameters=parameters)
    onnx.checker.check_model(str(onnx_path), full_check=True)
    save_basic_optimised(onnx_path)

    probes = _probe_inputs(source, config, real_inputs)
    checks = parity.float_core(source.module, in_c, multiple, staging, config.opset, source.scripted)
    checks.update(parity.wire(wrapper, onnx_path, probes))
    files = [manifest_io.ONNX_FILE, manifest_io.PROBE_FILE]
    if config.fp16:
        fp16_wrapper = wrap(source, config, Half(source.module))
        export_graph(fp16_wrapper, example, staging / FP16_FILE, opset=config.opset, multiple=multiple,
                     max_size=config.max_size, output_names=[o.name for o in outputs], layout="NHWC",
                     parameters=parameters)
        fp16_checks = parity.wire(wrapper, staging / FP16_FILE, probes)
        checks.update({f"fp16_{k}": v for k, v in fp16_checks.items()})
        files.append(FP16_FILE)
    parity.save_probe(staging / manifest_io.PROBE_FILE, onnx_path, probes[0])

    t = config
    manifest = manifest_pb2.ModelManifest(
        name=t.name, kind=KINDS[source.kind],
        description=t.description or source.description,
        inputs=[manifest_pb2.TensorSpec(name=INPUT_NAME, dtype=WIRE_DTYPES[t.input_dtype], channels=in_c,
                                        layout=manifest_pb2.LAYOUT_NHWC),
                *(manifest_pb2.TensorSpec(name=n, dtype=manifest_pb2.DTYPE_FLOAT32, channels=in_c,
                                          layout=manifest_pb2.LAYOUT_NC)
                  for n in PARAMETER_NAMES[:2 if parameters else 0])],
        outputs=outputs,
        tiling=manifest_pb2.Tiling(
            tile_size=t.tile_size, halo=halo, size_multiple=multiple, min_size=-(-16 // multiple) * multiple,
            max_size=t.max_size, max_batch_size=t.max_batch_size, has_global_ops=global_ops,
            receptive_radius=radius),
        preprocessing=_preprocessing(source, t.input_dtype, outputs[0].name),
        class_names=list(t.class_names) or source.class_names,
        provenance=manifest_pb2.Provenance(
            training_data=str(source.training.get("training_data", "")), command=t.command,
            architecture=source.description, metrics=source.training.get("metrics", {}), parity=checks,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            tilecast_version=__version__,
            exporter=f"torch {torch.__version__} {'torchscript' if source.scripted else 'dynamo'}", opset=t.opset),
        backends=["onnxruntime"],
    )
    manifest.files.extend(manifest_io.checksum_files(staging, files))
    return manifest


def _preprocessing(source: LoadedModel, input_dtype: str, output: str) -> manifest_pb2.Preprocessing:
    if source.percentiles is None:
        return manifest_pb2.Preprocessing(
            mode=manifest_pb2.NORMALIZATION_MODE_FIXED, mean=source.mean, std=source.std, baked_into_graph=True,
            description=f"{input_dtype} -> (x/range - mean)/std -> network -> {output}")
    low, high = source.percentiles
    return manifest_pb2.Preprocessing(
        mode=manifest_pb2.NORMALIZATION_MODE_PERCENTILE, mean=source.mean, std=source.std, baked_into_graph=True,
        low_percentile=low, high_percentile=high,
        description=f"{input_dtype} -> ((x - p{low:g}) / (p{high:g} - p{low:g}) - mean)/std, the percentiles of "
                    f"each whole image per channel sent as channel_low/channel_high -> network -> {output}")
