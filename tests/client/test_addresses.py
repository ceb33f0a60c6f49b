"""Several --server addresses: host names and IPv6 literals, not only IPv4 literals (localhost:8500,
localhost:8501 used to fail with a bare UNKNOWN error)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import RGB_MODEL, local_settings
from tilecast.cli import app
from tilecast.client.addresses import channel_target, split_address
from tilecast.client.remote import Client
from tilecast.proto.errors import InvalidOption
from tilecast.server.app import ServerThread


@pytest.fixture(scope="module")
def second_server(model_repository: Path) -> Iterator[ServerThread]:
    with ServerThread(local_settings(model_repository)) as running:
        yield running


def test_names_resolve_into_one_list_of_one_family() -> None:
    assert channel_target(["localhost:8500", "127.0.0.2:8501"]) == "ipv4:127.0.0.1:8500,127.0.0.2:8501"
    assert channel_target(["[::1]:8500", "[::1]:8501"]) == "ipv6:[::1]:8500,[::1]:8501"
    assert channel_target(["localhost:8500"]) == "localhost:8500"  # one address: gRPC's own DNS resolver
    assert channel_target(["[::1]:8500"]) == "[::1]:8500"
    assert channel_target(["dns:///localhost:8500"]) == "dns:///localhost:8500"
    assert split_address("[::1]:9") == ("::1", 9)
    assert channel_target(["localhost:1,localhost:2"]) == "ipv4:127.0.0.1:1,127.0.0.1:2"  # one flag, a comma


@pytest.mark.parametrize("addresses", [["localhost"], ["localhost:0"], ["::1"], [":8500"], ["a:b"],
                                       ["127.0.0.1:8500", "[::1]:8501"]])
def test_addresses_that_cannot_work_are_refused_with_what_to_give(addresses: list[str]) -> None:
    with pytest.raises(InvalidOption, match="--server"):
        channel_target(addresses)


def test_tiles_go_to_servers_named_localhost(server: ServerThread, second_server: ServerThread) -> None:
    addresses = [f"localhost:{server.port}", f"localhost:{second_server.port}"]
    tile = np.zeros((64, 64, 3), np.uint8)
    with Client(addresses, timeout=60) as client:
        client.wait_ready(timeout=60)
        for _ in range(4):
            assert client.predict(RGB_MODEL, tile[None])[0].shape == (1, 64, 64, 3)
        replies = list(client.stream(RGB_MODEL, ((i, tile) for i in range(8)), window=4))
    assert sorted(r.id for r in replies) == list(range(8))
    listing = CliRunner().invoke(app, ["models", "-s", ",".join(addresses)])  # as the issue typed it
    assert listing.exit_code == 0 and RGB_MODEL in listing.output, listing.output
