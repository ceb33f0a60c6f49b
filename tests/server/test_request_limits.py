"""What a client sends cannot make the server answer with the wrong status: a version string that is
not a number, values echoed into messages larger than a status trailer may be, a reply too large to
send. Each through both protocols where both have it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import local_settings
from tests.server.test_kserve import infer_request
from tilecast.client.remote import Client
from tilecast.proto.errors import NotFound, ResourceExhausted
from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc, kserve_v2_pb2_grpc, manifest_pb2
from tilecast.proto.v1 import kserve_v2_pb2 as v2
from tilecast.server.app import ServerThread

BUNDLED = Path(__file__).resolve().parents[2] / "models"
COLORIZE = "ihc-colorize"  # 1 channel in, 3 out: its reply is three times its request
MAX_STATUS_MESSAGE = 4096  # "under a few KB"


@pytest.fixture(scope="module")
def colorize() -> Iterator[ServerThread]:
    with ServerThread(local_settings(BUNDLED)) as server:
        yield server


@pytest.fixture(scope="module")
def kserve(colorize: ServerThread) -> Iterator[kserve_v2_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{colorize.port}") as channel:
        yield kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


def failed(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize("version", ["²", "\u0661", "9" * 5000, "1" * 19, "-1", "1.0"])
def test_a_kserve_version_that_is_not_a_number_is_invalid_argument(
        kserve: kserve_v2_pb2_grpc.GRPCInferenceServiceStub, version: str) -> None:
    for call, request in ((kserve.ModelMetadata, v2.ModelMetadataRequest(name=COLORIZE, version=version)),
                          (kserve.ModelReady, v2.ModelReadyRequest(name=COLORIZE, version=version)),
                          (kserve.ModelInfer, v2.ModelInferRequest(model_name=COLORIZE, model_version=version))):
        error = failed(call, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "whole number" in (error.details() or "") and len(error.details() or "") < MAX_STATUS_MESSAGE


def test_a_bad_version_in_a_kserve_stream_is_that_requests_error_and_the_stream_goes_on(
        kserve: kserve_v2_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """It ended the whole stream with INTERNAL."""
    def request(version: str, id_: str) -> v2.ModelInferRequest:
        message = infer_request(np.zeros((1, 64, 64, 1), np.uint8))
        message.model_name, message.model_version, message.id = COLORIZE, version, id_
        return message

    answers = {a.infer_response.id: a for a in kserve.ModelStreamInfer(
        iter([request("²", "bad"), request("9" * 5000, "long"), request("1", "good")]), timeout=120)}
    assert set(answers) == {"bad", "long", "good"}
    assert "whole number" in answers["bad"].error_message and "whole number" in answers["long"].error_message
    assert not answers["good"].error_message and answers["good"].infer_response.outputs[0].shape == [1, 64, 64, 3]


def test_a_huge_model_name_is_not_found_in_a_short_message_on_both_protocols(
        colorize: ServerThread, kserve: kserve_v2_pb2_grpc.GRPCInferenceServiceStub, model_repository: Path) -> None:
    name = "m" * 20_000
    with grpc.insecure_channel(f"127.0.0.1:{colorize.port}") as channel:
        v1 = inference_pb2_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        errors = [failed(v1.GetModel, inference_pb2.GetModelRequest(name=name)),
                  failed(kserve.ModelMetadata, v2.ModelMetadataRequest(name=name)),
                  failed(kserve.ModelInfer, v2.ModelInferRequest(model_name=name))]
    with Client(f"127.0.0.1:{colorize.port}", timeout=60) as client, pytest.raises(NotFound) as caught:
        client.predict(name, np.zeros((1, 64, 64, 1), np.uint8))
    assert len(str(caught.value)) < MAX_STATUS_MESSAGE
    for error in errors:
        details = error.details() or ""
        assert error.code() == grpc.StatusCode.NOT_FOUND, details[:200]
        assert "not found" in details and "20000 characters" in details and len(details) < MAX_STATUS_MESSAGE


def test_a_shape_of_rank_5000_is_invalid_argument_in_a_short_message_on_both_protocols(
        colorize: ServerThread, kserve: kserve_v2_pb2_grpc.GRPCInferenceServiceStub) -> None:
    shape = (1,) * 5000  # more axes than NumPy allows: sent as the messages' fields
    predict = inference_pb2.PredictRequest(model=COLORIZE, tiles=inference_pb2.Tensor(
        dtype=manifest_pb2.DTYPE_UINT8, shape=shape, data=b"\0"))
    with grpc.insecure_channel(f"127.0.0.1:{colorize.port}") as channel:
        v1 = inference_pb2_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        wrong = failed(v1.Predict, predict)
    assert wrong.code() == grpc.StatusCode.INVALID_ARGUMENT, (wrong.details() or "")[:200]
    request = v2.ModelInferRequest(model_name=COLORIZE)
    request.inputs.add(name="image", datatype="UINT8", shape=shape)
    request.raw_input_contents.append(b"\0")
    error = failed(kserve.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.details() or "")[:200]
    for details in (wrong.details() or "", error.details() or ""):
        assert "rank" in details and "5000 items" in details and len(details) < MAX_STATUS_MESSAGE, details[:300]


def test_a_reply_too_large_to_send_is_refused_before_computing_on_both_protocols(
        colorize: ServerThread, kserve: kserve_v2_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """6 tiles of 2048² (24 MB) ask for a 75 MB reply, over the 64 MiB limit: computing it took 18 s
    and then failed "Sent message larger than max"."""
    batch = np.zeros((6, 2048, 2048, 1), np.uint8)
    with Client(f"127.0.0.1:{colorize.port}", timeout=120) as client:
        client.predict(COLORIZE, np.zeros((1, 64, 64, 1), np.uint8))  # connected, so the timing is the call's
        started = time.monotonic()
        with pytest.raises(ResourceExhausted) as caught:
            client.predict(COLORIZE, batch)
        took = time.monotonic() - started
    message = str(caught.value)
    assert "75,501,568 bytes" in message and f"{64 * 1024 * 1024:,}" in message and "--max-message-bytes" in message
    assert took < 1.0, f"{took:.2f} s: computed before refusing"
    request = infer_request(batch)
    request.model_name = COLORIZE
    started = time.monotonic()
    error = failed(kserve.ModelInfer, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "75,501,568 bytes" in (error.details() or "")
    assert time.monotonic() - started < 1.0



def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_one_large_batch_does_not_leave_the_engines_memory_behind() -> None:
    """ONNX Runtime's CPU arena kept what one large batch needed (RSS 188 MB -> 3.99 GB, for good).
    A server of its own: a fresh engine, whose arena no earlier test has grown."""
    with ServerThread(local_settings(BUNDLED, intra_op_threads=2)) as server, \
            Client(f"127.0.0.1:{server.port}", timeout=600) as client:
        client.predict(COLORIZE, np.zeros((1, 256, 256, 1), np.uint8))
        before = _rss_mb()
        [output] = client.predict(COLORIZE, np.zeros((1, 2048, 2048, 1), np.uint8))
        assert output.shape == (1, 2048, 2048, 3)
        del output
        client.predict(COLORIZE, np.zeros((1, 256, 256, 1), np.uint8))
        grown = _rss_mb() - before
    assert grown < 300, f"RSS grew {grown:.0f} MB after one 2048² tile"
