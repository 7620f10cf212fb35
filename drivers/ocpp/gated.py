"""The WebSocket library's server connection with the endpoint's caps: a socket over a cap is closed as soon
as it is accepted, and a handshake that fails (garbage, a socket closed half-way) is one line a minute per
address instead of a traceback per socket."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidHandshake, NegotiationError

from drivers.ocpp.admission import ConnectionGate
from drivers.support.fault_log import FaultLog

__all__ = ["GatedConnection"]


class GatedConnection(ServerConnection):
    """A connection that asks `gate` when its socket is accepted and tells it when its handshake is done and
    when the socket is gone. One over a cap never reaches the library's handshake: no task, no timer, and
    its file descriptor is released at once."""

    def __init__(self, gate: ConnectionGate, faults: FaultLog, logger: logging.Logger, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate
        self._faults = faults
        self._log = logger
        self._host = "?"  # the peer's address, once accepted
        self._counted = False  # while the gate counts this connection
        self._handshaking = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = self._host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "?")
        verdict = self._gate.admit(host)
        if verdict != "ok":
            # Only what connection_lost needs: the server never hears of this connection.
            Connection.connection_made(self, transport)
            transport.abort()
            self._note_capped(host, verdict)
            return
        self._counted = self._handshaking = True
        super().connection_made(transport)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().handshake(*args, **kwargs)
        except NegotiationError:
            pass  # no common subprotocol: answered with 400 and logged by the server's select_subprotocol
        except (InvalidHandshake, EOFError, ConnectionError) as exc:
            # Not OPEN: the library closes the socket. A bug of ours is none of these, and keeps its traceback.
            self._note_failed(exc)

    def handshake_done(self) -> None:
        """The opening handshake succeeded: the connection no longer counts against its host's handshakes."""
        if self._counted and self._handshaking:
            self._handshaking = False
            self._gate.handshake_done(self._host)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._counted:
            self._gate.closed(self._host, handshaking=self._handshaking)
            self._counted = self._handshaking = False

    def _note_capped(self, host: str, cap: str) -> None:
        """Once a minute per host (per cap for the total): a new connection closed at once by a cap."""
        held = self._faults.admit(host if cap == "host" else "*", f"capped-{cap}", time.monotonic())
        if held is None:
            return
        more = f" ({held} more closed since the last such line)" if held else ""
        if cap == "host":
            self._log.warning(
                "closed a new connection from %s at once: %d connections from it are still in their opening "
                "handshake (ocpp.max_handshakes_per_host)%s", host, self._gate.max_handshakes_per_host, more,
            )
        else:
            self._log.warning(
                "closed a new connection from %s at once: %d OCPP connections are open (ocpp.max_connections)%s",
                host, self._gate.max_connections, more,
            )

    def _note_failed(self, exc: BaseException) -> None:
        """Once a minute per host: a connection that sent no valid WebSocket handshake (a scanner, a flood)."""
        host = self._host
        held = self._faults.admit(host, "handshake-failed", time.monotonic())
        if held is None:
            return
        cause = exc.__cause__ or exc
        more = f" ({held} more since the last such line)" if held else ""
        self._log.info("a connection from %s ended without a valid WebSocket handshake: %s%s",
                       host, str(cause)[:200] or type(cause).__name__, more)
