"""The KServe v2 protocol beside tilecast's own: the real server on loopback, our generated stubs of the
published protocol, and (in a child process, as a Triton user's program) NVIDIA's own tritonclient."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import RGB_MODEL, local_settings, tiny_segmenter
from tests.server.test_serving import metric, scrape
from tilecast.proto.v1 import kserve_v2_pb2 as v2
from tilecast.proto.v1 import kserve_v2_pb2_grpc
from tilecast.server.app import ServerThread


@pytest.fixture
def stub(server: ServerThread) -> Iterator[kserve_v2_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


def in_process(model_repository: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_repository / RGB_MODEL / "1" / "model.onnx"))
    return session.run(None, {"image": batch})[0]  # type: ignore[no-any-return]


def infer_request(batch: np.ndarray, **fields: object) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=RGB_MODEL, **fields)  # type: ignore[arg-type]
    request.inputs.add(name="image", datatype="UINT8", shape=batch.shape)
    request.raw_input_contents.append(batch.tobytes())
    return request


def test_liveness_readiness_and_metadata(stub: kserve_v2_pb2_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(v2.ServerLiveRequest(), timeout=10).live
    assert stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready
    assert stub.ModelReady(v2.ModelReadyRequest(name=RGB_MODEL), timeout=10).ready
    assert stub.ModelReady(v2.ModelReadyRequest(name=RGB_MODEL, version="1"), timeout=10).ready
    assert not stub.ModelReady(v2.ModelReadyRequest(name=RGB_MODEL, version="9"), timeout=10).ready
    assert not stub.ModelReady(v2.ModelReadyRequest(name="no-such-model"), timeout=10).ready
    assert stub.ServerMetadata(v2.ServerMetadataRequest(), timeout=10).name == "tilecast"
    meta = stub.ModelMetadata(v2.ModelMetadataRequest(name=RGB_MODEL), timeout=10)
    assert (meta.name, list(meta.versions), meta.platform) == (RGB_MODEL, ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("image", "UINT8", [-1, -1, -1, 3])]
    assert [(t.datatype, list(t.shape)) for t in meta.outputs] == [("UINT8", [-1, -1, -1, 3])]


def test_triton_model_config_describes_batching_and_tensors(stub: kserve_v2_pb2_grpc.GRPCInferenceServiceStub) -> None:
    config = stub.ModelConfig(v2.ModelConfigRequest(name=RGB_MODEL), timeout=10).config
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        RGB_MODEL, "onnxruntime_onnx", "onnxruntime", 8)
    (image,) = config.input
    assert (image.name, image.data_type, image.format, list(image.dims)) == (
        "image", v2.TYPE_UINT8, v2.ModelInput.FORMAT_NHWC, [-1, -1, 3])  # no batch axis, as Triton writes it
    assert [(o.data_type, list(o.dims)) for o in config.output] == [(v2.TYPE_UINT8, [-1, -1, 3])]
    (group,) = config.instance_group
    assert (group.count, group.kind) == (1, v2.ModelInstanceGroup.KIND_CPU)
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 512
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelConfig(v2.ModelConfigRequest(name="no-such-model"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_model_statistics_count_tiles_batches_and_their_times(
        stub: kserve_v2_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """Triton's statistics extension, read as perf_analyzer reads it: the change over a run (the server
    is shared with other tests). A "request" is a tile."""
    def read() -> v2.ModelStatistics:
        response: v2.ModelStatisticsResponse = stub.ModelStatistics(
            v2.ModelStatisticsRequest(name=RGB_MODEL), timeout=10)
        (stats,) = response.model_stats
        return stats

    def calls(stats: v2.ModelStatistics) -> dict[int, tuple[int, int]]:
        return {b.batch_size: (b.compute_infer.count, b.compute_infer.ns) for b in stats.batch_stats}

    rng = np.random.default_rng(33)
    before = read()
    started_ms = time.time() * 1000
    for size in (1, 1, 3):  # a request's tiles queue together: one engine call each
        stub.ModelInfer(infer_request(rng.integers(0, 256, (size, 64, 64, 3), dtype=np.uint8)), timeout=60)
    finished_ms = time.time() * 1000
    after = read()
    assert (after.name, after.version) == (RGB_MODEL, "1")
    assert (after.inference_count - before.inference_count, after.execution_count - before.execution_count) == (5, 3)
    assert started_ms - 1 <= after.last_inference <= finished_ms + 1
    new, old = after.inference_stats, before.inference_stats
    assert [getattr(new, f).count - getattr(old, f).count for f in ("success", "fail", "queue", "compute_infer")] \
        == [5, 0, 5, 5]
    parts = new.queue.ns + new.compute_input.ns + new.compute_infer.ns
    assert new.compute_infer.ns > old.compute_infer.ns and abs(new.success.ns - parts) <= 3  # ns rounding
    assert sum(size * ns for size, (_, ns) in calls(after).items()) == pytest.approx(new.compute_infer.ns, abs=5)
    counts_before = {size: count for size, (count, _) in calls(before).items()}
    assert {size: count - counts_before.get(size, 0) for size, (count, _) in calls(after).items()
            if count != counts_before.get(size, 0)} == {1: 2, 3: 1}
    everything = stub.ModelStatistics(v2.ModelStatisticsRequest(), timeout=10).model_stats
    assert RGB_MODEL in {s.name for s in everything} and len(everything) >= 1
    versioned = stub.ModelStatistics(v2.ModelStatisticsRequest(name=RGB_MODEL, version="1"), timeout=10)
    assert versioned.model_stats[0].inference_count == after.inference_count
    assert "statistics" in stub.ServerMetadata(v2.ServerMetadataRequest(), timeout=10).extensions
    for bad, code in ((v2.ModelStatisticsRequest(name="no-such-model"), grpc.StatusCode.NOT_FOUND),
                      (v2.ModelStatisticsRequest(name=RGB_MODEL, version="7"), grpc.StatusCode.NOT_FOUND),
                      (v2.ModelStatisticsRequest(version="1"), grpc.StatusCode.INVALID_ARGUMENT),
                      (v2.ModelStatisticsRequest(name=RGB_MODEL, version="one"), grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelStatistics(bad, timeout=10)
        assert caught.value.code() == code, (bad, caught.value.details())


def test_model_infer_raw_and_typed_match_onnx_runtime(model_repository: Path,
                                                       stub: kserve_v2_pb2_grpc.GRPCInferenceServiceStub) -> None:
    batch = np.random.default_rng(30).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    expected = in_process(model_repository, batch)
    raw = stub.ModelInfer(infer_request(batch, id="job-7"), timeout=60)
    assert (raw.model_name, raw.model_version, raw.id) == (RGB_MODEL, "1", "job-7")
    (output,) = raw.outputs
    assert output.datatype == "UINT8" and list(output.shape) == list(expected.shape)
    np.testing.assert_array_equal(np.frombuffer(raw.raw_output_contents[0], np.uint8).reshape(expected.shape),
                                  expected)

    typed = v2.ModelInferRequest(model_name=RGB_MODEL, model_version="1")
    tensor = typed.inputs.add(name="image", datatype="UINT8", shape=batch.shape)
    tensor.contents.uint_contents.extend(batch.ravel().tolist())
    typed.outputs.add(name=output.name)
    answer = stub.ModelInfer(typed, timeout=60)
    assert answer.raw_output_contents[0] == raw.raw_output_contents[0]


def test_model_stream_infer_answers_each_request_and_goes_on_after_an_error(
        model_repository: Path, server: ServerThread, stub: kserve_v2_pb2_grpc.GRPCInferenceServiceStub) -> None:
    batches = [np.random.default_rng(40 + i).integers(0, 256, (1 + i % 2, 64, 64, 3), dtype=np.uint8)
               for i in range(4)]
    requests = [infer_request(b, id=f"r{i}") for i, b in enumerate(batches)]
    requests[2].inputs[0].datatype = "UINT16"

    def counted(code: str) -> float:
        return metric(scrape(server), "tilecast_requests_total", model=RGB_MODEL, method="ModelStreamInfer", code=code)

    before = counted("OK"), counted("INVALID_ARGUMENT")
    answers = {a.infer_response.id: a for a in stub.ModelStreamInfer(iter(requests), timeout=120)}
    # Each request is counted, as Triton counts a stream's requests (the call itself is not).
    assert (counted("OK") - before[0], counted("INVALID_ARGUMENT") - before[1]) == (3, 1)
    assert sorted(answers) == ["r0", "r1", "r2", "r3"]  # in the order they finish
    assert "expects dtype uint8" in answers["r2"].error_message
    for i in (0, 1, 3):
        response = answers[f"r{i}"].infer_response
        assert not answers[f"r{i}"].error_message
        got = np.frombuffer(response.raw_output_contents[0], np.uint8).reshape(response.outputs[0].shape)
        np.testing.assert_array_equal(got, in_process(model_repository, batches[i]))


def test_one_streams_single_tile_requests_are_batched(model_repository: Path) -> None:
    """A Triton client streaming one tile per request gets them batched, as tilecast's own stream does."""
    tiles = np.random.default_rng(41).integers(0, 256, (24, 256, 256, 3), dtype=np.uint8)
    with ServerThread(local_settings(model_repository)) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        batcher = server.server.models.resolve(RGB_MODEL).batcher
        assert batcher is not None
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        requests = (infer_request(tiles[i:i + 1], id=str(i)) for i in range(len(tiles)))
        answers = {int(a.infer_response.id): a.infer_response for a in stub.ModelStreamInfer(requests, timeout=300)}
        assert sorted(answers) == list(range(len(tiles)))
        assert batcher.stats.largest_batch > 1, "a stream's requests were computed one by one"
    expected = in_process(model_repository, tiles)
    for i, response in answers.items():
        np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.uint8).reshape(
            expected[i:i + 1].shape), expected[i:i + 1], err_msg=f"tile {i}")


def test_a_cancelled_model_stream_ends_and_the_server_serves_on(
        model_repository: Path, server: ServerThread, stub: kserve_v2_pb2_grpc.GRPCInferenceServiceStub) -> None:
    batch = np.random.default_rng(42).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    hold = threading.Event()

    def requests() -> Iterator[v2.ModelInferRequest]:
        yield infer_request(batch, id="first")
        hold.wait(timeout=60)  # the client goes quiet; then it cancels

    call = stub.ModelStreamInfer(requests(), timeout=120)
    assert next(call).infer_response.id == "first"
    call.cancel()
    hold.set()
    for _ in range(100):  # bounded: the stream's reader ends with the call
        if not any(t.name == "stream-requests" for t in threading.enumerate()):
            break
        time.sleep(0.05)
    assert not any(t.name == "stream-requests" for t in threading.enumerate())
    answer = stub.ModelInfer(infer_request(batch), timeout=60)
    assert answer.raw_output_contents[0] == in_process(model_repository, batch).tobytes()


def _with_input(batch: np.ndarray, datatype: str = "UINT8", shape: tuple[int, ...] | None = None,
                data: bytes | None = None) -> v2.ModelInferRequest:
    request = infer_request(batch)
    request.inputs[0].datatype = datatype
    if shape is not None:
        del request.inputs[0].shape[:]
        request.inputs[0].shape.extend(shape)
    if data is not None:
        request.raw_input_contents[0] = data
    return request


MakeRequest = Callable[[np.ndarray], v2.ModelInferRequest]
BAD_INFERS: dict[str, tuple[MakeRequest, grpc.StatusCode, str]] = {
    "unknown model": (lambda b: v2.ModelInferRequest(model_name="nope"), grpc.StatusCode.NOT_FOUND, "not found"),
    "version not a number": (lambda b: infer_request(b, model_version="latest"), grpc.StatusCode.INVALID_ARGUMENT,
                             "whole number"),
    "no such version": (lambda b: infer_request(b, model_version="4"), grpc.StatusCode.NOT_FOUND, "no version 4"),
    "wrong datatype": (lambda b: _with_input(b, datatype="FP32"), grpc.StatusCode.INVALID_ARGUMENT,
                       "expects dtype uint8"),
    "unserved datatype": (lambda b: _with_input(b, datatype="BF16"), grpc.StatusCode.INVALID_ARGUMENT,
                          "is not served"),
    "bytes short of the shape": (lambda b: _with_input(b, data=b.tobytes()[:-1]), grpc.StatusCode.INVALID_ARGUMENT,
                                 "needs 12288 bytes, received 12287"),
    "huge tile claimed": (lambda b: _with_input(b, shape=(1, 100000, 100000, 3)), grpc.StatusCode.INVALID_ARGUMENT,
                          "outside the accepted range"),
    "raw count mismatch": (lambda b: v2.ModelInferRequest(model_name=RGB_MODEL, raw_input_contents=[b.tobytes()]),
                           grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents holds 1 tensors for 0 inputs"),
    "missing input": (lambda b: v2.ModelInferRequest(model_name=RGB_MODEL), grpc.StatusCode.INVALID_ARGUMENT,
                      "missing ['image']"),
    "unknown output": (lambda b: infer_request(b, outputs=[v2.ModelInferRequest.InferRequestedOutputTensor(
        name="labels")]), grpc.StatusCode.INVALID_ARGUMENT, "'labels' is not one of them"),
    "typed value too large": (lambda b: _typed(b, 300), grpc.StatusCode.INVALID_ARGUMENT,
                              "outside the range of UINT8"),
    "typed and raw at once": (lambda b: _typed(b, 1, raw=True), grpc.StatusCode.INVALID_ARGUMENT,
                              "send every input one way"),
}


def _typed(batch: np.ndarray, value: int, raw: bool = False) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=RGB_MODEL)
    tensor = request.inputs.add(name="image", datatype="UINT8", shape=batch.shape)
    tensor.contents.uint_contents.extend([value] * batch.size)
    if raw:
        request.raw_input_contents.append(batch.tobytes())
    return request


@pytest.mark.parametrize("case", list(BAD_INFERS))
def test_bad_infer_requests_get_their_status_and_the_server_serves_on(
        model_repository: Path, stub: kserve_v2_pb2_grpc.GRPCInferenceServiceStub, case: str) -> None:
    make, code, words = BAD_INFERS[case]
    batch = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(make(batch), timeout=30)
    assert caught.value.code() == code, caught.value.details()
    assert words in caught.value.details()
    answer = stub.ModelInfer(infer_request(batch), timeout=60)
    assert answer.raw_output_contents[0] == in_process(model_repository, batch).tobytes()


def test_percentile_model_takes_each_tiles_range_as_inputs(tmp_path: Path) -> None:
    version = tiny_segmenter(tmp_path, percentile=True)
    rng = np.random.default_rng(31)
    batch = rng.integers(0, 4096, (2, 32, 48, 2), dtype=np.uint16)
    low = np.array([[10, 20], [0, 5]], np.float32)
    high = np.array([[3000, 4000], [1000, 900]], np.float32)
    expected = ort.InferenceSession(str(version / "model.onnx")).run(
        None, {"image": batch, "channel_low": low, "channel_high": high})[0]
    with ServerThread(local_settings(tmp_path)) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(ch)  # type: ignore[no-untyped-call]
        meta = stub.ModelMetadata(v2.ModelMetadataRequest(name="tiny"), timeout=10)
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            ("image", "UINT16", [-1, -1, -1, 2]), ("channel_low", "FP32", [-1, 2]), ("channel_high", "FP32", [-1, 2])]
        config = stub.ModelConfig(v2.ModelConfigRequest(name="tiny"), timeout=10).config
        assert [(i.name, i.data_type, i.format, list(i.dims)) for i in config.input] == [
            ("image", v2.TYPE_UINT16, v2.ModelInput.FORMAT_NHWC, [-1, -1, 2]),
            ("channel_low", v2.TYPE_FP32, v2.ModelInput.FORMAT_NONE, [2]),
            ("channel_high", v2.TYPE_FP32, v2.ModelInput.FORMAT_NONE, [2])]

        def request(high_rows: np.ndarray) -> v2.ModelInferRequest:
            message = v2.ModelInferRequest(model_name="tiny")
            for name, datatype, array in (("image", "UINT16", batch), ("channel_low", "FP32", low),
                                          ("channel_high", "FP32", high_rows)):
                message.inputs.add(name=name, datatype=datatype, shape=array.shape)
                message.raw_input_contents.append(array.tobytes())
            return message

        answer = stub.ModelInfer(request(high), timeout=60)
        got = np.frombuffer(answer.raw_output_contents[0], expected.dtype).reshape(answer.outputs[0].shape)
        np.testing.assert_array_equal(got, expected)
        for rows, words in ((low, "must exceed"), (high[:1], "must be FP32 of shape [2, 2]")):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(request(rows), timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in caught.value.details()


TRITON_USER = textwrap.dedent("""
    import sys
    import numpy as np
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(sys.argv[1])
    (counted,) = client.get_inference_statistics(sys.argv[2], as_json=True)["model_stats"]
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(sys.argv[2])
    config = client.get_model_config(sys.argv[2], as_json=True)["config"]  # as Triton's image_client reads it
    assert config["max_batch_size"] == 8 and config["input"][0]["format"] == "FORMAT_NHWC", config
    assert config["input"][0]["dims"] == ["-1", "-1", "3"], config
    batch = np.load(sys.argv[3])
    image = triton.InferInput("image", list(batch.shape), "UINT8")
    image.set_data_from_numpy(batch)
    result = client.infer(sys.argv[2], [image], request_id="from-triton")
    assert result.get_response().id == "from-triton"
    np.save(sys.argv[4], result.as_numpy(result.get_response().outputs[0].name))
    try:
        client.infer(sys.argv[2], [triton.InferInput("image", [1, 30, 30, 3], "UINT8").set_data_from_numpy(
            np.zeros((1, 30, 30, 3), np.uint8))])
    except triton.InferenceServerException as exc:
        print(exc.status(), exc.message())

    streamed = {}  # Triton's streaming API: one tile per request, answers by callback
    client.start_stream(callback=lambda result, error: streamed.update(
        {result.get_response().id: result.as_numpy("generated")} if error is None else {"error": error}))
    for index in range(len(batch)):
        tile = triton.InferInput("image", [1, *batch.shape[1:]], "UINT8")
        tile.set_data_from_numpy(batch[index:index + 1])
        client.async_stream_infer(sys.argv[2], [tile], request_id=str(index))
    client.stop_stream()
    assert sorted(streamed) == [str(i) for i in range(len(batch))], streamed
    (stats,) = client.get_inference_statistics(sys.argv[2], as_json=True)["model_stats"]
    tiles = int(stats["inference_count"]) - int(counted.get("inference_count", 0))
    assert tiles == 2 * len(batch), (counted, stats)  # the batch once, then its tiles streamed
    np.save(sys.argv[5], np.concatenate([streamed[str(i)] for i in range(len(batch))]))
""")


def test_nvidias_triton_client_runs_a_model_unchanged(model_repository: Path, server: ServerThread,
                                                     tmp_path: Path) -> None:
    """tritonclient registers the same protobuf package as our stubs, so it runs in its own process,
    as it would in a user's program."""
    pytest.importorskip("tritonclient", reason="tritonclient comes with the dev extra")
    batch = np.random.default_rng(32).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "batch.npy", batch)
    script = tmp_path / "triton_user.py"
    script.write_text(TRITON_USER)
    run = subprocess.run([sys.executable, str(script), f"127.0.0.1:{server.port}", RGB_MODEL,
                          str(tmp_path / "batch.npy"), str(tmp_path / "out.npy"), str(tmp_path / "streamed.npy")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = in_process(model_repository, batch)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    np.testing.assert_array_equal(np.load(tmp_path / "streamed.npy"), expected)
    assert "StatusCode.INVALID_ARGUMENT" in run.stdout and "not a multiple" in run.stdout


def test_no_kserve_serves_tilecast_alone(model_repository: Path) -> None:
    with ServerThread(local_settings(model_repository, kserve=False)) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as caught:
            stub.ServerLive(v2.ServerLiveRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
