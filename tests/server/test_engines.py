"""Engine choice: TensorRT plans where TensorRT and a matching GPU exist, ONNX Runtime otherwise."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import RGB_MODEL, local_settings
from tilecast.client.remote import Client
from tilecast.server.app import ServerThread
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
