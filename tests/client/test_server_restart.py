"""A server restarted in the middle of a conversion: the client resends what was lost, the output is whole."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tifffile

from tests.conftest import RGB_MODEL
from tilecast.client import Client, ConvertOptions, convert_image
from tilecast.client.resilient import RetryPolicy
from tilecast.local import free_port, serve_command


def test_conversion_survives_a_server_restart(tmp_path: Path, model_repository: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (1024, 768, 3), dtype=np.uint8)
    source, target = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, image, tile=(256, 256), photometric="rgb")
    port = free_port()
    command = serve_command(model_repository, port)
    servers = [subprocess.Popen(command)]
    restarted = threading.Event()

    def restart_once(done: int, total: int) -> None:
        if done == 3 and not restarted.is_set():
            restarted.set()
            servers[0].kill()  # no graceful drain: tiles in flight are lost
            servers[0].wait()
            servers.append(subprocess.Popen(command))

    try:
        with Client(f"127.0.0.1:{port}") as client:
            client.wait_ready(timeout=60)
            options = ConvertOptions(tile_size=256, window=4, retry=RetryPolicy(attempts=8, first_backoff_s=0.2,
                                                                                reconnect_timeout_s=60))
            convert_image(client, RGB_MODEL, source, target, options, progress=restart_once)
    finally:
        for server in servers:
            server.kill()
            server.wait()
    assert restarted.is_set()
    session = ort.InferenceSession(str(model_repository / RGB_MODEL / "1" / "model.onnx"))
    expected = session.run(None, {"image": image[None]})[0][0]
    np.testing.assert_array_equal(tifffile.imread(target), expected)
