"""Explicit model control, Triton's repository extension: RepositoryIndex, RepositoryModelLoad and
RepositoryModelUnload on a real server, through our stubs and through NVIDIA's tritonclient."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from tests.conftest import RGB_MODEL, local_settings
from tests.server.test_kserve import infer_request
from tilecast.cli import app
from tilecast.client.control import RepositoryControl
from tilecast.client.remote import Client
from tilecast.local import free_port
from tilecast.proto.errors import Unavailable
from tilecast.proto.v1 import kserve_v2_pb2 as v2
from tilecast.proto.v1 import kserve_v2_pb2_grpc
from tilecast.server.app import ServerThread

BROKEN = "broken"
TILE = np.zeros((1, 64, 64, 3), np.uint8)


@pytest.fixture
def repository(model_repository: Path, tmp_path: Path) -> Path:
    """The RGB generator, and a copy of it whose engine file is not ONNX."""
    root = tmp_path / "models"
    shutil.copytree(model_repository / RGB_MODEL, root / RGB_MODEL)
    shutil.copytree(model_repository / RGB_MODEL, root / BROKEN)
    (root / BROKEN / "1" / "model.onnx").write_bytes(b"not an ONNX graph")
    return root


@pytest.fixture
def explicit(repository: Path) -> Iterator[ServerThread]:
    with ServerThread(local_settings(repository, model_control="explicit", load_models=(RGB_MODEL,))) as server:
        yield server


def index(stub: kserve_v2_pb2_grpc.GRPCInferenceServiceStub, ready: bool = False) -> set[tuple[str, str, str]]:
    response = stub.RepositoryIndex(v2.RepositoryIndexRequest(ready=ready), timeout=30)
    return {(m.name, m.version, m.state) for m in response.models}


def failure(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)  # type: ignore[operator]
    return caught.value


def infer(stub: kserve_v2_pb2_grpc.GRPCInferenceServiceStub) -> v2.ModelInferResponse:
    response: v2.ModelInferResponse = stub.ModelInfer(infer_request(TILE), timeout=30)
    return response


def test_explicit_control_loads_and_unloads_by_request(explicit: ServerThread) -> None:
    address = f"127.0.0.1:{explicit.port}"
    with grpc.insecure_channel(address) as channel, Client(address, timeout=30) as client:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        health = health_pb2_grpc.HealthStub(channel)
        # Only --load-model's model loaded at start; the other is listed, not loaded.
        assert index(stub) == {(RGB_MODEL, "1", "READY"), (BROKEN, "", "UNAVAILABLE")}
        assert index(stub, ready=True) == {(RGB_MODEL, "1", "READY")}
        assert infer(stub).outputs[0].shape == [1, 64, 64, 3]
        assert "model_repository" in stub.ServerMetadata(v2.ServerMetadataRequest(), timeout=10).extensions

        # Unloading while a stream runs on the model: the stream finishes on it, new requests are refused.
        replies = client.stream(RGB_MODEL, ((i, TILE[0]) for i in range(12)), window=2)
        first = next(replies)
        stub.RepositoryModelUnload(v2.RepositoryModelUnloadRequest(model_name=RGB_MODEL), timeout=60)
        rest = list(replies)
        assert sorted(r.id for r in [first, *rest]) == list(range(12)) and all(r.error is None for r in rest)
        assert not stub.ModelReady(v2.ModelReadyRequest(name=RGB_MODEL), timeout=10).ready
        assert failure(stub.ModelInfer, infer_request(TILE)).code() == grpc.StatusCode.NOT_FOUND
        assert index(stub) == {(RGB_MODEL, "", "UNAVAILABLE"), (BROKEN, "", "UNAVAILABLE")}
        status = health.Check(health_pb2.HealthCheckRequest(service=RGB_MODEL), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING

        stub.RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name=RGB_MODEL), timeout=60)
        assert stub.ModelReady(v2.ModelReadyRequest(name=RGB_MODEL), timeout=10).ready
        assert infer(stub).outputs[0].shape == [1, 64, 64, 3]
        status = health.Check(health_pb2.HealthCheckRequest(service=RGB_MODEL), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING

        # A model that fails to load says why, in the answer and in the index; the others serve on.
        broken = failure(stub.RepositoryModelLoad, v2.RepositoryModelLoadRequest(model_name=BROKEN))
        assert broken.code() == grpc.StatusCode.FAILED_PRECONDITION and "v1:" in (broken.details() or "")
        [entry] = [m for m in stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=30).models
                   if m.name == BROKEN]
        assert (entry.version, entry.state) == ("1", "UNAVAILABLE") and entry.reason, entry
        assert infer(stub).outputs[0].shape == [1, 64, 64, 3]


@pytest.mark.parametrize(("request_", "code", "words"), [
    (v2.RepositoryModelLoadRequest(model_name="no-such-model"), grpc.StatusCode.NOT_FOUND, "it has ['broken', 'rgb"),
    (v2.RepositoryModelLoadRequest(model_name=RGB_MODEL, parameters={"config": v2.ModelRepositoryParameter(
        string_param="{}")}), grpc.StatusCode.INVALID_ARGUMENT, "parameters (config)"),
    (v2.RepositoryModelLoadRequest(repository_name="elsewhere", model_name=RGB_MODEL), grpc.StatusCode.NOT_FOUND,
     "one model repository, 'models'"),
    (v2.RepositoryModelUnloadRequest(model_name=RGB_MODEL, parameters={"force": v2.ModelRepositoryParameter(
        bool_param=True)}), grpc.StatusCode.INVALID_ARGUMENT, "unknown unload parameters ['force']"),
])
def test_bad_control_requests_say_what_is_wrong(explicit: ServerThread, request_: object, code: grpc.StatusCode,
                                                words: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{explicit.port}") as channel:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        call = stub.RepositoryModelLoad if isinstance(request_, v2.RepositoryModelLoadRequest) \
            else stub.RepositoryModelUnload
        error = failure(call, request_)
        assert error.code() == code and words in (error.details() or ""), error.details()
        assert stub.ModelReady(v2.ModelReadyRequest(name=RGB_MODEL), timeout=10).ready


@pytest.mark.parametrize("name", ["no-such", "", "../../etc", "x" * 20_000])
def test_unloading_an_unknown_model_is_not_found_with_the_known_names(explicit: ServerThread, repository: Path,
                                                                      name: str) -> None:
    """It answered OK (`tilecast models unload typo` said nothing was wrong) while loading it is NOT_FOUND."""
    with grpc.insecure_channel(f"127.0.0.1:{explicit.port}") as channel:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        for call, request in ((stub.RepositoryModelUnload, v2.RepositoryModelUnloadRequest(model_name=name)),
                              (stub.RepositoryModelLoad, v2.RepositoryModelLoadRequest(model_name=name))):
            error = failure(call, request)
            details = error.details() or ""
            assert error.code() == grpc.StatusCode.NOT_FOUND, details[:200]
            assert f"it has ['{BROKEN}', '{RGB_MODEL}']" in details and len(details) < 4096, details[:300]
            assert str(repository) not in details, "the message shows where the server keeps its models"
        assert stub.ModelReady(v2.ModelReadyRequest(name=RGB_MODEL), timeout=10).ready


def test_without_explicit_control_the_index_answers_and_loading_is_refused(server: ServerThread) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        assert (RGB_MODEL, "1", "READY") in index(stub)
        for call, request in ((stub.RepositoryModelLoad, v2.RepositoryModelLoadRequest(model_name=RGB_MODEL)),
                              (stub.RepositoryModelUnload, v2.RepositoryModelUnloadRequest(model_name=RGB_MODEL))):
            error = failure(call, request)
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
            assert "--model-control explicit" in (error.details() or "")
        assert stub.ModelReady(v2.ModelReadyRequest(name=RGB_MODEL), timeout=10).ready


@pytest.mark.parametrize(("flags", "words"), [
    (["--load-model", RGB_MODEL], "under --model-control explicit"),
    (["--model-control", "poll"], "--repository-poll-s > 0"),
    (["--model-control", "explicit", "--repository-poll-s", "5"], "--repository-poll-s > 0"),
    (["--model-control", "manual"], "one of none, poll, explicit"),
])
def test_conflicting_control_flags_are_refused(repository: Path, flags: list[str], words: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--repository", str(repository), "--port", "0",
                                      "--metrics-port", "-1", *flags])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and words in said and "Traceback" not in said, said


def said(args: list[str]) -> tuple[int, str]:
    """A command's exit code and its output as one line of words (table borders dropped)."""
    result = CliRunner().invoke(app, args)
    words = "".join(" " if "\u2500" <= c <= "\u257f" else c for c in result.output)
    return result.exit_code, " ".join(words.split())


def test_operators_load_and_unload_from_the_command_line(explicit: ServerThread) -> None:
    address = f"127.0.0.1:{explicit.port}"
    code, listing = said(["models", "-s", address, "--repository"])
    assert code == 0 and f"{RGB_MODEL} 1 ready" in listing and f"{BROKEN} - unavailable unloaded" in listing, listing

    code, text = said(["models", "-s", address, "unload", RGB_MODEL])
    assert code == 0 and f"{address}: {RGB_MODEL} unloaded" in text, text
    code, listing = said(["models", "-s", address, "--repository"])
    assert f"{RGB_MODEL} - unavailable unloaded" in listing, listing
    code, text = said(["models", "load", RGB_MODEL, "-s", address, "--timeout", "60"])
    assert code == 0 and f"{address}: {RGB_MODEL} loaded" in text, text
    with Client(address, timeout=30) as client:
        assert client.predict(RGB_MODEL, TILE)[0].shape == (1, 64, 64, 3)

    # Mistakes and failures: one line each, exit 1, the server serving on.
    for args, words in ((["load", BROKEN], "did not load"), (["load", "no-such-model"], "it has ['broken', 'rgb"),
                        (["load", RGB_MODEL, "--timeout", "-1"], "give seconds, or 0")):
        code, text = said(["models", "-s", address, *args])
        assert code == 1 and words in text and "Traceback" not in text, text
    code, listing = said(["models", "-s", address])
    assert code == 0 and f"{RGB_MODEL} 1 generator ready" in listing, listing


def test_load_from_the_command_line_names_the_flag_it_needs(server: ServerThread) -> None:
    code, text = said(["models", "-s", f"127.0.0.1:{server.port}", "load", RGB_MODEL])
    assert code == 1 and "--model-control explicit" in text and "Traceback" not in text, text


def test_repository_control_needs_the_kserve_protocol(repository: Path) -> None:
    with ServerThread(local_settings(repository, kserve=False)) as server:
        code, text = said(["models", "-s", f"127.0.0.1:{server.port}", "--repository"])
    assert code == 1 and "does not serve the KServe v2 protocol" in text and "--kserve" in text, text


def test_no_server_at_the_address_is_said_plainly() -> None:
    address = f"127.0.0.1:{free_port()}"
    with RepositoryControl(address, connect_timeout=0.5) as control, pytest.raises(
            Unavailable, match=f"no server answered at {address} within 0.5 s"):
        control.index()


TRITON_OPERATOR = textwrap.dedent("""
    import sys
    import numpy as np
    import tritonclient.grpc as triton

    client, model = triton.InferenceServerClient(sys.argv[1]), sys.argv[2]
    listed = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert listed[model]["state"] == "UNAVAILABLE" and listed[model]["reason"] == "unloaded", listed
    assert not client.is_model_ready(model)
    client.load_model(model)
    assert client.is_model_ready(model)
    tile = triton.InferInput("image", [1, 64, 64, 3], "UINT8")
    tile.set_data_from_numpy(np.zeros((1, 64, 64, 3), np.uint8))
    assert client.infer(model, [tile]).as_numpy("generated").shape == (1, 64, 64, 3)
    client.unload_model(model)
    assert not client.is_model_ready(model)
    try:
        client.load_model("broken")
    except triton.InferenceServerException as exc:
        print(exc.status(), exc.message())
""")


def test_load_model_star_loads_the_repository_as_it_is_at_start(repository: Path, tmp_path: Path) -> None:
    aside = shutil.move(repository / RGB_MODEL, tmp_path / "aside")  # comes back once the server runs
    settings = local_settings(repository, model_control="explicit", load_models=("*",))
    with ServerThread(settings) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        assert index(stub) == {(BROKEN, "1", "UNAVAILABLE")}  # tried at start, and failed
        shutil.move(aside, repository / RGB_MODEL)
        assert index(stub) == {(RGB_MODEL, "", "UNAVAILABLE"), (BROKEN, "1", "UNAVAILABLE")}  # not loaded
        stub.RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name=RGB_MODEL), timeout=60)
        assert index(stub) == {(RGB_MODEL, "1", "READY"), (BROKEN, "1", "UNAVAILABLE")}


def test_nvidias_triton_client_loads_and_unloads_models(repository: Path, tmp_path: Path) -> None:
    """tritonclient's own protobuf package would clash with our stubs: it runs in a process of its own."""
    pytest.importorskip("tritonclient", reason="tritonclient comes with the dev extra")
    script = tmp_path / "triton_operator.py"
    script.write_text(TRITON_OPERATOR)
    with ServerThread(local_settings(repository, model_control="explicit")) as server:
        run = subprocess.run([sys.executable, str(script), f"127.0.0.1:{server.port}", RGB_MODEL],
                             capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "StatusCode.FAILED_PRECONDITION" in run.stdout and "did not load" in run.stdout, run.stdout
