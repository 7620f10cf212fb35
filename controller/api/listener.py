"""How the admin API listens: its TLS context, and a cap on open connections (one over it gets a 503).

Each connection costs a file descriptor; without a cap, a client that opens connections and
never finishes them takes every descriptor the daemon has, and with them the chargers' sockets.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import time
import weakref
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("laadplein.api")

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
_WARN_EVERY_S = 60.0
_COLLECT_EVERY_S = 1.0


class TlsSetupError(Exception):
    """The API's certificate or key cannot be used; the message names the file."""


def tls_context(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """The admin API's TLS context (TLS 1.2 or newer), or None when no certificate is configured."""
    if cert_file is None or key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file, password=lambda: _no_password(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"api.cert_file {cert_file} / api.key_file {key_file}: cannot be used ({exc})") from None
    return context


def _no_password(key_file: Path) -> str:
    # Never prompt on the terminal for an encrypted key's password (a daemon would hang there): fail.
    raise TlsSetupError(f"api.key_file {key_file}: the key needs a password; give the daemon an unencrypted key")


class CappedListener:
    """A protocol factory for `loop.create_server`: the `serve` protocol while fewer than `cap` are open."""

    def __init__(self, serve: Callable[[], asyncio.BaseProtocol], cap: int) -> None:
        self._serve = serve
        self.cap = cap
        self.open = 0
        self.refused = 0
        self._warned_at = -_WARN_EVERY_S
        self._collected_at = -_COLLECT_EVERY_S

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open >= self.cap and time.monotonic() - self._collected_at >= _COLLECT_EVERY_S:
            # A connection whose TLS handshake failed is never told to the served protocol: its slot
            # comes back when the protocol is freed, which its reference cycles leave to the garbage
            # collector. At the cap, collect (at most once a second) before refusing anyone.
            self._collected_at = time.monotonic()
            gc.collect()
        if self.open >= self.cap:
            self.refused += 1
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = now
                log.warning("admin API: %d connections open, the most allowed (api.max_connections); "
                            "refusing more (%d refused so far)", self.open, self.refused)
            return _Busy()
        self.open += 1
        return _Counted(self._serve(), self._closed)

    def _closed(self) -> None:
        self.open -= 1


class _Busy(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class _Counted(asyncio.Protocol):
    """The served protocol, passed every call, telling the listener when its connection is gone."""

    def __init__(self, inner: asyncio.BaseProtocol, closed: Callable[[], None]) -> None:
        self._inner = inner
        # Called once: at connection_lost, or when dropped without one (a TLS handshake that failed
        # never reaches this protocol's connection_made nor its connection_lost).
        self._closed = weakref.finalize(self, closed)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[attr-defined]

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self._closed()
