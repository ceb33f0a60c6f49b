"""Export: every registered architecture, every source format, parity figures, fp16, verify, the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import tiny_segmenter
from tilecast.cli import app
from tilecast.client.tiling import Grid, crop_core
from tilecast.export.onnx_export import ExportConfig, export_model
from tilecast.export.sources import LoadedModel, from_pix2pix, from_torchscript
from tilecast.export.verify import verify
from tilecast.proto import manifest as manifest_io
from tilecast.training.models import create_model, list_models

runner = CliRunner()


def loaded(arch: str, norm: str, in_c: int = 3, out_c: int = 3, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    module = create_model(arch, input_nc=in_c, output_nc=out_c, ngf=4, norm=norm)
    return LoadedModel(module, str(module.task), in_c, out_c, [0.5] * in_c, [0.5] * in_c, arch,
                       int(getattr(module, "size_multiple", 1)))


Expected = Callable[[int], tuple[tuple[int, ...], type[np.generic]]]  # size multiple -> output shape, dtype
OUTPUTS: dict[str, Expected] = {
    "generator": lambda m: ((3, 2 * m, 3 * m, 3), np.uint8),
    "segmenter": lambda m: ((3, 2 * m, 3 * m, 1), np.uint8),
    "classifier": lambda m: ((3, 3), np.float32),
}


def session(version: Path, file: str = "model.onnx") -> ort.InferenceSession:
    return ort.InferenceSession(str(version / file), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("arch", list_models())
def test_every_architecture_exports_with_parity(arch: str, tmp_path: Path) -> None:
    # instance norm makes every kind image-global; classifiers pool globally anyway (and instance norm's
    # "more than one value" check cannot be proven under dynamic shapes after their strides)
    source = loaded(arch, "batch" if create_model(arch, ngf=4).task == "classifier" else "instance")
    tile = max(256, source.size_multiple)
    version = export_model(source, ExportConfig(tmp_path, arch, tile_size=tile, max_size=8 * tile))
    manifest = manifest_io.load_version(version)
    parity = manifest.provenance.parity
    assert parity["fp32_core_max_abs_diff"] <= 1e-4
    if source.kind == "classifier":
        assert parity["float_output_max_abs_diff"] <= 1e-4
    else:
        assert parity["int_max_abs_diff"] <= 1 and parity["int_fraction_differing"] <= 1e-3
    assert manifest.tiling.has_global_ops or source.kind == "classifier"  # instance norm; a patch is all context
    assert manifest.tiling.size_multiple == source.size_multiple
    assert manifest.tiling.halo % source.size_multiple == 0 and manifest.tiling.halo >= manifest.tiling.receptive_radius
    # Dynamic shapes: any multiple of the size multiple runs.
    m = max(source.size_multiple, 16)
    out = session(version).run(None, {"image": np.zeros((3, 2 * m, 3 * m, 3), np.uint8)})[0]
    shape, dtype = OUTPUTS[source.kind](m)
    assert out.shape == shape and out.dtype == dtype
    assert verify(version) == []


def test_halo_makes_crop_stitching_exact_without_norm(tmp_path: Path) -> None:
    """resnet_9blocks without normalisation: tiles cut with the measured halo (84) stitch exactly."""
    source = loaded("resnet_9blocks", "none", seed=3)
    version = export_model(source, ExportConfig(tmp_path, "plain", tile_size=64, max_size=1024))
    manifest = manifest_io.load_version(version)
    assert (manifest.tiling.receptive_radius, manifest.tiling.halo) == (84, 84)
    assert not manifest.tiling.has_global_ops
    image = np.random.default_rng(0).integers(0, 256, (200, 236, 3), dtype=np.uint8)
    run = session(version)
    whole = run.run(None, {"image": image[None]})[0][0]
    grid = Grid(200, 236, 64, 84, 4, 16)
    stitched = np.zeros_like(whole)
    for tile in grid:
        s, c = tile.source, tile.core
        out = run.run(None, {"image": np.ascontiguousarray(image[s.y0:s.y1, s.x0:s.x1])[None]})[0][0]
        stitched[c.y0:c.y1, c.x0:c.x1] = crop_core(out, tile)
    np.testing.assert_array_equal(stitched, whole)


def test_pix2pix_state_dict_with_old_instance_norm_keys(tmp_path: Path) -> None:
    """A pytorch-CycleGAN-and-pix2pix generator file, including the running statistics that checkpoints
    from before PyTorch 0.4 stored for instance norm, exports and matches the network it came from."""
    torch.manual_seed(4)
    reference = create_model("resnet_6blocks", input_nc=3, output_nc=3, ngf=8, norm="instance").eval()
    state = dict(reference.state_dict())
    state["model.2.running_mean"] = torch.zeros(8)  # the first InstanceNorm2d, as old checkpoints had it
    state["model.2.running_var"] = torch.ones(8)
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(state, path)
    source = from_pix2pix(path, "resnet_6blocks", "instance", 3, 3, ngf=8)
    version = export_model(source, ExportConfig(tmp_path / "repo", "cyclegan", tile_size=256))
    image = np.random.default_rng(5).integers(0, 256, (1, 128, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        x = torch.from_numpy(image).permute(0, 3, 1, 2).float() / 127.5 - 1
        expected = torch.clamp(torch.round((reference(x) + 1) * 127.5), 0, 255).permute(0, 2, 3, 1).numpy()
    got = session(version).run(None, {"image": image})[0]
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_fp16_variant_within_its_bound(tmp_path: Path) -> None:
    source = loaded("resnet_6blocks", "instance", seed=6)
    version = export_model(source, ExportConfig(tmp_path, "half", tile_size=256, fp16=True))
    parity = manifest_io.load_version(version).provenance.parity
    # The stated bound for fp16 (README): uint8 outputs within 2 levels of fp32 PyTorch, at most 10% off at all.
    assert parity["fp16_int_max_abs_diff"] <= 2
    assert parity["fp16_int_fraction_differing"] <= 0.10
    inputs = session(version, "model.fp16.onnx").get_inputs()
    assert inputs[0].type == "tensor(uint8)"


@pytest.mark.parametrize(("input_dtype", "output_dtype"), [("uint16", "uint16"), ("float32", "uint8")])
def test_other_wire_dtypes(tmp_path: Path, input_dtype: str, output_dtype: str) -> None:
    """16-bit stacks in and out, and float tiles in: same parity bounds, right dtypes on the graph."""
    source = loaded("resnet_6blocks", "batch", in_c=7, out_c=1, seed=8)
    version = export_model(source, ExportConfig(tmp_path, "wide", tile_size=256, input_dtype=input_dtype,
                                                output_dtype=output_dtype))
    manifest = manifest_io.load_version(version)
    parity = manifest.provenance.parity
    assert parity["int_max_abs_diff"] <= 1 and parity["int_fraction_differing"] <= 1e-3
    graph = session(version)
    assert graph.get_inputs()[0].type == f"tensor({'float' if input_dtype == 'float32' else input_dtype})"
    assert graph.get_outputs()[0].type == f"tensor({output_dtype})"


def test_torchscript_segmenter_and_import_path_classifier(tmp_path: Path) -> None:
    from tests.export.nets import TinyClassifier, TinySegmenter

    scripted = torch.jit.script(TinySegmenter(3, 4))
    scripted.save(str(tmp_path / "seg.pt"))  # type: ignore[no-untyped-call]
    seg = from_torchscript(tmp_path / "seg.pt", "segmenter", 3, 4, [0.5] * 3, [0.25] * 3, 1)
    version = export_model(seg, ExportConfig(tmp_path / "repo", "seg", tile_size=64, probabilities=True,
                                             class_names=("bg", "a", "b", "c")))
    manifest = manifest_io.load_version(version)
    assert [o.name for o in manifest.outputs] == ["labels", "probabilities"]
    assert manifest.tiling.halo == 2 and list(manifest.class_names) == ["bg", "a", "b", "c"]
    labels, probs = session(version).run(None, {"image": np.zeros((1, 32, 48, 3), np.uint8)})
    assert labels.shape == (1, 32, 48, 1) and probs.shape == (1, 32, 48, 4)

    torch.manual_seed(0)
    torch.save(TinyClassifier(3, 2).state_dict(), tmp_path / "cls.pt")
    result = runner.invoke(app, [
        "export", "onnx", str(tmp_path / "cls.pt"), "--name", "cls", "--repository", str(tmp_path / "repo"),
        "--format", "module", "--module", "tests.export.nets:TinyClassifier", "--module-kwargs",
        json.dumps({"in_channels": 3, "classes": 2}), "--kind", "classifier", "--output-nc", "2",
        "--tile-size", "299", "--classes", "sparse,dense"])
    assert result.exit_code == 0, result.output
    version = tmp_path / "repo" / "cls" / "1"
    scores = session(version).run(None, {"image": np.zeros((5, 299, 299, 3), np.uint8)})[0]
    assert scores.shape == (5, 2) and np.allclose(scores.sum(1), 1, atol=1e-5)


def test_verify_catches_tampering_and_drift(tmp_path: Path) -> None:
    version = export_model(loaded("resnet_6blocks", "batch", seed=7), ExportConfig(tmp_path, "v", tile_size=256))
    assert runner.invoke(app, ["export", "verify", str(version)]).exit_code == 0
    inspected = runner.invoke(app, ["export", "inspect", str(version)])
    assert inspected.exit_code == 0 and "halo 60" in inspected.output

    # Drift: a probe answer that no longer matches, with checksums made consistent again.
    probe = version / manifest_io.PROBE_FILE
    with np.load(probe) as stored:
        arrays = {k: stored[k] for k in stored.files}
    arrays["output_0"] = arrays["output_0"] // 2
    np.savez_compressed(probe, **arrays)
    manifest = manifest_io.read_manifest(version / manifest_io.MANIFEST_FILE)
    kept = [f for f in manifest.files if f.path != manifest_io.PROBE_FILE]
    del manifest.files[:]
    manifest.files.extend(kept + manifest_io.checksum_files(version, [manifest_io.PROBE_FILE]))
    manifest_io.write_manifest(manifest, version / manifest_io.MANIFEST_FILE)
    assert any("drifted" in p for p in verify(version))

    # Tampering: one changed byte in the graph.
    data = bytearray((version / "model.onnx").read_bytes())
    data[len(data) // 3] ^= 0x01
    (version / "model.onnx").write_bytes(bytes(data))
    result = runner.invoke(app, ["export", "verify", str(version)])
    assert result.exit_code == 1
    assert "model.onnx does not match its sha256" in " ".join(result.output.split())


def test_tensorrt_export_without_tensorrt_is_one_clear_line(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    result = runner.invoke(app, ["export", "tensorrt", str(tmp_path)])
    assert result.exit_code == 1
    assert "TensorRT is not installed" in result.output and "Traceback" not in result.output


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["generator", "percentile segmenter"])
def test_tensorrt_engine_build_and_record(tmp_path: Path, model: str) -> None:
    """On a GPU host with TensorRT: a plan is built beside the ONNX model and recorded with its parity
    (a percentile model's channel_low/high are in the plan's profile)."""
    pytest.importorskip("tensorrt")
    from tilecast.server.backends.tensorrt import gpu_architecture

    if gpu_architecture() is None:
        pytest.skip("needs a CUDA GPU and cuda-python")
    version = tiny_segmenter(tmp_path, percentile=True) if model != "generator" else export_model(
        loaded("resnet_6blocks", "batch", seed=9), ExportConfig(tmp_path, "trt", tile_size=256, max_size=512,
                                                                max_batch_size=2))
    result = runner.invoke(app, ["export", "tensorrt", str(version)])
    assert result.exit_code == 0, result.output
    manifest = manifest_io.load_version(version)
    (plan,) = manifest.plans
    assert (version / plan.path).is_file() and plan.parity["max_abs_diff_vs_onnxruntime"] <= 1
    assert verify(version) == []


@pytest.mark.parametrize("percentile", [False, True], ids=["fixed", "percentile"])
def test_tensorrt_parity_probe_feeds_every_graph_input(tmp_path: Path, percentile: bool) -> None:
    """The batch a TensorRT plan is checked with runs in ONNX Runtime as it is: one array per graph
    input, of its dtype (a percentile model's channel_low/high too, and high above low)."""
    from tilecast.export.tensorrt_export import probe_feeds

    version = tiny_segmenter(tmp_path, percentile)
    manifest = manifest_io.load_version(version)
    feeds = probe_feeds(manifest, batch=2)
    graph = session(version)
    assert sorted(feeds) == sorted(i.name for i in graph.get_inputs())
    (out, *_) = graph.run(None, feeds)
    assert out.shape[0] == 2
    assert feeds["image"].dtype == np.uint16 and feeds["image"].max() > 255
    if percentile:
        assert (feeds["channel_high"] > feeds["channel_low"]).all() and feeds["channel_low"].shape == (2, 2)
