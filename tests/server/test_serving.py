"""The server under load and change: concurrency, batching, limits, deadlines, cancellation, hot swaps."""

from __future__ import annotations

import re
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import RGB_MODEL, local_settings
from tilecast.client.remote import Client
from tilecast.proto.errors import DeadlineExceeded, ResourceExhausted
from tilecast.proto.v1 import inference_pb2
from tilecast.server.app import ServerThread

TILE = (64, 64, 3)


def tiles(count: int, seed: int, shape: tuple[int, int, int] = TILE) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.integers(0, 256, shape, dtype=np.uint8) for i in range(count)}


def in_process(model_repository: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_repository / RGB_MODEL / "1" / "model.onnx"))
    return np.asarray(session.run(None, {"image": batch})[0])


def scrape(server: ServerThread) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10) as page:
        return str(page.read().decode())


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


BACKLOG = 12


def queue_backlog(client: Client, seed: int) -> threading.Thread:
    """Keep a server with max_batch_size=1 busy for seconds: large tiles queued one behind another."""
    flood = tiles(BACKLOG, seed=seed, shape=(512, 512, 3))
    backlog = threading.Thread(target=lambda: list(client.stream(RGB_MODEL, flood.items(), window=BACKLOG)))
    backlog.start()
    time.sleep(0.3)  # let the backlog queue up
    return backlog


def test_concurrent_streams_each_get_their_own_results(
    server: ServerThread, model_repository: Path
) -> None:
    before = scrape(server)
    inputs = {stream: tiles(12, seed=stream) for stream in range(16)}

    def run(stream: int) -> dict[int, np.ndarray]:
        with Client(f"127.0.0.1:{server.port}") as client:
            return {r.id: r.outputs[0] for r in client.stream(RGB_MODEL, inputs[stream].items(), window=4)}

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(run, range(16)))
    for stream, got in enumerate(results):
        assert sorted(got) == list(range(12))
        expected = in_process(model_repository, np.stack([inputs[stream][i] for i in range(12)]))
        for i in range(12):
            np.testing.assert_array_equal(got[i], expected[i], err_msg=f"stream {stream} tile {i}")
    after = scrape(server)
    batches = metric(after, "tilecast_batch_size_count", model=RGB_MODEL) - metric(
        before, "tilecast_batch_size_count", model=RGB_MODEL)
    computed = metric(after, "tilecast_batch_size_sum", model=RGB_MODEL) - metric(
        before, "tilecast_batch_size_sum", model=RGB_MODEL)
    assert computed == 16 * 12
    assert computed / batches > 1.5, "no batching under the load of 16 streams"
    assert metric(after, "tilecast_requests_total", model=RGB_MODEL, method="StreamPredict", code="OK") >= 16
    assert metric(after, "tilecast_model_state", model=RGB_MODEL, state="ready") == 1


def test_full_queue_is_resource_exhausted_then_recovers(model_repository: Path) -> None:
    settings = local_settings(model_repository, max_queue_size=2, max_tiles_in_flight_per_stream=64)
    with ServerThread(settings) as server, Client(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(ResourceExhausted, match="queue is full"):
            list(client.stream(RGB_MODEL, tiles(40, seed=1, shape=(256, 256, 3)).items(), window=40))
        (out,) = client.predict(RGB_MODEL, tiles(1, seed=2)[0][None])
        assert out.shape == (1, *TILE)


def test_oversized_message_is_resource_exhausted(model_repository: Path) -> None:
    settings = local_settings(model_repository, max_message_bytes=100_000)
    with ServerThread(settings) as server, Client(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(ResourceExhausted, match="larger than max"):
            client.predict(RGB_MODEL, np.zeros((1, 256, 256, 3), np.uint8))
        assert client.list_models()


def test_deadline_passed_in_queue_is_not_computed(model_repository: Path) -> None:
    with ServerThread(local_settings(model_repository, max_batch_size=1)) as server, \
            Client(f"127.0.0.1:{server.port}") as client:
        stats = server.server.models.resolve(RGB_MODEL).batcher
        assert stats is not None
        backlog = queue_backlog(client, seed=3)
        hurried = Client(f"127.0.0.1:{server.port}", timeout=0.05)
        with pytest.raises(DeadlineExceeded):
            hurried.predict(RGB_MODEL, tiles(1, seed=4)[0][None])
        backlog.join(timeout=120)
        assert stats.stats.tiles == BACKLOG, "the late tile was computed although nobody waited for it"


def test_tiles_in_flight_are_counted_while_queued_and_none_after(model_repository: Path) -> None:
    with ServerThread(local_settings(model_repository, max_batch_size=1)) as server, \
            Client(f"127.0.0.1:{server.port}") as client:
        backlog = queue_backlog(client, seed=9)
        during = metric(scrape(server), "tilecast_tiles_in_flight", model=RGB_MODEL)
        backlog.join(timeout=120)
        after = metric(scrape(server), "tilecast_tiles_in_flight", model=RGB_MODEL)
    assert 1 <= during <= BACKLOG
    assert after == 0


def test_tile_deadline_answers_that_tile_and_the_stream_goes_on(model_repository: Path, tmp_path: Path) -> None:
    import tifffile

    from tilecast.client import ConvertOptions, convert_image
    from tilecast.client.live import LiveStream

    with ServerThread(local_settings(model_repository, max_batch_size=1)) as server, \
            Client(f"127.0.0.1:{server.port}") as client:
        batcher = server.server.models.resolve(RGB_MODEL).batcher
        assert batcher is not None
        backlog = queue_backlog(client, seed=5)
        with LiveStream(client, RGB_MODEL, window=4) as live:
            live.send(0, tiles(1, seed=6)[0], deadline_ms=1)
            missed = live.receive(timeout=60)
            assert missed is not None and missed.id == 0 and not missed.outputs
            assert isinstance(missed.error, DeadlineExceeded) and "deadline passed" in str(missed.error)
            live.send(1, tiles(1, seed=6)[0])  # no budget: waits its turn and is computed
            answered = live.receive(timeout=60)
            assert answered is not None and answered.id == 1 and answered.error is None
            expected = in_process(model_repository, tiles(1, seed=6)[0][None])[0]
            np.testing.assert_array_equal(answered.outputs[0], expected)
        backlog.join(timeout=120)
        assert batcher.stats.expired >= 1
        batcher.keep_books()  # what the next sender does after its send
        assert metric(scrape(server), "tilecast_expired_tiles_total", model=RGB_MODEL) == batcher.stats.expired

        # convert resends tiles that miss their budget, in the same stream, and the result is complete.
        image = np.random.default_rng(7).integers(0, 256, (128, 128, 3), dtype=np.uint8)
        tifffile.imwrite(tmp_path / "in.tif", image, photometric="rgb")
        options = ConvertOptions(tile_size=64, window=4)
        convert_image(client, RGB_MODEL, tmp_path / "in.tif", tmp_path / "plain.tif", options)
        expired = batcher.stats.expired
        backlog = queue_backlog(client, seed=8)
        hurried = ConvertOptions(tile_size=64, window=4, tile_deadline_ms=50)
        convert_image(client, RGB_MODEL, tmp_path / "in.tif", tmp_path / "hurried.tif", hurried)
        backlog.join(timeout=120)
        assert batcher.stats.expired > expired, "no tile missed its budget behind the backlog"
        hurried_output = tifffile.imread(tmp_path / "hurried.tif")
        np.testing.assert_array_equal(hurried_output, tifffile.imread(tmp_path / "plain.tif"))


def test_cancelled_stream_frees_its_queued_work(server: ServerThread) -> None:
    batcher = server.server.models.resolve(RGB_MODEL).batcher
    assert batcher is not None
    before = batcher.stats.tiles
    with Client(f"127.0.0.1:{server.port}") as client:
        replies = client.stream(RGB_MODEL, tiles(60, seed=5, shape=(256, 256, 3)).items(), window=60)
        next(replies)
        replies.close()  # cancels the call
    for _ in range(100):  # bounded: the queue empties within seconds
        if batcher.queued == 0:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    assert batcher.queued == 0
    assert batcher.stats.tiles - before < 60, "cancelled tiles were computed anyway"


def stream_readers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "stream-reader"}


def paced_stream(client: Client, inputs: dict[int, np.ndarray], pause_s: float,
                 burst_every: int = 0) -> tuple[dict[int, np.ndarray], set[threading.Thread]]:
    """Send the first tile with the header and each next one `pause_s` after every earlier tile is
    answered (as a microscope sends what it acquires), or, with `burst_every`, alternate that with
    runs of tiles sent at once. Returns the answers by id, and the stream reader threads that
    appeared while it ran."""
    before = stream_readers()
    seen: set[threading.Thread] = set()
    answered = threading.Condition()
    count = sent = 0

    def caught_up() -> bool:
        return count == sent

    def source() -> Iterator[tuple[int, np.ndarray]]:
        nonlocal sent
        for i, tile in inputs.items():
            if not (burst_every and (i // burst_every) % 2):
                with answered:
                    assert answered.wait_for(caught_up, timeout=60)
                if sent:  # the first tile goes with the header, as a client sends them
                    time.sleep(pause_s)
            sent += 1
            yield i, tile

    got: dict[int, np.ndarray] = {}
    for reply in client.stream(RGB_MODEL, source(), window=len(inputs)):
        seen |= stream_readers() - before
        got[reply.id] = reply.outputs[0]
        with answered:
            count += 1
            answered.notify_all()
    return got, seen


def test_tiles_sent_one_at_a_time_are_read_by_the_call_thread(server: ServerThread, model_repository: Path) -> None:
    inputs = tiles(10, seed=11)
    with Client(f"127.0.0.1:{server.port}") as client:
        got, readers = paced_stream(client, inputs, pause_s=0.02)
    assert readers == set(), "a stream of tiles sent one at a time started a reader thread"
    expected = in_process(model_repository, np.stack(list(inputs.values())))
    assert sorted(got) == list(inputs)
    for i in inputs:
        np.testing.assert_array_equal(got[i], expected[i], err_msg=f"tile {i}")


def test_tiles_sent_ahead_are_read_while_the_engine_computes(model_repository: Path) -> None:
    with ServerThread(local_settings(model_repository)) as server, Client(f"127.0.0.1:{server.port}") as client:
        batcher = server.server.models.resolve(RGB_MODEL).batcher
        assert batcher is not None
        inputs = tiles(32, seed=12, shape=(256, 256, 3))
        got = {r.id: r.outputs[0] for r in client.stream(RGB_MODEL, inputs.items(), window=32)}
        assert sorted(got) == list(inputs)
        assert batcher.stats.largest_batch > 1, "one stream's tiles sent ahead were never batched"


def test_a_stream_changing_pace_gets_every_answer(server: ServerThread, model_repository: Path) -> None:
    inputs = tiles(40, seed=13)
    with Client(f"127.0.0.1:{server.port}") as client:
        got, _ = paced_stream(client, inputs, pause_s=0.005, burst_every=5)
    expected = in_process(model_repository, np.stack(list(inputs.values())))
    assert sorted(got) == list(inputs)
    for i in inputs:
        np.testing.assert_array_equal(got[i], expected[i], err_msg=f"tile {i}")


def test_stream_cancelled_while_the_server_waits_for_a_tile(server: ServerThread) -> None:
    batcher = server.server.models.resolve(RGB_MODEL).batcher
    assert batcher is not None
    with Client(f"127.0.0.1:{server.port}") as client:
        more = threading.Event()

        def source() -> Iterator[tuple[int, np.ndarray]]:
            yield 0, tiles(1, seed=14)[0]
            more.wait(timeout=30)  # the client holds the stream open, sending nothing

        replies = client.stream(RGB_MODEL, source())
        assert next(replies).id == 0
        time.sleep(0.1)  # the server is now waiting for the next tile
        replies.close()  # cancels the call
        more.set()
        assert not batcher.in_flight
        (out,) = client.predict(RGB_MODEL, tiles(1, seed=15)[0][None])
        assert out.shape == (1, *TILE)
        for _ in range(100):  # bounded: the cancelled call is counted within moments
            text = scrape(server)
            if metric(text, "tilecast_requests_total", model=RGB_MODEL, method="StreamPredict", code="CANCELLED"):
                break
            time.sleep(0.05)
        assert metric(text, "tilecast_requests_total", model=RGB_MODEL, method="StreamPredict", code="CANCELLED")


def copy_model(source: Path, root: Path, version: int) -> None:
    shutil.copytree(source / RGB_MODEL / "1", root / RGB_MODEL / str(version))
    manifest = root / RGB_MODEL / str(version) / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": "1"', f'"version": "{version}"'))


def test_hot_add_and_remove_while_a_stream_runs(model_repository: Path, tmp_path: Path) -> None:
    copy_model(model_repository, tmp_path, 1)
    with ServerThread(local_settings(tmp_path, repository_poll_s=0.1)) as server, \
            Client(f"127.0.0.1:{server.port}") as client:
        inputs = tiles(40, seed=6, shape=(128, 128, 3))
        first_result = threading.Event()

        def slow_source() -> Iterator[tuple[int, np.ndarray]]:
            for tile_id, tile in inputs.items():
                if tile_id == 5:
                    first_result.wait(timeout=30)
                yield tile_id, tile

        replies = []
        for reply in client.stream(RGB_MODEL, slow_source(), window=4):
            replies.append(reply)
            if len(replies) == 1:
                copy_model(model_repository, tmp_path, 2)
                shutil.rmtree(tmp_path / RGB_MODEL / "1")
                for _ in range(200):  # bounded wait for the poller to swap versions
                    if [s.version for s in client.list_models()] == [2]:
                        break
                    time.sleep(0.05)
                assert [s.version for s in client.list_models()] == [2]
                assert client.get_model(RGB_MODEL).version == 2
                first_result.set()
        assert sorted(r.id for r in replies) == list(range(40)), "tiles were dropped by the swap"
        assert {r.version for r in replies} == {1}, "a stream must finish on the version it started with"
        (out,) = client.predict(RGB_MODEL, inputs[0][None])  # served by version 2 now
        np.testing.assert_array_equal(out, in_process(model_repository, inputs[0][None]))


def test_retired_versions_wait_for_their_streams_without_a_thread_each(model_repository: Path,
                                                                       tmp_path: Path) -> None:
    """Versions removed while streams hold them keep serving those streams and are unloaded when each
    ends; holding them on costs no thread per version (a thread blocked per retired version would
    exhaust a pool once enough versions are swapped under long streams)."""
    held = [1, 2, 3, 4, 5, 6]
    for version in held:
        copy_model(model_repository, tmp_path, version)
    inputs = tiles(2, seed=21, shape=(64, 64, 3))
    go, first = threading.Event(), threading.Semaphore(0)

    def stream(client: Client, version: int) -> set[int]:
        def source() -> Iterator[tuple[int, np.ndarray]]:
            yield 0, inputs[0]
            go.wait(timeout=60)
            yield 1, inputs[1]

        versions = set()
        for reply in client.stream(RGB_MODEL, source(), version=version, window=1):
            versions.add(reply.version)
            first.release()
        return versions

    with ServerThread(local_settings(tmp_path)) as server, Client(f"127.0.0.1:{server.port}") as client, \
            ThreadPoolExecutor(len(held)) as pool:
        models = server.server.models
        retired = [models.resolve(RGB_MODEL, v) for v in held]
        streams = [pool.submit(stream, client, v) for v in held]
        for _ in held:  # every stream has its first answer and holds its version
            assert first.acquire(timeout=60)
        copy_model(model_repository, tmp_path, 7)
        for version in held:
            shutil.rmtree(tmp_path / RGB_MODEL / str(version))
        threads = threading.active_count()
        server.call(models.sync())
        assert threading.active_count() - threads <= 1, "a thread per retired version"
        assert [s.version for s in client.list_models()] == [7]
        assert not any(s.released.is_set() for s in retired)  # still held by their streams
        go.set()
        assert [f.result(timeout=60) for f in streams] == [{v} for v in held]
        for served in retired:  # bounded: each is unloaded once its stream has ended
            assert served.released.wait(timeout=30)
            assert not served.entry.backends
        (out,) = client.predict(RGB_MODEL, inputs[0][None])
        np.testing.assert_array_equal(out, in_process(model_repository, inputs[0][None]))


def test_health_and_reflection(server: ServerThread) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tilecast.v1.Inference", RGB_MODEL):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="no-such-model"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
        names = {s.name for s in answer.list_services_response.service}
        assert {"tilecast.v1.Inference", "grpc.health.v1.Health"} <= names


def test_failed_model_reported_in_list_and_health(model_repository: Path, tmp_path: Path) -> None:
    copy_model(model_repository, tmp_path, 1)
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "manifest.json").write_text("{}")
    with ServerThread(local_settings(tmp_path)) as server, Client(f"127.0.0.1:{server.port}") as client:
        states = {s.name: s for s in client.list_models()}
        assert states["broken"].state == inference_pb2.MODEL_STATE_FAILED and states["broken"].reason
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service="broken"), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert metric(scrape(server), "tilecast_model_state", model="broken", state="failed") == 1
