"""Shared fixtures: a model exported by the project's own exporter, and a real server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tilecast.client.remote import Client
from tilecast.server.app import ServerThread
from tilecast.server.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"
RGB_MODEL = "rgb-generator"

# Timing is not what these properties test; a loaded 2-core machine must not fail them.
settings.register_profile("tilecast", deadline=None)
settings.load_profile("tilecast")


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with one RGB -> RGB resnet_6blocks generator (random weights, no image-global ops),
    made by the real training registry and exporter."""
    import torch

    from tilecast.export.onnx_export import ExportConfig, export_model
    from tilecast.export.sources import from_checkpoint
    from tilecast.training.models import create_model

    root = tmp_path_factory.mktemp("repo")
    torch.manual_seed(0)
    kwargs = {"input_nc": 3, "output_nc": 3, "ngf": 8, "norm": "batch"}
    generator = create_model("resnet_6blocks", **kwargs)
    with torch.no_grad():  # non-trivial batch-norm statistics, so the folded affine matters
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    checkpoint = root / "checkpoint.pt"
    torch.save({"arch": "resnet_6blocks", "model_kwargs": kwargs, "state_dict": generator.state_dict(),
                "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}}, checkpoint)
    export_model(from_checkpoint(checkpoint),
                 ExportConfig(root / "models", RGB_MODEL, tile_size=256, max_size=1024, max_batch_size=8))
    return root / "models"


def local_settings(repository: Path, **overrides: Any) -> Settings:
    """Settings for a server on loopback with free ports for gRPC and metrics."""
    return Settings(**{"repository": repository, "host": "127.0.0.1", "port": 0, "metrics_port": 0, **overrides})


@pytest.fixture(scope="session")
def server(model_repository: Path) -> Iterator[ServerThread]:
    with ServerThread(local_settings(model_repository)) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}", timeout=60) as connected:
        yield connected


def tiny_segmenter(root: Path, percentile: bool) -> Path:
    """A 16-bit model; with `percentile`, it takes each image's percentile range as two more inputs (N, C)."""
    import torch

    from tests.export.nets import TinySegmenter
    from tilecast.export.onnx_export import ExportConfig, export_model
    from tilecast.export.sources import LoadedModel

    torch.manual_seed(0)
    model = LoadedModel(TinySegmenter(2, 3), "segmenter", 2, 3, [0.0, 0.0], [1.0, 1.0], "tiny",
                        percentiles=(1.0, 99.0) if percentile else None)
    return export_model(model, ExportConfig(root, "tiny", tile_size=64, max_size=256, max_batch_size=4,
                                            input_dtype="uint16"))
