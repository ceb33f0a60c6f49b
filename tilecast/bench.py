"""`tilecast bench`: throughput and latency through the server, against the engine in-process and a bare
grpcio echo of the same bytes (the transport floor), with the ratios the project's targets are set in.

Like perf_analyzer: a concurrency sweep, unary and streaming; p50/p95/p99 latencies with one tile in flight.
Starts its own `tilecast serve` (and echo server) on localhost unless --server names a running one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import grpc
import numpy as np
import typer

from tilecast.console import int_list, out, user_errors
from tilecast.local import child_process, free_port, serve_command

Tile = np.ndarray


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    samples: int

    @staticmethod
    def of(seconds: list[float]) -> Latency:
        ms = np.asarray(seconds) * 1000
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        return Latency(float(p50), float(p95), float(p99), float(ms.mean()), len(ms))


@dataclass
class Report:
    model: str
    tile: list[int]
    threads: int
    echo_stream: Latency | None = None
    echo_unary: Latency | None = None
    echo_pipelined_ms_per_tile: float = 0.0
    echo_engine_added: Latency | None = None  # echo that runs the engine before it replies: round trip - engine time
    echo_engine_unary_added: Latency | None = None
    echo_paused_added: Latency | None = None  # echo that sleeps the engine's p50 before it replies: minus the sleep
    engine: Latency | None = None  # in-process, batch 1
    stream: Latency | None = None  # round trip, one tile in flight
    stream_added: Latency | None = None  # round trip minus that tile's engine time in the server
    unary: Latency | None = None
    unary_added: Latency | None = None
    throughput: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)


def lockstep(call: Callable[[Iterator[Any]], Iterator[Any]], message: Any, count: int,
             preamble: tuple[Any, ...] = (), on_response: Callable[[Any], None] | None = None) -> list[float]:
    """Round trips over one stream with one message in flight: send, wait for the answer, send the next.

    `preamble` messages (a stream header) go first and get no answer of their own.
    """
    turn = threading.Semaphore(1)
    sent: list[float] = []

    def requests() -> Iterator[Any]:
        yield from preamble
        for _ in range(count):
            turn.acquire()
            sent.append(time.perf_counter())
            yield message

    rtts: list[float] = []
    for response in call(requests()):
        rtts.append(time.perf_counter() - sent[len(rtts)])
        if on_response is not None:
            on_response(response)
        turn.release()
    return rtts


def one_at_a_time(call: Callable[[Any], Any], request: Any, count: int,
                  on_response: Callable[[Any], None] | None = None) -> list[float]:
    """Round trips of unary calls made one after another."""
    rtts: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        response = call(request)
        rtts.append(time.perf_counter() - started)
        if on_response is not None:
            on_response(response)
    return rtts


def measure_echo(address: str, request: bytes,
                 samples: int) -> tuple[Latency, Latency, float, Latency, Latency, Latency]:
    """Echo stream and unary round trips, ms per tile pipelined, and the added
    latency of the echo that runs the engine (stream, unary) and of the one that sleeps as long (stream)."""
    from tilecast.echo import (
        ENGINE_SECONDS,
        ENGINE_STREAM_METHOD,
        ENGINE_UNARY_METHOD,
        PAUSED_STREAM_METHOD,
        STREAM_METHOD,
        UNARY_METHOD,
    )

    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        stream = channel.stream_stream(STREAM_METHOD)
        unary = channel.unary_unary(UNARY_METHOD)
        lockstep(stream, request, 20)  # warm up
        streamed = lockstep(stream, request, samples)
        unary_rtts = one_at_a_time(unary, request, samples)
        started = time.perf_counter()
        count = sum(1 for _ in stream(iter([request] * samples)))
        pipelined = (time.perf_counter() - started) / count * 1000
        engine: list[float] = []
        engine_stream = channel.stream_stream(ENGINE_STREAM_METHOD)
        lockstep(engine_stream, request, 5)
        with_engine = lockstep(engine_stream, request, samples,
                               on_response=lambda reply: engine.append(ENGINE_SECONDS.unpack_from(reply)[0]))
        unary_engine: list[float] = []
        unary_with_engine = one_at_a_time(channel.unary_unary(ENGINE_UNARY_METHOD), request, samples,
                                          lambda reply: unary_engine.append(ENGINE_SECONDS.unpack_from(reply)[0]))
        slept: list[float] = []
        pause = ENGINE_SECONDS.pack(float(np.median(engine))) + request[ENGINE_SECONDS.size:]
        paused = lockstep(channel.stream_stream(PAUSED_STREAM_METHOD), pause, samples,
                          on_response=lambda reply: slept.append(ENGINE_SECONDS.unpack_from(reply)[0]))

    def minus(rtts: list[float], spent: list[float]) -> Latency:
        return Latency.of([r - e for r, e in zip(rtts, spent, strict=True)])

    return (Latency.of(streamed), Latency.of(unary_rtts), pipelined, minus(with_engine, engine),
            minus(unary_with_engine, unary_engine), minus(paused, slept))


class Engine:
    """The server's own engine class, in this process, with the server's thread count: the baseline."""

    def __init__(self, onnx: Path, input_name: str, threads: int) -> None:
        from tilecast.server.backends.ort import OnnxRuntimeBackend

        self._backend = OnnxRuntimeBackend(onnx, threads)
        self._input = input_name

    def latency(self, tile: Tile, samples: int) -> Latency:
        single = {self._input: tile[None]}
        for _ in range(3):
            self._backend.infer(single)
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            self._backend.infer(single)
            times.append(time.perf_counter() - started)
        return Latency.of(times)

    def rate(self, tile: Tile, batch: int, seconds: float) -> float:
        feeds = {self._input: np.repeat(tile[None], batch, axis=0)}
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self._backend.infer(feeds)
            count += batch
        return count / (time.perf_counter() - started)


def measure_server_latency(address: str, model: str, tile: Tile, samples: int) -> tuple[Latency, ...]:
    """Round trips with one tile in flight, and each minus the engine time the server reports for it.

    Requests go out pre-encoded, as the echo's do and as `Client` sends them.
    """
    from tilecast.client.remote import PREDICT, STREAM_PREDICT
    from tilecast.proto import wire
    from tilecast.proto.v1 import inference_pb2

    header = inference_pb2.StreamPredictRequest(header=inference_pb2.StreamHeader(model=model))
    message = wire.stream_tile(0, tile)
    compute: list[float] = []

    def engine_time(response: bytes) -> None:
        reply = inference_pb2.StreamPredictResponse.FromString(response)
        compute.append(reply.result.timing.compute_us / 1e6)

    with grpc.insecure_channel(address) as channel:
        stream = channel.stream_stream(STREAM_PREDICT, request_serializer=wire.serialize)
        predict = channel.unary_unary(PREDICT, response_deserializer=inference_pb2.PredictResponse.FromString)
        lockstep(stream, message, 10, (header,))  # warm up
        streamed = lockstep(stream, message, samples, (header,), engine_time)
        unary_compute: list[float] = []
        unary = one_at_a_time(predict, wire.predict_request(model, 0, tile[None]), samples,
                              lambda response: unary_compute.append(response.timing.compute_us / 1e6))
    added = [r - c for r, c in zip(streamed, compute, strict=True)]
    unary_added = [r - c for r, c in zip(unary, unary_compute, strict=True)]
    return Latency.of(streamed), Latency.of(added), Latency.of(unary), Latency.of(unary_added)


def steady_rate(finished: list[list[float]]) -> float:
    """Completions per second between the moment every worker has finished a first call and the moment the
    first worker stops: connecting, the first call's cold start and the drain at the end fall outside it.

    `finished` holds each worker's completion times (a stream is one worker). For a steady pace of one
    completion every T seconds, counting completions in (t0, t1] over t1 - t0 gives exactly 1/T.
    """
    if any(len(times) < 2 for times in finished):
        raise ValueError("too few completions to measure a rate: measure for longer")
    start = max(times[0] for times in finished)
    end = min(times[-1] for times in finished)
    count = sum(1 for times in finished for t in times if start < t <= end)
    if end <= start or count == 0:
        raise ValueError("the workers' completions do not overlap: measure for longer")
    return count / (end - start)


def measure_server_throughput(address: str, model: str, tile: Tile, concurrency: int, seconds: float,
                              mode: str) -> float:
    """Tiles per second through the server in its steady state (`steady_rate`), with `concurrency` tiles in
    flight: a stream with that window, or that many threads making unary calls."""
    from tilecast.client.remote import Client

    with Client(address) as client:
        client.wait_ready(timeout=60)
        if mode == "stream":
            stop = time.perf_counter() + seconds

            def source() -> Iterator[tuple[int, Tile]]:
                i = 0
                while time.perf_counter() < stop:
                    yield i, tile
                    i += 1

            return steady_rate([[time.perf_counter() for _ in client.stream(model, source(), window=concurrency)]])

        def worker() -> list[float]:
            finished, until = [], time.perf_counter() + seconds
            while time.perf_counter() < until:
                client.predict(model, tile[None])
                finished.append(time.perf_counter())
            return finished

        with ThreadPoolExecutor(concurrency) as pool:
            return steady_rate(list(pool.map(lambda _: worker(), range(concurrency))))


def throughput_point(engine: Engine, server: str, model: str, tile: Tile, concurrency: int, mode: str,
                     seconds: float, rounds: int) -> dict[str, Any]:
    """Server and in-process throughput measured in alternating slices, so drift in the machine's
    speed (other tenants, clocks) falls on both alike. In-process runs the batch the server would form."""
    batch = max(1, min(concurrency, 8))
    slice_s = seconds / rounds
    server_rates, local_rates = [], []
    for _ in range(rounds):
        local_rates.append(engine.rate(tile, batch, slice_s))
        server_rates.append(measure_server_throughput(server, model, tile, concurrency, slice_s, mode))
    served, local = float(np.mean(server_rates)), float(np.mean(local_rates))
    return {"mode": mode, "concurrency": concurrency, "server": served, "in_process": local, "ratio": served / local}


def judge(report: Report) -> None:
    """The targets of DESIGN.md and issue 3, each with its measured value."""
    def target(what: str, value: float, limit: float, higher_is_better: bool = False) -> None:
        ok = value >= limit if higher_is_better else value <= limit
        report.targets.append({"target": what, "measured": round(value, 3), "limit": round(limit, 3), "ok": ok})

    assert report.echo_stream and report.stream_added and report.unary_added and report.echo_unary
    assert report.stream and report.engine
    for row in report.throughput:
        target(f"throughput {row['mode']} c={row['concurrency']} / in-process", row["ratio"], 0.95, True)
    # As the issue words it: round-trip percentile minus in-process compute percentile. Noisy, since the
    # two computations vary by more than the overhead; the per-tile rows below are the strict measure.
    target("stream round trip p50 - engine p50 (ms) <= 1 ms", report.stream.p50_ms - report.engine.p50_ms, 1.0)
    target("stream added p50 (ms) <= 1.2 x echo p50", report.stream_added.p50_ms, 1.2 * report.echo_stream.p50_ms)
    target("stream added p50 (ms) <= 1 ms", report.stream_added.p50_ms, 1.0)
    target("stream added p99 (ms) <= 2 ms", report.stream_added.p99_ms, 2.0)
    target("unary added p50 (ms) <= 1.5 x unary echo p50", report.unary_added.p50_ms, 1.5 * report.echo_unary.p50_ms)


def show(report: Report) -> None:
    from rich.table import Table

    table = Table("latency, one tile in flight", "p50 ms", "p95 ms", "p99 ms", "mean ms", "n",
                  title=f"{report.model}, tile {report.tile}, {report.threads} engine thread(s)")
    rows = [("echo stream (floor)", report.echo_stream), ("echo unary (floor)", report.echo_unary),
            ("engine in-process", report.engine), ("server stream round trip", report.stream),
            ("echo sleeping as long as the engine, added", report.echo_paused_added),
            ("echo + engine in the call thread, added", report.echo_engine_added),
            ("server stream added", report.stream_added), ("server unary round trip", report.unary),
            ("echo + engine in the call thread, unary, added", report.echo_engine_unary_added),
            ("server unary added", report.unary_added)]
    for name, value in rows:
        if value is not None:
            table.add_row(name, f"{value.p50_ms:.3f}", f"{value.p95_ms:.3f}", f"{value.p99_ms:.3f}",
                          f"{value.mean_ms:.3f}", str(value.samples))
    out.print(table)
    out.print(f"echo pipelined: {report.echo_pipelined_ms_per_tile:.3f} ms per tile")
    if report.echo_paused_added and report.echo_stream:
        out.print(f"echo pausing as long as the engine, added p50 / echo p50 = "
                  f"{report.echo_paused_added.p50_ms / report.echo_stream.p50_ms:.2f} (what the pause alone costs)")
    for mode, server, floor in (("stream", report.stream_added, report.echo_engine_added),
                                ("unary", report.unary_added, report.echo_engine_unary_added)):
        if server and floor:
            out.print(f"{mode}: server added p50 / echo-with-engine added p50 = {server.p50_ms / floor.p50_ms:.2f}")
    sweep = Table("mode", "concurrency", "server tiles/s", "in-process tiles/s", "ratio", title="throughput")
    for row in report.throughput:
        sweep.add_row(row["mode"], str(row["concurrency"]), f"{row['server']:.2f}", f"{row['in_process']:.2f}",
                      f"{row['ratio']:.3f}")
    out.print(sweep)
    verdicts = Table("target", "measured", "limit", "", title="targets")
    for t in report.targets:
        verdicts.add_row(t["target"], str(t["measured"]), str(t["limit"]), "[green]ok" if t["ok"] else "[red]MISSED")
    out.print(verdicts)


@user_errors
def bench(
    model: Annotated[str, typer.Option(help="Model to measure.")] = "ihc-colorize",
    repository: Annotated[Path, typer.Option(help="Repository holding the model (for the in-process run).")] = Path(
        "models"),
    server: Annotated[str, typer.Option(help="host:port of a running server; empty starts one.")] = "",
    tile: Annotated[int, typer.Option(min=1, help="Tile edge in pixels.")] = 256,
    concurrency: Annotated[str, typer.Option(help="Tiles in flight to sweep, comma-separated.")] = "1,2,4,8",
    seconds: Annotated[float, typer.Option(min=0.1, help="Duration of each throughput point, per side.")] = 6.0,
    rounds: Annotated[int, typer.Option(min=1, help="Alternating server/in-process slices per point.")] = 3,
    samples: Annotated[int, typer.Option(min=1, help="Round trips per latency measurement.")] = 200,
    threads: Annotated[int, typer.Option(
        min=0, help="Engine threads, for the server started here and in-process; 0 = all cores.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Measure the server against the engine in-process and the gRPC transport floor."""
    from tilecast.client.remote import Client
    from tilecast.echo import EngineCall
    from tilecast.proto import tensors

    threads = threads or os.cpu_count() or 1
    levels = int_list("--concurrency", concurrency)
    echo_port = free_port()
    with contextlib.ExitStack() as stack:
        if not server:
            port = free_port()
            stack.enter_context(child_process(serve_command(repository, port, "--threads", str(threads))))
            server = f"127.0.0.1:{port}"
        with Client(server) as client:
            client.wait_ready(timeout=120)
            manifest = client.get_model(model)
        spec, out_spec = manifest.inputs[0], manifest.outputs[0]
        image = np.random.default_rng(0).integers(0, 256, (tile, tile, spec.channels), dtype=np.uint8).astype(
            tensors.to_numpy_dtype(spec.dtype))
        reply_bytes = tile * tile * out_spec.channels * tensors.to_numpy_dtype(out_spec.dtype).itemsize
        onnx = repository / model / str(manifest.version) / "model.onnx"
        in_echo = EngineCall(onnx, spec.name, (1, *image.shape), image.dtype.name, threads)
        stack.enter_context(child_process([sys.executable, "-m", "tilecast.echo", "--port", str(echo_port),
                                           "--reply-bytes", str(reply_bytes), *in_echo.arguments()]))
        report = Report(model, [tile, tile, spec.channels], threads)
        out.print("measuring the transport floor (echo, then echo with the engine)...")
        request = tensors.encode(image).SerializeToString()
        (report.echo_stream, report.echo_unary, report.echo_pipelined_ms_per_tile, report.echo_engine_added,
         report.echo_engine_unary_added, report.echo_paused_added) = measure_echo(f"127.0.0.1:{echo_port}", request,
                                                                                  samples)
        out.print("measuring the engine in-process...")
        engine = Engine(onnx, spec.name, threads)
        report.engine = engine.latency(image, max(10, samples // 4))
        out.print("measuring server latency...")
        report.stream, report.stream_added, report.unary, report.unary_added = measure_server_latency(
            server, model, image, samples)
        for mode in ("stream", "unary"):
            for c in levels:
                out.print(f"measuring throughput: {mode}, {c} in flight, against in-process...")
                report.throughput.append(throughput_point(engine, server, model, image, c, mode, seconds, rounds))
    judge(report)
    show(report)
    if json_out:
        json_out.write_text(json.dumps(asdict(report), indent=2))
