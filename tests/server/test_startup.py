"""Starting up: ports are bound before the repository loads, and the server answers while it loads.

A version's manifest is made a named pipe: the loader blocks reading it, for real, until the test
writes the manifest into the pipe, so the loading window lasts exactly as long as the test needs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tifffile
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from tests.conftest import RGB_MODEL, local_settings
from tilecast.cli import app
from tilecast.client.remote import Client
from tilecast.local import free_port
from tilecast.proto.errors import Unavailable
from tilecast.proto.v1 import inference_pb2, kserve_v2_pb2, kserve_v2_pb2_grpc
from tilecast.server.app import ServerThread

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class StalledManifest:
    """A repository whose one version's manifest.json is a named pipe that nobody writes yet."""

    def __init__(self, model_repository: Path, root: Path) -> None:
        self.repository = root / "models"
        shutil.copytree(model_repository / RGB_MODEL, self.repository / RGB_MODEL)
        self.manifest = self.repository / RGB_MODEL / "1" / "manifest.json"
        self._content = self.manifest.read_bytes()
        self.manifest.unlink()
        os.mkfifo(self.manifest)
        self._writer: int | None = None

    def hold(self, timeout: float = 60) -> bool:
        """Wait for the loader to open the pipe, and keep it blocked in its read: the pipe's writer
        stays open and writes nothing. False if nothing opened the pipe within `timeout` seconds."""
        end = time.monotonic() + timeout
        while self._writer is None:
            try:
                self._writer = os.open(self.manifest, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: the loader has not opened the pipe yet
                if time.monotonic() >= end:
                    return False
                time.sleep(0.01)
        return True

    def release(self, timeout: float = 60) -> bool:
        """Put the real file in place, then hand the blocked reader the same bytes through the pipe;
        False if nothing opened the pipe within `timeout` seconds."""
        if not self.hold(timeout):
            return False
        assert self._writer is not None
        staged = self.manifest.with_suffix(".staged")
        staged.write_bytes(self._content)
        staged.replace(self.manifest)  # later reads see a plain file; the open pipe stays the loader's
        os.set_blocking(self._writer, True)
        with contextlib.suppress(BrokenPipeError), os.fdopen(self._writer, "wb") as writer:  # reader gone?
            writer.write(self._content)
        self._writer = None
        return True


@pytest.fixture
def stalled(model_repository: Path, tmp_path: Path) -> Iterator[StalledManifest]:
    repository = StalledManifest(model_repository, tmp_path)
    yield repository
    repository.release(timeout=0.5)  # a failed test must not leave a loader blocked for good


def health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status)


def convert_command(image: Path, address: str, output: Path, wait_s: float) -> list[str]:
    return ["convert", str(image), "-m", RGB_MODEL, "-s", address, "-o", str(output), "--wait-s", str(wait_s)]


def test_the_server_answers_while_its_repository_loads(stalled: StalledManifest, tmp_path: Path) -> None:
    server = ServerThread(local_settings(stalled.repository))
    started: list[BaseException | None] = []

    def start() -> None:
        try:
            server.__enter__()
            started.append(None)
        except BaseException as exc:
            started.append(exc)

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    try:
        end = time.monotonic() + 60
        while not server.port:
            assert time.monotonic() < end and starter.is_alive(), f"the server never bound its port: {started}"
            time.sleep(0.01)
        address = f"127.0.0.1:{server.port}"
        with grpc.insecure_channel(address) as channel, Client(address, timeout=10) as client:
            assert health(channel) == NOT_SERVING
            assert health(channel, RGB_MODEL) == NOT_SERVING
            [status] = client.list_models()
            assert (status.name, status.version, status.state) == (RGB_MODEL, 1, inference_pb2.MODEL_STATE_LOADING)
            listing = CliRunner().invoke(app, ["models", "-s", address])
            assert listing.exit_code == 0 and "loading" in listing.output, listing.output
            tile = np.zeros((1, 256, 256, 3), np.uint8)
            with pytest.raises(Unavailable, match="loading"):
                client.predict(RGB_MODEL, tile)
            kserve = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            assert kserve.ServerLive(kserve_v2_pb2.ServerLiveRequest(), timeout=10).live
            assert not kserve.ServerReady(kserve_v2_pb2.ServerReadyRequest(), timeout=10).ready
            with pytest.raises(Unavailable, match=r"did not become ready within 0\.3 s"):
                client.wait_ready(timeout=0.3)
            assert not started, "start() returned before the repository loaded"

            # convert waits for the load as long as --wait-s says, and writes nothing if it gives up.
            image = tmp_path / "a.tif"
            tifffile.imwrite(image, np.zeros((300, 300, 3), np.uint8), photometric="rgb")
            impatient = CliRunner().invoke(app, convert_command(image, address, tmp_path / "early.tif", 0.3))
            said = " ".join(impatient.output.split())
            assert impatient.exit_code == 1 and "did not become ready within 0.3 s" in said, said
            assert not list(tmp_path.glob("early*"))
            patient = subprocess.Popen([sys.executable, "-m", "tilecast", *convert_command(
                image, address, tmp_path / "b.tif", 60)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(3)
            assert patient.poll() is None, patient.communicate()[0]  # still waiting for the load

            assert stalled.release(), "the server never began reading the manifest"
            printed, _ = patient.communicate(timeout=120)
            assert patient.returncode == 0, printed
            assert tifffile.imread(tmp_path / "b.tif").shape == (300, 300, 3)
            client.wait_ready(timeout=60)
            starter.join(timeout=60)
            assert started == [None]
            assert health(channel) == SERVING and health(channel, RGB_MODEL) == SERVING
            assert kserve.ServerReady(kserve_v2_pb2.ServerReadyRequest(), timeout=10).ready
            [status] = client.list_models()
            assert status.state == inference_pb2.MODEL_STATE_READY
            [output] = client.predict(RGB_MODEL, tile)
            assert output.shape == (1, 256, 256, 3)
    finally:
        if stalled.manifest.is_fifo():
            stalled.release(timeout=5)
        starter.join(timeout=60)
        server.stop()


@pytest.mark.parametrize("taken", ["port", "metrics_port"])
def test_a_port_in_use_is_reported_before_anything_loads(stalled: StalledManifest, taken: str) -> None:
    # Were the repository loaded first, start() would block on the unwritten manifest.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(OSError) as failure:
            ServerThread(local_settings(stalled.repository, **{taken: port})).__enter__()
    flag = "--port" if taken == "port" else "--metrics-port"
    assert str(port) in str(failure.value) and flag in str(failure.value), failure.value
    assert time.monotonic() - started < 30
    assert stalled.manifest.is_fifo()


def test_a_second_server_on_a_taken_port_fails_at_once(model_repository: Path) -> None:
    """grpc's default SO_REUSEPORT let both bind: two servers on one port, clients split between them."""
    with ServerThread(local_settings(model_repository, metrics_port=-1)) as first:
        started = time.monotonic()
        with pytest.raises(OSError) as failure:
            ServerThread(local_settings(model_repository, port=first.port, metrics_port=-1)).__enter__()
        assert time.monotonic() - started < 10
        assert str(first.port) in str(failure.value) and "--port" in str(failure.value), failure.value
        with Client(f"127.0.0.1:{first.port}", timeout=30) as client:
            assert client.list_models()


def test_a_missing_repository_is_reported_before_the_ports(tmp_path: Path) -> None:
    # The gRPC port is taken too: were it bound first, the port would be the error reported.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        result = CliRunner().invoke(app, ["serve", "--repository", str(tmp_path / "modles"), "--port",
                                          str(holder.getsockname()[1]), "--metrics-port", "-1"])
    said = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 1, said
    assert "modles does not exist" in said and "--repository" in said and "Traceback" not in said, said


def test_sigterm_while_loading_stops_cleanly(stalled: StalledManifest) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tilecast", "serve", "--repository", str(stalled.repository), "--port",
         str(free_port()), "--metrics-port", "-1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # ends with the process, so bounded by its lifetime
            lines.append(line)
            if "listening on" in line:
                break
        assert stalled.hold(), "the server never began reading the manifest"
        process.send_signal(signal.SIGTERM)
        # Nothing writes the pipe: the load never ends, and the server must not wait for it.
        output, _ = process.communicate(timeout=60)
        output = "".join(lines) + output
        assert process.returncode == 0, output
        assert "stopping before the repository finished loading" in output, output
        assert f"model {RGB_MODEL} version 1 was loading: not waiting for it" in output and "stopped" in output
        assert "serving 1 model" not in output and "Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
