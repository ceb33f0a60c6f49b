"""Engine choice: TensorRT plans where TensorRT and a matching GPU exist, ONNX Runtime otherwise."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import RGB_MODEL, local_settings, tiny_segmenter
from tilecast.client.remote import Client
from tilecast.proto import manifest as manifest_io
from tilecast.server.app import ServerThread
from tilecast.server.backends.ort import tensorrt_options
from tilecast.server.backends.tensorrt import gpu_architecture


def with_plan_entry(model_repository: Path, root: Path) -> Path:
    version = root / RGB_MODEL / "1"
    shutil.copytree(model_repository / RGB_MODEL / "1", version)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["plans"] = [{"path": "model.sm90.trt10.plan", "gpu_architecture": "9.0", "tensorrt_version": "10.0.0",
                          "precision": "fp16"}]
    (version / "manifest.json").write_text(json.dumps(manifest))
    return version


def test_without_tensorrt_one_log_line_and_onnx_serves(
    model_repository: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here; this checks the fallback")
    with_plan_entry(model_repository, tmp_path)
    with caplog.at_level(logging.INFO, logger="tilecast.server.backends.choose"), \
            ServerThread(local_settings(tmp_path)) as server, Client(f"127.0.0.1:{server.port}") as client:
        (out,) = client.predict(RGB_MODEL, np.zeros((1, 64, 64, 3), np.uint8))
    lines = [r.getMessage() for r in caplog.records if "TensorRT" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "TensorRT is not installed; serving model.onnx with ONNX Runtime" in lines[0]
    assert out.shape == (1, 64, 64, 3)


needs_tensorrt_gpu = pytest.mark.skipif(gpu_architecture() is None, reason="needs CUDA and cuda-python")


@pytest.mark.gpu
@needs_tensorrt_gpu
def test_tensorrt_plan_matches_onnx_runtime(model_repository: Path, tmp_path: Path) -> None:
    trt = pytest.importorskip("tensorrt")
    from tilecast.server.backends.tensorrt import TensorRTBackend

    onnx_path = model_repository / RGB_MODEL / "1" / "model.onnx"
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, builder.logger)
    assert parser.parse(onnx_path.read_bytes())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 64, 64, 3), (2, 256, 256, 3), (4, 512, 512, 3))
    config.add_optimization_profile(profile)
    plan = tmp_path / "model.plan"
    plan.write_bytes(bytes(builder.build_serialized_network(network, config)))
    batch = np.random.default_rng(0).integers(0, 256, (2, 128, 192, 3), dtype=np.uint8)
    (got,) = TensorRTBackend(plan).infer({"image": batch})
    expected = ort.InferenceSession(str(onnx_path)).run(None, {"image": batch})[0]
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def _profile_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """ONNX Runtime's profile format, "name:1x64x64x3,other:1x2", read back."""
    return {name: tuple(int(d) for d in dims.split("x"))
            for name, dims in (entry.rsplit(":", 1) for entry in text.split(","))}


@pytest.mark.parametrize("percentile", [False, True], ids=["fixed", "percentile"])
def test_tensorrt_provider_profile_names_every_graph_input(tmp_path: Path, percentile: bool) -> None:
    """The TensorRT provider refuses an explicit profile that leaves out a dynamic input: every input of
    the graph is in it, with the graph's rank and fixed sizes, and its smallest and best shapes run."""
    version = tiny_segmenter(tmp_path, percentile)
    manifest = manifest_io.load_version(version)
    options = tensorrt_options(manifest, max_batch=3, fp16=False, cache=tmp_path)
    graph = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in graph.get_inputs()}
    assert len(inputs) == (3 if percentile else 1)
    profiles = {which: _profile_shapes(options[f"trt_profile_{which}_shapes"]) for which in ("min", "opt", "max")}
    for which, shapes in profiles.items():
        assert set(shapes) == set(inputs), which
        for name, shape in shapes.items():
            declared = inputs[name].shape
            assert len(shape) == len(declared) and all(
                d == s for d, s in zip(declared, shape, strict=True) if isinstance(d, int)), (which, name)
    smallest, t = max(manifest.tiling.min_size, manifest.tiling.size_multiple), manifest.tiling
    assert profiles["min"]["image"] == (1, smallest, smallest, 2)
    assert profiles["max"]["image"] == (3, t.max_size, t.max_size, 2) and t.max_size == 256
    for which in ("min", "opt"):
        feeds = {name: np.zeros(shape, np.uint16 if name == "image" else np.float32)
                 for name, shape in profiles[which].items()}
        if percentile:
            feeds["channel_high"] += 1
        (labels, *_) = graph.run(None, feeds)
        assert labels.shape[:3] == profiles[which]["image"][:3]


def test_retiring_a_version_closes_its_engines(model_repository: Path, tmp_path: Path) -> None:
    """Unload, reload of changed files and shutdown each close the engines of the version they retire
    (a real ONNX Runtime session: dropped, and the engine refuses to compute afterwards)."""
    from tilecast.client.control import RepositoryControl
    from tilecast.proto.errors import Unavailable

    shutil.copytree(model_repository / RGB_MODEL, tmp_path / RGB_MODEL)
    tile = np.zeros((1, 64, 64, 3), np.uint8)
    settings = local_settings(tmp_path, model_control="explicit", load_models=(RGB_MODEL,))
    with ServerThread(settings) as server, RepositoryControl(f"127.0.0.1:{server.port}") as control:
        models = server.server.models
        retired = []
        for change in ("unload", "reload", "shutdown"):
            served = models.resolve(RGB_MODEL)
            engines = list(served.entry.backends)
            assert engines and not any(engine.closed for engine in engines)  # type: ignore[attr-defined]
            retired.append((change, served, engines))
            if change == "unload":
                control.unload(RGB_MODEL)
                control.load(RGB_MODEL)
            elif change == "reload":
                manifest = tmp_path / RGB_MODEL / "1" / "manifest.json"
                manifest.write_text(manifest.read_text() + "\n")  # new files: the version is replaced
                control.load(RGB_MODEL)
            if change != "shutdown":
                assert served.released.wait(timeout=30), change
    for change, served, engines in retired:
        assert served.released.is_set() and not served.entry.backends, change
        for engine in engines:
            assert engine.closed, change  # type: ignore[attr-defined]
            with pytest.raises(Unavailable, match="closed"):
                engine.infer({"image": tile})
