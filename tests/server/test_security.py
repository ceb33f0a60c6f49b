"""TLS, mutual TLS, tokens with roles and the per-client cap, on a real server on loopback with
certificates made here (trustme)."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tifffile
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from tests.conftest import RGB_MODEL, local_settings
from tilecast.cli import app
from tilecast.client.channels import Security
from tilecast.client.control import RepositoryControl
from tilecast.client.live import LiveStream
from tilecast.client.remote import Client
from tilecast.proto.errors import PermissionDenied, ResourceExhausted, TilecastError, Unauthenticated
from tilecast.server.app import ServerThread

INFER_TOKEN, ADMIN_TOKEN = "infer-secret-1234", "admin-secret-5678"
SVS = Path("/work/shared/testdata/aperio-small.svs")


@dataclass
class Pki:
    """A CA, the server's certificate and a client certificate it signed, as files."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1", "localhost"), ca.issue_cert("client@example.org")
    pki = Pki(*(folder / name for name in ("ca.pem", "cert.pem", "key.pem", "client.pem", "client-key.pem")))
    ca.cert_pem.write_to_path(str(pki.ca))
    server.private_key_pem.write_to_path(str(pki.key))
    server.cert_chain_pems[0].write_to_path(str(pki.cert))
    client.private_key_pem.write_to_path(str(pki.client_key))
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    hashed = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    path.write_text(f"# who may call\n{INFER_TOKEN} infer\nsha256:{hashed} admin  # ops\n")
    return path


def tls_server(repository: Path, pki: Pki, **overrides: object) -> ServerThread:
    return ServerThread(local_settings(repository, tls_cert=pki.cert, tls_key=pki.key, **overrides))


def models_of(address: str, security: Security, timeout: float = 10) -> list[str]:
    with Client(address, security=security, timeout=timeout) as client:
        client.wait_ready(timeout=timeout, connect_timeout=timeout)
        return [status.name for status in client.list_models()]


def test_tls_serves_both_protocols_and_a_plain_client_is_refused(model_repository: Path, pki: Pki) -> None:
    with tls_server(model_repository, pki) as server:
        address = f"127.0.0.1:{server.port}"
        assert models_of(address, Security(ca=pki.ca)) == [RGB_MODEL]
        assert models_of(f"grpcs://localhost:{server.port}", Security(ca=pki.ca)) == [RGB_MODEL]
        with RepositoryControl(address, security=Security(ca=pki.ca)) as control:
            assert [entry.name for entry in control.index()] == [RGB_MODEL]
        with pytest.raises(TilecastError, match="a server with TLS refuses plain connections: give --tls-ca"):
            models_of(address, Security(), timeout=2)
        with pytest.raises(TilecastError):  # TLS, but trusting another CA
            models_of(address, Security(ca=make_pki(pki.ca.parent / "other").ca), timeout=2)


def test_mutual_tls_refuses_clients_without_a_certificate_of_its_ca(model_repository: Path, pki: Pki) -> None:
    other = make_pki(pki.ca.parent / "stranger")
    with tls_server(model_repository, pki, tls_client_ca=pki.ca) as server:
        address = f"127.0.0.1:{server.port}"
        assert models_of(address, Security(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)) == [RGB_MODEL]
        with pytest.raises(TilecastError):
            models_of(address, Security(ca=pki.ca), timeout=2)  # no client certificate
        with pytest.raises(TilecastError):  # a certificate from a CA the server does not trust
            models_of(address, Security(ca=pki.ca, cert=other.client_cert, key=other.client_key), timeout=2)


@pytest.fixture(scope="module")
def guarded(model_repository: Path, tokens: Path) -> Iterator[ServerThread]:
    settings = local_settings(model_repository, auth_tokens=tokens, model_control="explicit", load_models=("*",))
    with ServerThread(settings) as server:
        yield server


def test_tokens_and_roles(guarded: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    address = f"127.0.0.1:{guarded.port}"
    caplog.set_level(logging.DEBUG)
    with grpc.insecure_channel(address) as channel:  # probes need no token
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(Unauthenticated, match="no valid token") as missing:
        models_of(address, Security())
    with pytest.raises(Unauthenticated, match="not one this server knows") as unknown:
        models_of(address, Security(token="guess-" + INFER_TOKEN))
    assert models_of(address, Security(token=INFER_TOKEN)) == [RGB_MODEL]
    assert models_of(address, Security(token=ADMIN_TOKEN)) == [RGB_MODEL]  # admin may infer too
    with RepositoryControl(address, token=INFER_TOKEN) as control:
        assert [entry.name for entry in control.index()] == [RGB_MODEL]
        with pytest.raises(PermissionDenied, match="RepositoryModelUnload needs a token with the admin role") as role:
            control.unload(RGB_MODEL)
        with pytest.raises(PermissionDenied):
            control.load(RGB_MODEL)
    with RepositoryControl(address, token=ADMIN_TOKEN) as control:
        control.unload(RGB_MODEL)
        control.load(RGB_MODEL)
    for error in (missing.value, unknown.value, role.value):
        assert "\n" not in str(error) and INFER_TOKEN not in str(error)
    assert INFER_TOKEN not in caplog.text and ADMIN_TOKEN not in caplog.text


def test_the_asyncio_client_sends_its_token(guarded: ServerThread) -> None:
    import asyncio

    from tilecast.client.live import AsyncClient

    async def manifest(token: str | None) -> str:
        async with AsyncClient(f"127.0.0.1:{guarded.port}", token=token) as client:
            await client.wait_ready(10)
            return (await client.get_model(RGB_MODEL)).name

    async def streamed() -> int | None:
        async with AsyncClient(f"127.0.0.1:{guarded.port}", token=INFER_TOKEN) as client, \
                client.live(RGB_MODEL) as stream:
            await stream.send(5, np.zeros((64, 64, 3), np.uint8))
            reply = await stream.receive()
            return None if reply is None or reply.error else reply.id

    assert asyncio.run(manifest(INFER_TOKEN)) == RGB_MODEL
    assert asyncio.run(streamed()) == 5
    with pytest.raises(Unauthenticated):
        asyncio.run(manifest(None))


def test_calls_per_peer_are_capped(model_repository: Path, tokens: Path) -> None:
    settings = local_settings(model_repository, max_calls_per_peer=1)
    with ServerThread(settings) as server, Client(f"127.0.0.1:{server.port}", timeout=10) as client:
        client.wait_ready(10)
        with LiveStream(client, RGB_MODEL, window=1) as stream:
            stream.send(0, np.zeros((64, 64, 3), np.uint8))
            assert stream.receive(timeout=30) is not None  # the stream holds this client's one call
            with pytest.raises(ResourceExhausted, match="--max-calls-per-peer"):
                client.list_models()
        for _ in range(50):  # its call over (the server's handler ends just after the client's), the next runs
            try:
                assert [s.name for s in client.list_models()] == [RGB_MODEL]
                break
            except ResourceExhausted:
                time.sleep(0.1)
        else:
            pytest.fail("the client's share was not given back when its stream ended")
    settings = local_settings(model_repository, max_calls_per_peer=1, auth_tokens=tokens)
    with ServerThread(settings) as server:  # with tokens, each token has its own share
        address = f"127.0.0.1:{server.port}"
        with Client(address, token=INFER_TOKEN) as client, LiveStream(client, RGB_MODEL) as stream:
            stream.send(0, np.zeros((64, 64, 3), np.uint8))
            assert stream.receive(timeout=30) is not None
            assert models_of(address, Security(token=ADMIN_TOKEN)) == [RGB_MODEL]
            with pytest.raises(ResourceExhausted):
                client.list_models()


def test_a_rotated_certificate_is_served_without_dropping_streams(model_repository: Path, tmp_path: Path) -> None:
    first, second = make_pki(tmp_path / "first"), make_pki(tmp_path / "second")
    with tls_server(model_repository, first) as server:
        address = f"127.0.0.1:{server.port}"
        with Client(address, security=Security(ca=first.ca)) as client, LiveStream(client, RGB_MODEL) as stream:
            stream.send(0, np.zeros((64, 64, 3), np.uint8))
            assert stream.receive(timeout=30) is not None
            first.key.write_bytes(second.key.read_bytes())  # rotate: the same paths, new files
            first.cert.write_bytes(second.cert.read_bytes())
            assert models_of(address, Security(ca=second.ca)) == [RGB_MODEL]
            with pytest.raises(TilecastError):
                models_of(address, Security(ca=first.ca), timeout=2)
            stream.send(1, np.zeros((64, 64, 3), np.uint8))  # the stream opened before still answers
            reply = stream.receive(timeout=30)
            assert reply is not None and reply.id == 1 and reply.error is None


TRITON_TLS_USER = textwrap.dedent("""
    import sys
    import numpy as np
    import tritonclient.grpc as triton

    address, ca, cert, key, token, model = sys.argv[1:7]
    client = triton.InferenceServerClient(address, ssl=True, root_certificates=ca, private_key=key,
                                          certificate_chain=cert)
    headers = {"authorization": f"Bearer {token}"}
    assert client.is_server_ready(headers=headers) and client.is_model_ready(model, headers=headers)
    image = triton.InferInput("image", [1, 64, 64, 3], "UINT8")
    image.set_data_from_numpy(np.full((1, 64, 64, 3), 7, np.uint8))
    print("shape", client.infer(model, [image], headers=headers).as_numpy("generated").shape)
    try:
        client.unload_model(model, headers=headers)
    except triton.InferenceServerException as exc:
        print("unload", exc.status())
    try:
        client.is_model_ready(model)
    except triton.InferenceServerException as exc:
        print("no token", exc.status())
""")


def test_tritonclient_over_mutual_tls_with_a_token(model_repository: Path, pki: Pki, tokens: Path) -> None:
    with tls_server(model_repository, pki, tls_client_ca=pki.ca, auth_tokens=tokens) as server:
        done = subprocess.run(
            [sys.executable, "-c", TRITON_TLS_USER, f"localhost:{server.port}", str(pki.ca), str(pki.client_cert),
             str(pki.client_key), INFER_TOKEN, RGB_MODEL], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["shape (1, 64, 64, 3)", "unload StatusCode.PERMISSION_DENIED",
                                           "no token StatusCode.UNAUTHENTICATED"], done.stdout


def test_convert_over_tls_with_a_token_file(model_repository: Path, pki: Pki, tokens: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(INFER_TOKEN + "\n")
    with tls_server(model_repository, pki, auth_tokens=tokens) as server:
        base = ["-m", RGB_MODEL, "-s", f"grpcs://localhost:{server.port}", "--tls-ca", str(pki.ca)]
        done = CliRunner().invoke(app, ["convert", str(SVS), *base, "--token-file", str(token_file),
                                        "-o", str(tmp_path / "out.tif")])
        assert done.exit_code == 0, done.output
        refused = CliRunner().invoke(app, ["convert", str(SVS), *base, "-o", str(tmp_path / "refused.tif")],
                                     env={"TILECAST_TOKEN": ""})
        listed = CliRunner().invoke(app, ["models", "-s", f"127.0.0.1:{server.port}", "--tls-ca", str(pki.ca)],
                                    env={"TILECAST_TOKEN": INFER_TOKEN})
    assert tifffile.imread(tmp_path / "out.tif").shape == (16, 16, 3)
    assert refused.exit_code != 0 and "no valid token" in refused.output, refused.output
    assert listed.exit_code == 0 and RGB_MODEL in listed.output, listed.output


def test_metrics_listen_on_their_own_host(model_repository: Path) -> None:
    settings = local_settings(model_repository, host="127.0.0.1", metrics_host="127.0.0.2")
    with ServerThread(settings) as server:
        port = server.server.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=10) as page:
            assert b"tilecast" in page.read()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_metrics_can_require_a_token(model_repository: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text("scrape-secret\n")
    with ServerThread(local_settings(model_repository, metrics_token_file=token_file)) as server:
        url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(url, timeout=10)
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer guess"}), timeout=10)
        scrape = urllib.request.Request(url, headers={"Authorization": "Bearer scrape-secret"})
        with urllib.request.urlopen(scrape, timeout=10) as page:
            assert b"tilecast_requests" in page.read()


def test_a_bad_tokens_file_is_one_line_that_quotes_no_token(model_repository: Path, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{INFER_TOKEN} superuser\n")
    with pytest.raises(ValueError, match="line 1: give a token and its role") as bad:
        ServerThread(local_settings(model_repository, auth_tokens=path))
    assert INFER_TOKEN not in str(bad.value)
    with pytest.raises(ValueError, match=r"--auth-tokens .*cannot read it"):
        ServerThread(local_settings(model_repository, auth_tokens=tmp_path / "missing"))


def test_models_unload_takes_tls_from_models_and_the_token_from_the_environment(
        model_repository: Path, pki: Pki, tokens: Path) -> None:
    settings = local_settings(model_repository, tls_cert=pki.cert, tls_key=pki.key, auth_tokens=tokens,
                              model_control="explicit", load_models=("*",))
    with ServerThread(settings) as server:
        base = ["models", "-s", f"127.0.0.1:{server.port}", "--tls-ca", str(pki.ca)]
        refused = CliRunner().invoke(app, [*base, "unload", RGB_MODEL], env={"TILECAST_TOKEN": INFER_TOKEN})
        unloaded = CliRunner().invoke(app, [*base, "unload", RGB_MODEL], env={"TILECAST_TOKEN": ADMIN_TOKEN})
    assert refused.exit_code != 0 and "needs a token with the admin role" in refused.output, refused.output
    assert unloaded.exit_code == 0 and f"{RGB_MODEL} unloaded" in unloaded.output, unloaded.output
