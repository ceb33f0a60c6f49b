"""The checked-in protobuf stubs are exactly what scripts/generate_protos.py makes from proto/v1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate_protos", REPO_ROOT / "scripts" / "generate_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = {p.name: p.read_text() for p in module.generate(tmp_path)}
    checked_in = {p.name: p.read_text() for p in (REPO_ROOT / "proto" / "v1").glob("*_pb2*")}
    assert sorted(fresh) == sorted(checked_in), "run: python scripts/generate_protos.py"
    stale = [name for name in fresh if fresh[name] != checked_in[name]]
    assert not stale, f"stale stubs {stale}; run: python scripts/generate_protos.py"
