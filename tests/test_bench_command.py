"""`tilecast bench` end to end on a small tile: every measurement is taken and lands in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import RGB_MODEL
from tilecast.bench import steady_rate
from tilecast.cli import app
from tilecast.server.app import ServerThread


def test_bench_reports_every_floor_and_ratio(tmp_path: Path, server: ServerThread, model_repository: Path) -> None:
    report_path = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [
        "bench", "--server", f"127.0.0.1:{server.port}", "--repository", str(model_repository), "--model", RGB_MODEL,
        "--tile", "64", "--samples", "12", "--concurrency", "1", "--seconds", "0.6", "--rounds", "1",
        "--threads", "1", "--json", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    latencies = ["echo_stream", "echo_unary", "echo_engine_added", "echo_engine_unary_added", "echo_paused_added",
                 "stream", "stream_added", "unary", "unary_added"]
    for name in latencies:
        assert report[name]["samples"] == 12, name
        assert report[name]["p50_ms"] <= report[name]["p99_ms"], name
    # A round trip through a real server takes longer than the engine time it reports.
    assert report["stream_added"]["p50_ms"] > 0 and report["unary_added"]["p50_ms"] > 0
    assert report["echo_engine_added"]["p50_ms"] > 0 and report["echo_paused_added"]["p50_ms"] > 0
    assert [(row["mode"], row["concurrency"]) for row in report["throughput"]] == [("stream", 1), ("unary", 1)]
    assert all(row["server"] > 0 and row["in_process"] > 0 for row in report["throughput"])
    assert len(report["targets"]) == 2 + 5 and "echo-with-engine" in result.output


def test_steady_rate_counts_the_pace_not_the_start_or_the_drain() -> None:
    # Two workers, each finishing a call every 0.1 s after a slow first one (a connection being made),
    # the second starting later and stopping sooner: 20 completions a second between them.
    first = [0.5 + 0.1 * i for i in range(30)]
    second = [0.9 + 0.1 * i + 0.05 for i in range(20)]
    assert steady_rate([first, second]) == pytest.approx(20.0)
    assert steady_rate([[1.0, 1.04, 1.08, 1.12]]) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="measure for longer"):
        steady_rate([[1.0]])
    with pytest.raises(ValueError, match="do not overlap"):
        steady_rate([[0.0, 1.0], [2.0, 3.0]])
