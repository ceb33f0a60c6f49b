"""TLS for the gRPC port (both protocols share it): a certificate and key, and with a client CA, mutual
TLS (a client without a certificate that CA signed is refused in the handshake).

The files are read again when they change: grpc asks `CertificateFiles.fetch` at each new handshake,
and a new configuration is used for connections made from then on, so rotating a certificate needs no
restart and drops no stream (connections already open keep theirs).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


@dataclass
class CertificateFiles:
    cert: Path
    key: Path
    client_ca: Path | None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seen = self._stamps()

    def _paths(self) -> list[Path]:
        return [self.cert, self.key] + ([self.client_ca] if self.client_ca else [])

    def _stamps(self) -> list[tuple[int, int]]:
        stamps = []
        for path in self._paths():
            try:
                info = os.stat(path)
            except OSError:
                return []
            stamps.append((info.st_mtime_ns, info.st_size))
        return stamps

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        """The files as grpc takes them; OSError naming the flag when one cannot be read."""
        def read(path: Path, flag: str) -> bytes:
            try:
                return path.read_bytes()
            except OSError as exc:
                raise OSError(f"{flag} {path}: cannot read it ({exc.strerror})") from exc
        pair = (read(self.key, "--tls-key"), read(self.cert, "--tls-cert"))
        ca = read(self.client_ca, "--tls-client-ca") if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when a file changed since the last one, else None (keep the current)."""
        with self._lock:
            stamps = self._stamps()
            if not stamps or stamps == self._seen:
                return None
            try:
                config = self.configuration()
            except OSError as exc:  # half-written during a rotation: keep serving the old one
                log.warning("certificates changed but cannot be read yet: %s", exc)
                return None
            self._seen = stamps
            log.info("certificates reloaded from %s", self.cert)
            return config


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """Credentials that serve `cert` (reloaded when its files change), asking for a client certificate
    signed by `client_ca` when one is given."""
    files = CertificateFiles(cert, key, client_ca)
    return grpc.dynamic_ssl_server_credentials(files.configuration(), files.fetch,
                                               require_client_authentication=client_ca is not None)
