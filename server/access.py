"""Who may call what: bearer tokens with roles, and a cap on the calls one client runs at once.

The tokens file (`--auth-tokens`) has one token per line with its role, `infer` or `admin`; a token may
be written as `sha256:<hex>` so that the file holds no secret. `#` starts a comment. A call carries its
token as `authorization: Bearer <token>` metadata. Only the inference services' methods pass through
here (`tilecast.server.boundary`): grpc health and reflection stay open, for probes.

Tokens are kept and compared as SHA-256 digests (`hmac.compare_digest`, against every entry, so the
time taken says nothing of which entry nearly matched), and no message or log line quotes one.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilecast.proto.errors import PermissionDenied, ResourceExhausted, Unauthenticated

ROLES = ("infer", "admin")  # admin may do everything infer may
# The one table of methods that need more than `infer`: KServe's repository extension. Every other
# method of the two inference services (inference, metadata, listing) needs `infer`.
ADMIN_METHODS = frozenset({"RepositoryModelLoad", "RepositoryModelUnload"})
HASH_PREFIX = "sha256:"


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def read_secret(path: Path, flag: str) -> str:
    """A file of secrets, or ValueError naming its flag (never its content)."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag} {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None


def read_tokens(path: Path) -> list[tuple[bytes, str]]:
    """(SHA-256 digest, role) of each token in a tokens file; ValueError naming the line when one is
    malformed (never quoting it: it may hold a token)."""
    entries = []
    for number, line in enumerate(read_secret(path, "--auth-tokens").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2 or parts[1] not in ROLES:
            raise ValueError(f"--auth-tokens {path}, line {number}: give a token and its role ({' or '.join(ROLES)}) "
                             "separated by a space")
        token, role = parts
        if token.startswith(HASH_PREFIX):
            try:
                hashed = bytes.fromhex(token[len(HASH_PREFIX):])
            except ValueError:
                hashed = b""
            if len(hashed) != hashlib.sha256().digest_size:
                raise ValueError(f"--auth-tokens {path}, line {number}: a hashed token is sha256: and 64 hex digits")
            entries.append((hashed, role))
        else:
            entries.append((digest(token), role))
    if not entries:
        raise ValueError(f"--auth-tokens {path} has no tokens: every call would be refused")
    return entries


def bearer_token(metadata: Any) -> str | None:
    """The token of an `authorization: Bearer <token>` metadata entry, if any."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def peer_host(peer: str) -> str:
    """'ipv4:127.0.0.1:5000' -> 'ipv4:127.0.0.1', '[::1]' likewise: a client by its host, not its port."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdecimal() else peer


@dataclass
class Access:
    """The checks every call of the inference services passes before its handler: its token's role
    (when tokens are set) and its client's calls in flight (when `max_calls_per_peer` > 0)."""

    tokens: list[tuple[bytes, str]] = field(default_factory=list)
    max_calls_per_peer: int = 0
    _calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def role_of(self, token: str | None) -> str | None:
        if token is None:
            return None
        given, role = digest(token), None
        for hashed, entry_role in self.tokens:  # every entry compared, in constant time each
            if hmac.compare_digest(hashed, given):
                role = entry_role
        return role

    def enter(self, method: str, context: Any) -> str:
        """Admit a call, returning the key to `leave` with; raises Unauthenticated, PermissionDenied or
        ResourceExhausted."""
        if not self.tokens and not self.max_calls_per_peer:
            return ""  # an open server: nothing to check, nothing to count
        key = peer_host(str(context.peer()))
        if self.tokens:
            token = bearer_token(context.invocation_metadata())
            role = self.role_of(token)
            if role is None:
                raise Unauthenticated(f"{method}: no valid token: send 'authorization: Bearer <token>' metadata "
                                      "(tilecast: --token-file or TILECAST_TOKEN)" if token is None else
                                      f"{method}: the token is not one this server knows")
            if method in ADMIN_METHODS and role != "admin":
                raise PermissionDenied(f"{method} needs a token with the admin role; this one has {role}")
            key = digest(token or "").hex()  # per-client counts follow the token, not the address
        with self._lock:
            if self.max_calls_per_peer and self._calls[key] >= self.max_calls_per_peer:
                raise ResourceExhausted(f"this client already runs {self.max_calls_per_peer} calls, the limit per "
                                        "client (--max-calls-per-peer); retry later")
            self._calls[key] += 1
        return key

    def leave(self, key: str) -> None:
        if not self.tokens and not self.max_calls_per_peer:
            return
        with self._lock:
            self._calls[key] -= 1
            if self._calls[key] <= 0:
                del self._calls[key]
