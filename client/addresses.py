"""`--server` addresses into one gRPC channel target.

One address goes to gRPC as given (its own DNS resolver handles names, IPv6 literals and schemes). Several
become one `ipv4:` or `ipv6:` target list, which gRPC's round_robin policy spreads tiles over; such lists
take literals only, so host names are resolved here, each to every address it has in the family chosen.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from tilecast.proto.errors import InvalidOption, Unavailable

SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")
Endpoint = tuple[str, int]  # (host as given, port)


def split_address(address: str) -> Endpoint:
    """'host:port' or '[v6]:port' -> (host, port); refuses anything else with what to give."""
    host, sep, port = address.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        sep = ""  # a bare IPv6 literal: its colons are not a port separator
    if not sep or not host or not port.isdecimal() or not 0 < int(port) < 65536:
        raise InvalidOption("--server", address, "give host:port, e.g. localhost:8500, 10.0.0.5:8500 or "
                                                 "[::1]:8500")
    return host, int(port)


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(host: str, port: int) -> dict[int, list[str]]:
    """The addresses a host has, by family (AF_INET, AF_INET6), in the resolver's order."""
    literal = _literal(host)
    if literal is not None:
        return {socket.AF_INET if literal.version == 4 else socket.AF_INET6: [str(literal)]}
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Unavailable(f"--server {host}:{port}: the name {host!r} does not resolve ({exc.strerror})") from None
    families: dict[int, list[str]] = {}
    for family, _, _, _, sockaddr in found:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in families.get(family, []):
            families.setdefault(family, []).append(str(sockaddr[0]))
    return families


def server_list(addresses: Sequence[str]) -> list[str]:
    """Each address once, with comma-separated ones split (`--server a:1,b:2`, TILECAST_SERVER=a:1,b:2);
    a target with a scheme (`ipv4:a:1,b:2`) is kept whole."""
    found: list[str] = []
    for given in addresses:
        found += [given] if given.startswith(SCHEMES) else [a.strip() for a in given.split(",") if a.strip()]
    return list(dict.fromkeys(found))


def channel_target(addresses: Sequence[str]) -> str:
    """The gRPC target for one or several `--server` addresses (see the module docstring)."""
    addresses = server_list(addresses)
    if not addresses:
        raise InvalidOption("--server", "", "give at least one host:port")
    if len(addresses) == 1:
        address = addresses[0]
        return address if address.startswith(SCHEMES) else "{}:{}".format(*_bracketed(split_address(address)))
    endpoints = [split_address(a) for a in addresses]
    resolved = [(_resolve(host, port), port) for host, port in endpoints]
    # One list takes one family: IPv4 when every server has an IPv4 address (localhost does), else IPv6.
    for family, scheme in ((socket.AF_INET, "ipv4:"), (socket.AF_INET6, "ipv6:")):
        if all(family in families for families, _ in resolved):
            hosts = [_bracketed((ip, port)) for families, port in resolved for ip in families[family]]
            return scheme + ",".join(dict.fromkeys(f"{h}:{p}" for h, p in hosts))
    raise InvalidOption("--server", ",".join(addresses),
                        "several servers must all have IPv4 addresses or all IPv6 ones; give them alike")


def _bracketed(endpoint: Endpoint) -> Endpoint:
    host, port = endpoint
    literal = _literal(host)
    return (f"[{host}]" if literal is not None and literal.version == 6 else host), port
