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
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader, NegotiationError
from websockets.headers import parse_authorization_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from drivers.contract.backend import (
    CallErrorReceived,
    CallFailed,
    CallTimedOut,
    CentralSystemBackend,
    ChargerNotConnected,
)
from drivers.contract.events import ChargerConnected, ChargerDisconnected
from drivers.ocpp.admission import ConnectionGate, LoginPolicy
from drivers.ocpp.context import LinkContext
from drivers.ocpp.gated import GatedConnection
from drivers.ocpp.handlers16 import ChargerLink16
from drivers.ocpp.handlers201 import ChargerLink201
from drivers.ocpp.link import ChargerLink, peer_address, printable, utc_now
from drivers.ocpp.login_guard import LoginGuard, Refusal
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
# A password not seen before costs a scrypt (~40 ms of a core), run in a worker thread so that the
# event loop goes on. At most this many run at once, on the gateway's few cores...
PASSWORD_CHECK_THREADS = 2
# ...and at most this many wait or run; beyond, a login is refused with 429 rather than queued without
# bound (a flood of wrong passwords from many addresses, or a whole square reconnecting after a restart).
MAX_PASSWORD_CHECKS_PENDING = 8
BUSY_RETRY_AFTER_S = 1
# Caps on connections for an OcppServer made without them (the daemon passes the config's).
MAX_HANDSHAKES_PER_HOST = 64
MAX_CONNECTIONS = 1024
# File descriptors the daemon needs beside its chargers' sockets (database, broker, API, logs, threads).
OTHER_FILES = 64
# asyncio accepts up to `backlog` sockets in one turn of the loop, and one closed by a cap is released two
# turns later: a flood holds up to about three times this beyond the caps. The kernel keeps as many
# waiting; a square reconnecting at once beyond that is let in on its chargers' next SYN, within a second.
ACCEPT_BACKLOG = 32

__all__ = [
    "SUBPROTOCOLS", "CallErrorReceived", "CallTimedOut", "ChargerNotConnected", "LoginPolicy", "OcppServer",
    "TlsFileError", "tls_server_context",
]


class OcppServer:
    """WebSocket endpoint for OCPP 1.6J and 2.0.1 chargers at ws://host:port<path>/<charger id>.

    Every connection is pinged every `ping_interval_s`; one whose pong has not come `ping_timeout_s`
    after its ping is closed and its charger reported disconnected: a half-open link (a cut cable,
    a charger that froze) is noticed within ping_interval_s + ping_timeout_s + CLOSE_TIMEOUT_S.

    With `ssl_context` the endpoint is wss:// (a charger with a password is then at security profile 2).
    Failed Basic Auth logins and unknown charger ids are counted by `login_guard`; one that has seen too
    many refuses with 429. A password check that costs a scrypt runs in a worker thread, a few at once
    (429 beyond). `policy` says who needs a password on an exposed endpoint. At most
    `max_handshakes_per_host` connections from one address are in their opening handshake at once, and
    at most `max_connections` are open in all; one more is closed at once (with TLS, counted from the
    end of the TLS handshake, which the library bounds by its open timeout).
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
        policy: LoginPolicy | None = None,
        max_handshakes_per_host: int = MAX_HANDSHAKES_PER_HOST,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._host = host
        self._port = port
        self._prefix = path.rstrip("/") + "/"
        self._backend = backend
        self._context = LinkContext(backend, heartbeat_interval_s, call_timeout_s)
        self._max_frame_bytes = max_frame_bytes
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._ssl = ssl_context
        self._guard = LoginGuard() if login_guard is None else login_guard
        self._policy = LoginPolicy() if policy is None else policy
        self._gate = ConnectionGate(max_handshakes_per_host, max_connections)
        self._check_threads = asyncio.Semaphore(PASSWORD_CHECK_THREADS)
        self._checks_pending = 0
        self._links: dict[str, ChargerLink] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._faults = self._context.faults  # (charger, kind): one line a minute

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

    # --- handshake ------------------------------------------------------------------------

    def _charger_id(self, request_path: str) -> str | None:
        path = urlsplit(request_path).path
        if not path.startswith(self._prefix):
            return None
        charger_id = unquote(path[len(self._prefix) :])
        if not charger_id or "/" in charger_id:
            return None
        return charger_id

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        peer = peer_address(connection)
        host = _peer_host(connection)
        now_s = time.monotonic()
        charger_id = self._charger_id(request.path)
        if charger_id is None:
            logger.info("refused a WebSocket from %s: no charger id in path %r", peer, urlsplit(request.path).path[:100])
            self._count_unknown(host, now_s)
            return connection.respond(404, "Not Found\n")
        known = self._backend.charger_known(charger_id)
        if known and self._backend.charger_password_known(charger_id, None) is True:
            if self._policy.no_password_refused(charger_id):
                self._note_exposed(charger_id, peer, now_s, "it has no password")
                return _unauthorized(connection)
            return None  # no password to guess: nothing to lock out
        # Before the password check: a locked-out attempt must not cost a scrypt.
        refusal = self._guard.refusal(charger_id, host, now_s)
        if refusal is not None:
            self._note_locked_out(charger_id, host, peer, refusal, now_s)
            response = connection.respond(429, "Too Many Requests\n")
            response.headers["Retry-After"] = str(refusal.retry_after_s)
            return response
        if not known:
            logger.info("refused charger %s from %s: not a charger of this square", printable(charger_id[:64]), peer)
            self._count_unknown(host, now_s)
            return connection.respond(404, "Not Found\n")
        user, password = _basic_auth(request.headers)
        if user is not None and user != charger_id:
            password = None  # the user name must be the charger id (OCPP security profile 1)
        ok = await self._password_ok(charger_id, password)
        now_s = time.monotonic()
        if ok is None:
            self._note_busy(charger_id, peer, now_s)
            response = connection.respond(429, "Too Many Requests\n")
            response.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
            return response
        if not ok or password is None:
            if user is None:
                why = "no password given"
            elif user != charger_id:
                why = "no password given for it (the Basic Auth user name is not the charger id)"
            else:
                why = "wrong password"
            logger.warning("refused charger %s from %s: %s", charger_id, peer, why)
            lockout = self._guard.failed(charger_id, host, now_s)
            if lockout is not None:
                self._note_lockout(charger_id, host, lockout)
            return _unauthorized(connection)
        if self._policy.short_password_refused(charger_id, password):
            self._note_exposed(charger_id, peer, now_s, f"its password has {len(password)} characters, "
                               f"fewer than the {self._policy.min_password_chars} it needs there")
            return _unauthorized(connection)
        self._guard.succeeded(charger_id, host, now_s)
        return None

    def _count_unknown(self, host: str, now_s: float) -> None:
        """An attempt without a charger id of this square counts towards its host's lockout."""
        lockout = self._guard.unknown_id(host, now_s)
        if lockout is not None:
            self._note_lockout(None, host, lockout)

    def _note_lockout(self, charger_id: str | None, host: str, lockout: Refusal) -> None:
        """Log the start of a lockout: of one charger id from a host, or of the host."""
        logger.warning(
            "%s: %d failed logins%s within %g s; refusing %s for %d s without checking passwords",
            f"charger {charger_id} from {host}" if lockout.scope == "charger" else f"host {host}",
            lockout.failures, "" if lockout.scope == "charger" else " or unknown charger ids", self._guard.window_s,
            "it" if lockout.scope == "charger" else (
                "every charger id from it but those that logged in from it in the last "
                f"{self._guard.known_good_s / 3600:g} h"
            ),
            lockout.retry_after_s,
        )

    def _note_exposed(self, charger_id: str, peer: str, now_s: float, why: str) -> None:
        """Log a charger refused for want of a (long enough) password on a non-loopback endpoint, once a
        minute per charger: it retries every few seconds, and one line tells the technician what to do."""
        held = self._faults.admit(charger_id, "exposed-without-password", now_s)
        if held is None:
            return
        more = f" ({held} more refused since the last such line)" if held else ""
        logger.warning(
            "refused charger %s from %s: %s, and ocpp.host %s is not loopback; give it a password of %d or more "
            "characters (password in its [[chargers]] entry, or PUT /api/chargers/%s/password, and the same on "
            "the charger) or state insecure = true in its [[chargers]] entry%s",
            charger_id, peer, why, self._host, self._policy.min_password_chars, charger_id, more,
        )

    async def _password_ok(self, charger_id: str, password: str | None) -> bool | None:
        """The backend's password check, a scrypt off the event loop; None when too many checks are pending."""
        known = self._backend.charger_password_known(charger_id, password)
        if known is not None:
            return known
        if self._checks_pending >= MAX_PASSWORD_CHECKS_PENDING:
            return None
        self._checks_pending += 1
        # A task of the server's, shielded: should the handshake time out, the check still holds its
        # place until its thread is done, so that never more than PASSWORD_CHECK_THREADS scrypts run.
        check = self._check_in_thread(charger_id, password)
        if self._tasks is None:
            return await check
        return await asyncio.shield(self._tasks.create_task(check, name=f"password-{charger_id}"))

    async def _check_in_thread(self, charger_id: str, password: str | None) -> bool:
        try:
            async with self._check_threads:
                return await asyncio.to_thread(self._backend.charger_password_ok, charger_id, password)
        finally:
            self._checks_pending -= 1

    def _note_busy(self, charger_id: str, peer: str, now_s: float) -> None:
        """Log a 429 for want of a password-check thread, at most once a minute in all."""
        held = self._faults.admit("*", "password-checks-busy", now_s)
        if held is None:
            return
        more = f" ({held} more refused since the last such line)" if held else ""
        logger.warning(
            "refused charger %s from %s with 429: %d password checks already running or waiting%s",
            printable(charger_id[:64]), peer, self._checks_pending, more,
        )

    def _note_locked_out(self, charger_id: str, host: str, peer: str, refusal: Refusal, now_s: float) -> None:
        """Log a 429, at most once a minute per charger and host (per host for a host's lockout)."""
        source = f"{charger_id}@{host}" if refusal.scope == "charger" else host
        held = self._faults.admit(source, f"locked-out-{refusal.scope}", now_s)
        if held is None:
            return
        what = f"{refusal.failures} failed logins of it from {host}" if refusal.scope == "charger" else (
            f"{refusal.failures} failed logins from {host} for any charger id"
        )
        more = f" ({held} more refused since the last such line)" if held else ""
        logger.warning(
            "refused charger %s from %s with 429 for another %d s after %s%s",
            printable(charger_id[:64]), peer, refusal.retry_after_s, what, more,
        )

    # --- connections ----------------------------------------------------------------------

    def _new_connection(self, *args: Any, **kwargs: Any) -> ServerConnection:
        """The library's connection for a socket just accepted, counted by the gate."""
        return GatedConnection(self._gate, self._faults, logger, *args, **kwargs)

    async def _serve_connection(self, connection: ServerConnection) -> None:
        if isinstance(connection, GatedConnection):
            connection.handshake_done()
        charger_id = self._charger_id(connection.request.path if connection.request else "") or "?"
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

    async def _set_up(self, link: ChargerLink) -> None:
        """Ask a charger that just connected for the status of all its connectors."""
        try:
            await link.ask_status()
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


def _unauthorized(connection: ServerConnection) -> Response:
    response = connection.respond(401, "Unauthorized\n")
    response.headers["WWW-Authenticate"] = 'Basic realm="laadplein", charset="UTF-8"'
    return response


def _basic_auth(headers: Headers) -> tuple[str | None, str | None]:
    """The Basic Auth user name and password, or (None, None) without a readable Authorization header."""
    header = headers.get("Authorization")
    if header is None:
        return None, None
    try:
        return parse_authorization_basic(header)
    except (InvalidHeader, ValueError):
        return None, None


def _peer_host(connection: ServerConnection) -> str:
    """The far end's address without its port: failed logins are counted per host."""
    address = connection.remote_address
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address or "?")
