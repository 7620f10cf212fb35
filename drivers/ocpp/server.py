"""The OCPP central system (1.6J and 2.0.1 on one endpoint): accepts chargers' WebSockets, keeps one
connection per charger and sends chargers requests on the gateway's behalf, each in its own
supervised task. Each version's handlers are in `drivers.ocpp.handlers16` and `drivers.ocpp.handlers201`.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections.abc import Coroutine, Sequence
from typing import Any, cast

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import NegotiationError
from websockets.typing import Subprotocol

from drivers.contract.backend import (
    CallErrorReceived,
    CallFailed,
    CallTimedOut,
    CentralSystemBackend,
    ChargerNotConnected,
)
from drivers.contract.events import ChargerConnected, ChargerDisconnected
from drivers.ocpp import message_limits
from drivers.ocpp.admission import ConnectionGate, LoginPolicy
from drivers.ocpp.context import LinkContext
from drivers.ocpp.gated import GatedConnection
from drivers.ocpp.handlers16 import ChargerLink16
from drivers.ocpp.handlers201 import ChargerLink201
from drivers.ocpp.handshake import (
    MAX_PASSWORD_CHECKS_PENDING,
    PASSWORD_CHECK_THREADS,
    Doorkeeper,
)
from drivers.ocpp.link import ChargerLink, peer_address, utc_now
from drivers.ocpp.login_guard import LoginGuard
from drivers.ocpp.pacing import FrameLimits
from drivers.ocpp.tls import TlsFileError, tls_server_context

# The library logs every frame at INFO, id tags included (interfaces.md §8).
logging.getLogger("ocpp").setLevel(logging.WARNING)
logger = logging.getLogger("laadplein.ocpp")
# websockets logs request headers (Basic Auth passwords) and frames at DEBUG, and repeats
# connects and refusals at INFO that this module logs with the charger id.
_ws_logger = logging.getLogger("laadplein.ocpp.websocket")
_ws_logger.setLevel(logging.WARNING)

SUBPROTOCOLS: tuple[str, ...] = ("ocpp1.6", "ocpp2.0.1")
LINKS: dict[str, type[ChargerLink]] = {"ocpp1.6": ChargerLink16, "ocpp2.0.1": ChargerLink201}
# After sending a Close frame (a keepalive ping timed out, a newer connection replaced this one, the
# gateway stops), how long to wait for the charger's side of the close before dropping the socket. A
# charger that missed its pong is presumed gone: the library's 10 s would only delay the news.
CLOSE_TIMEOUT_S = 1.0
# Caps on connections for an OcppServer made without them (the daemon passes the config's).
STATUS_GRACE_S = 5.0
"""A connector a charger has not reported this long after it connected is asked for its status."""
MAX_HANDSHAKES_PER_HOST = 64
MAX_CONNECTIONS = 1024
# File descriptors the daemon needs beside its chargers' sockets (database, broker, API, logs, threads).
OTHER_FILES = 64
# asyncio accepts up to `backlog` sockets in one turn of the loop, and one closed by a cap is released two
# turns later: a flood holds up to about three times this beyond the caps. The kernel keeps as many
# waiting; a square reconnecting at once beyond that is let in on its chargers' next SYN, within a second.
ACCEPT_BACKLOG = 32

__all__ = [
    "MAX_PASSWORD_CHECKS_PENDING", "PASSWORD_CHECK_THREADS", "SUBPROTOCOLS", "CallErrorReceived", "CallTimedOut",
    "ChargerNotConnected", "LoginPolicy", "OcppServer", "TlsFileError", "tls_server_context",
]


class OcppServer:
    """WebSocket endpoint for OCPP 1.6J and 2.0.1 chargers at ws://host:port<path>/<charger id>.

    Every connection is pinged every `ping_interval_s`; one whose pong has not come `ping_timeout_s`
    after its ping is closed and its charger reported disconnected: a half-open link (a cut cable,
    a charger that froze) is noticed within ping_interval_s + ping_timeout_s + CLOSE_TIMEOUT_S.

    With `ssl_context` the endpoint is wss:// (a charger with a password is then at security profile 2).
    Who may connect is decided by a `Doorkeeper` (`drivers.ocpp.handshake`) with `login_guard` and
    `policy`: who needs a password on an exposed endpoint, lockouts, password checks off the loop. At most
    `max_handshakes_per_host` connections from one address are in their opening handshake at once, and
    at most `max_connections` are open in all; one more is closed at once (with TLS, counted from the
    end of the TLS handshake, which the library bounds by its open timeout).
    Each charger's messages per second and meter readings per frame are capped by `frame_limits`
    (`drivers.ocpp.pacing`).
    With `own_calls` False the gateway sends a charger no request of its own to read its per-message
    limits (`drivers.ocpp.message_limits`); they are then learned only from answers.
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
        ssl_context: ssl.SSLContext | None = None,
        login_guard: LoginGuard | None = None,
        frame_limits: FrameLimits | None = None,
        policy: LoginPolicy | None = None,
        max_handshakes_per_host: int = MAX_HANDSHAKES_PER_HOST,
        max_connections: int = MAX_CONNECTIONS,
        own_calls: bool = True,
    ) -> None:
        self._host = host
        self._port = port
        self._prefix = path.rstrip("/") + "/"
        self._backend = backend
        self._context = LinkContext(
            backend, heartbeat_interval_s, call_timeout_s, limits=frame_limits or FrameLimits(), own_calls=own_calls,
        )
        self._max_frame_bytes = max_frame_bytes
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._ssl = ssl_context
        self._gate = ConnectionGate(max_handshakes_per_host, max_connections)
        self._links: dict[str, ChargerLink] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._faults = self._context.faults  # (charger, kind): one line a minute
        self._door = Doorkeeper(
            host, self._prefix, backend, LoginGuard() if login_guard is None else login_guard,
            LoginPolicy() if policy is None else policy, self._faults, self._task,
        )

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
                    process_request=self._door.process_request,
                    max_size=self._max_frame_bytes,
                    ping_interval=self._ping_interval_s,
                    ping_timeout=self._ping_timeout_s,
                    close_timeout=CLOSE_TIMEOUT_S,
                    logger=_ws_logger,
                    ssl=self._ssl,
                    create_connection=self._new_connection,
                    backlog=ACCEPT_BACKLOG,
                ) as server:
                    self._port = next(iter(server.sockets)).getsockname()[1]
                    logger.info(
                        "OCPP central system listening on %s://%s:%s%s<charger id>",
                        "ws" if self._ssl is None else "wss", self._host, self._port, self._prefix,
                    )
                    self._check_file_limit()
                    self._door.check_passwords()
                    if ready is not None:
                        ready.set()
                    await server.serve_forever()
            finally:
                self._tasks = None

    def _check_file_limit(self) -> None:
        """Warn when the connection cap would let a flood use up the process's file descriptors."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        room = soft - OTHER_FILES - 3 * ACCEPT_BACKLOG
        if soft != resource.RLIM_INFINITY and self._gate.max_connections > room:
            logger.warning(
                "ocpp.max_connections is %d, and the gateway's open-file limit %d leaves room for about %d "
                "sockets: a flood could use up the files the API and the database need; lower "
                "max_connections or raise the limit (LimitNOFILE in the service unit)",
                self._gate.max_connections, soft, max(0, room),
            )

    async def call(self, charger_id: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send an OCPP request (action name, camelCase payload) and return the charger's response payload.

        Raises ChargerNotConnected, CallTimedOut (after call_timeout_s) or CallErrorReceived.
        """
        link = self._links.get(charger_id)
        if link is None:
            raise ChargerNotConnected(f"charger {charger_id} is not connected")
        return await link.request(action, payload)

    def tell_limits(self, charger_id: str, limits: dict[str, dict[str, object]]) -> None:
        """The operator's word on a charger's per-message limits (`drivers.ocpp.message_limits.told_limits`,
        ValueError when it does not read); they hold from its next request on, on every connection."""
        self._context.told_limits[charger_id] = message_limits.told_limits(limits)

    # --- connections ----------------------------------------------------------------------

    def _new_connection(self, *args: Any, **kwargs: Any) -> ServerConnection:
        """The library's connection for a socket just accepted, counted by the gate."""
        return GatedConnection(self._gate, self._faults, logger, *args, **kwargs)

    async def _serve_connection(self, connection: ServerConnection) -> None:
        cast(GatedConnection, connection).handshake_done()  # _new_connection makes every connection one
        charger_id = self._door.charger_id(connection.request.path if connection.request else "") or "?"
        link = LINKS[str(connection.subprotocol)](charger_id, connection, self._context)
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

    def _task(self, coro: Coroutine[Any, Any, bool], name: str) -> asyncio.Task[bool] | None:
        """A task of the server's for the doorkeeper's password checks; None when not running (unlike
        `_spawn`, the coroutine is left to the caller, who then awaits it in place)."""
        return None if self._tasks is None else self._tasks.create_task(coro, name=name)

    async def _set_up(self, link: ChargerLink) -> None:
        """Ask a charger that just connected for the status of each connector it has not reported
        within STATUS_GRACE_S of the connect (a charger that boots reports them all by itself)."""
        if not self._context.own_calls:  # conformance mode: no status triggers of its own
            return
        await asyncio.sleep(STATUS_GRACE_S)
        if link.closed:
            return
        try:
            await link.ask_status(link.unheard())
        except ChargerNotConnected:
            logger.info("charger %s went away before it could be asked for its connector status", link.id)
        except CallFailed as exc:
            if self._faults.admit(link.id, "trigger-status", time.monotonic()) is not None:
                logger.warning("charger %s: asking for its connector status failed: %s", link.id, exc)



def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol:
    """The first subprotocol the charger offers that the gateway speaks; refuse (400) when none."""
    for subprotocol in offered:
        if subprotocol in SUBPROTOCOLS:
            return subprotocol
    logger.warning("refused a charger from %s: it offers %s, the gateway speaks %s", peer_address(connection), list(offered) or "no subprotocol", list(SUBPROTOCOLS))
    raise NegotiationError("no supported OCPP subprotocol offered")
