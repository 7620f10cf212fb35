"""The OCPP 1.6J central system: accepts chargers' WebSockets, keeps one connection per charger and
sends chargers requests on the gateway's behalf, each in its own supervised task. Each connection's
OCPP 1.6 handlers are in `drivers.ocpp16_handlers`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader, NegotiationError
from websockets.headers import parse_authorization_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from controller.events import ChargerConnected, ChargerDisconnected
from drivers.fault_log import FaultLog
from drivers.ocpp16_handlers import ChargerLink, peer_address, utc_now
from drivers.ocpp_backend import (
    CallErrorReceived,
    CallFailed,
    CallTimedOut,
    CentralSystemBackend,
    ChargerNotConnected,
)

# The library logs every frame at INFO, id tags included (interfaces.md §8).
logging.getLogger("ocpp").setLevel(logging.WARNING)
logger = logging.getLogger(__name__)
# websockets logs request headers (Basic Auth passwords) and frames at DEBUG, and repeats
# connects and refusals at INFO that this module logs with the charger id.
_ws_logger = logging.getLogger(__name__ + ".websocket")
_ws_logger.setLevel(logging.WARNING)

SUBPROTOCOLS: tuple[str, ...] = ("ocpp1.6",)
DROP_LOG_INTERVAL_S = 60.0
# After sending a Close frame (a keepalive ping timed out, a newer connection replaced this one, the
# gateway stops), how long to wait for the charger's side of the close before dropping the socket. A
# charger that missed its pong is presumed gone: the library's 10 s would only delay the news.
CLOSE_TIMEOUT_S = 1.0

__all__ = ["SUBPROTOCOLS", "CallErrorReceived", "CallTimedOut", "ChargerNotConnected", "OcppServer"]


class OcppServer:
    """WebSocket endpoint for OCPP 1.6J chargers at ws://host:port<path>/<charger id>.

    Every connection is pinged every `ping_interval_s`; one whose pong has not come `ping_timeout_s`
    after its ping is closed and its charger reported disconnected: a half-open link (a cut cable,
    a charger that froze) is noticed within ping_interval_s + ping_timeout_s + CLOSE_TIMEOUT_S.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        backend: CentralSystemBackend,
        *,
        heartbeat_interval_s: int = 300,
        call_timeout_s: float = 30.0,
        max_frame_bytes: int = 65536,
        ping_interval_s: float = 20,
        ping_timeout_s: float = 20,
    ) -> None:
        self._host = host
        self._port = port
        self._prefix = path.rstrip("/") + "/"
        self._backend = backend
        self.heartbeat_interval_s = heartbeat_interval_s
        self.call_timeout_s = call_timeout_s
        self._max_frame_bytes = max_frame_bytes
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._links: dict[str, ChargerLink] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._faults = FaultLog(DROP_LOG_INTERVAL_S)  # (charger, kind): one line a minute
        self.tx_connectors: dict[tuple[str, int], int] = {}  # (charger, transaction) -> connector

    @property
    def port(self) -> int:
        """The port listened on (the real one once `run` is listening, also when 0 was asked)."""
        return self._port

    def connected(self) -> dict[str, str]:
        """Charger id -> negotiated subprotocol, for every open connection."""
        return {charger_id: link.subprotocol for charger_id, link in sorted(self._links.items())}

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve chargers until cancelled; `ready` is set once listening."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            try:
                async with serve(
                    self._serve_connection,
                    self._host,
                    self._port,
                    subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
                    select_subprotocol=_select_subprotocol,
                    process_request=self._process_request,
                    max_size=self._max_frame_bytes,
                    ping_interval=self._ping_interval_s,
                    ping_timeout=self._ping_timeout_s,
                    close_timeout=CLOSE_TIMEOUT_S,
                    logger=_ws_logger,
                ) as server:
                    self._port = next(iter(server.sockets)).getsockname()[1]
                    logger.info("OCPP central system listening on %s:%s%s<charger id>", self._host, self._port, self._prefix)
                    if ready is not None:
                        ready.set()
                    await server.serve_forever()
            finally:
                self._tasks = None

    async def call(self, charger_id: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send an OCPP request (action name, camelCase payload) and return the charger's response payload.

        Raises ChargerNotConnected, CallTimedOut (after call_timeout_s) or CallErrorReceived.
        """
        link = self._links.get(charger_id)
        if link is None:
            raise ChargerNotConnected(f"charger {charger_id} is not connected")
        return await link.request(action, payload)

    # --- handshake ------------------------------------------------------------------------

    def _charger_id(self, request_path: str) -> str | None:
        path = urlsplit(request_path).path
        if not path.startswith(self._prefix):
            return None
        charger_id = unquote(path[len(self._prefix) :])
        if not charger_id or "/" in charger_id:
            return None
        return charger_id

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        peer = peer_address(connection)
        charger_id = self._charger_id(request.path)
        if charger_id is None:
            logger.info("refused a WebSocket from %s: no charger id in path %r", peer, urlsplit(request.path).path[:100])
            return connection.respond(404, "Not Found\n")
        if not self._backend.charger_known(charger_id):
            logger.info("refused charger %s from %s: not a charger of this square", charger_id, peer)
            return connection.respond(404, "Not Found\n")
        password = _basic_auth_password(request.headers, charger_id)
        if not self._backend.charger_password_ok(charger_id, password):
            logger.warning(
                "refused charger %s from %s: %s", charger_id, peer, "no password given" if password is None else "wrong password"
            )
            response = connection.respond(401, "Unauthorized\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="laadplein", charset="UTF-8"'
            return response
        return None

    # --- connections ----------------------------------------------------------------------

    async def _serve_connection(self, connection: ServerConnection) -> None:
        charger_id = self._charger_id(connection.request.path if connection.request else "") or "?"
        link = ChargerLink(charger_id, connection, self)
        old = self._links.get(charger_id)
        self._links[charger_id] = link
        self._backend.record(ChargerConnected(charger_id, link.subprotocol, utc_now(), link.peer))
        if old is not None:
            logger.info(
                "charger %s connected again from %s (%s); closing its older connection from %s",
                charger_id, link.peer, link.subprotocol, old.peer,
            )
            self._spawn(old.close("replaced by a new connection"), f"close-old-{charger_id}")
        else:
            logger.info("charger %s connected from %s (%s)", charger_id, link.peer, link.subprotocol)
        self._spawn(self._set_up(link), f"setup-{charger_id}")
        reason = "gateway shutting down"
        try:
            reason = await link.serve()
        finally:
            link.closed = True
            link.fail_pending()
            if self._links.get(charger_id) is link:
                del self._links[charger_id]
                self._backend.record(ChargerDisconnected(charger_id, utc_now(), reason))
                logger.info("charger %s disconnected from %s: %s", charger_id, link.peer, reason)
            else:
                logger.info("older connection of charger %s from %s ended: %s", charger_id, link.peer, reason)

    def _spawn(self, coro: Any, name: str) -> None:
        if self._tasks is None:
            coro.close()
            return
        self._tasks.create_task(coro, name=name)

    async def _set_up(self, link: ChargerLink) -> None:
        """Ask a charger that just connected for the status of all its connectors."""
        try:
            await link.request("TriggerMessage", {"requestedMessage": "StatusNotification"})
        except ChargerNotConnected:
            logger.info("charger %s went away before it could be asked for its connector status", link.id)
        except CallFailed as exc:
            if self._faults.admit(link.id, "trigger-status", time.monotonic()) is not None:
                logger.warning("charger %s: asking for its connector status failed: %s", link.id, exc)

    def note_malformed(self, charger_id: str, what: str, reason: str) -> None:
        """Log a malformed frame (`what`: dropped or answered), at most once per charger and kind per minute."""
        count = self._faults.admit(charger_id, what, time.monotonic())
        if count is None:
            return
        more = f" ({count} more in the last minute)" if count else ""
        logger.warning("charger %s: %s a malformed frame: %s%s", charger_id, what, reason, more)


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol:
    """The first subprotocol the charger offers that the gateway speaks; refuse (400) when none."""
    for subprotocol in offered:
        if subprotocol in SUBPROTOCOLS:
            return subprotocol
    logger.warning("refused a charger from %s: it offers %s, the gateway speaks %s", peer_address(connection), list(offered) or "no subprotocol", list(SUBPROTOCOLS))
    raise NegotiationError("no supported OCPP subprotocol offered")


def _basic_auth_password(headers: Headers, charger_id: str) -> str | None:
    """The Basic Auth password when the user name is the charger id; otherwise None."""
    header = headers.get("Authorization")
    if header is None:
        return None
    try:
        user, password = parse_authorization_basic(header)
    except (InvalidHeader, ValueError):
        return None
    return password if user == charger_id else None
