"""The repository loader validates manifests against files and graphs, and says exactly what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import RGB_MODEL, local_settings
from tilecast.client.remote import Client
from tilecast.proto import manifest as manifest_io
from tilecast.proto.errors import ManifestError, Unavailable
from tilecast.proto.v1 import inference_pb2
from tilecast.server.app import ServerThread


def copy_version(model_repository: Path, target: Path, name: str) -> Path:
    destination = target / name / "1"
    shutil.copytree(model_repository / RGB_MODEL / "1", destination)
    manifest = json.loads((destination / "manifest.json").read_text())
    manifest["name"] = name
    (destination / "manifest.json").write_text(json.dumps(manifest))
    return destination


def test_valid_version_loads(model_repository: Path) -> None:
    manifest = manifest_io.load_version(model_repository / RGB_MODEL / "1")
    assert manifest.tiling.halo == 60 and manifest.tiling.size_multiple == 4
    assert not manifest.tiling.has_global_ops


def test_changed_byte_is_caught(model_repository: Path, tmp_path: Path) -> None:
    version = copy_version(model_repository, tmp_path, "tampered")
    data = bytearray((version / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (version / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"model\.onnx does not match its sha256"):
        manifest_io.load_version(version)


def test_declared_io_must_match_graph(model_repository: Path, tmp_path: Path) -> None:
    version = copy_version(model_repository, tmp_path, "wrong-io")
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["inputs"][0]["channels"] = 1
    manifest["outputs"][0]["dtype"] = "DTYPE_UINT16"
    (version / "manifest.json").write_text(json.dumps(manifest))
    with ServerThread(local_settings(tmp_path)) as server, \
            Client(f"127.0.0.1:{server.port}") as client:
        (status,) = client.list_models()
        assert status.state == inference_pb2.MODEL_STATE_FAILED
        assert "has 3 channels in the graph, 1 in the manifest" in status.reason
        assert "uint8 in the graph, uint16 in the manifest" in status.reason
        with pytest.raises(Unavailable, match="no ready version"):
            client.get_model("wrong-io")


def test_one_broken_model_does_not_stop_the_others(model_repository: Path, tmp_path: Path) -> None:
    copy_version(model_repository, tmp_path, "good")
    broken = copy_version(model_repository, tmp_path, "broken")
    (broken / "manifest.json").write_text("{not json")
    with ServerThread(local_settings(tmp_path)) as server, \
            Client(f"127.0.0.1:{server.port}") as client:
        states = {s.name: s for s in client.list_models()}
        assert states["good"].state == inference_pb2.MODEL_STATE_READY
        assert states["broken"].state == inference_pb2.MODEL_STATE_FAILED
        assert "not a valid manifest" in states["broken"].reason
        assert client.get_model("good").name == "good"


def test_manifest_problems_are_listed_together() -> None:
    manifest = manifest_io.ModelManifest(name="bad name!", version=0)
    manifest.tiling.size_multiple = 4
    manifest.tiling.tile_size = 102
    problems = " ".join(manifest_io.manifest_problems(manifest))
    for words in ("name 'bad name!'", "version must be", "kind is not set", "no inputs",
                  "tile_size=102 is not a multiple of size_multiple=4", "max_batch_size"):
        assert words in problems
