"""The OCPP endpoint's door: who may open a connection, decided on the HTTP request before the WebSocket
opens. The charger id in the path, the exposure rules (`drivers.ocpp.admission`), Basic Auth with its
password checks off the event loop, and the failed-login lockout (`drivers.ocpp.login_guard`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader
from websockets.headers import parse_authorization_basic
from websockets.http11 import Request, Response

from drivers.contract.backend import CentralSystemBackend
from drivers.contract.text import printable
from drivers.ocpp.admission import LoginPolicy
from drivers.ocpp.link import peer_address
from drivers.ocpp.login_guard import LoginGuard, Refusal
from drivers.support.fault_log import FaultLog

__all__ = ["BUSY_RETRY_AFTER_S", "MAX_PASSWORD_CHECKS_PENDING", "PASSWORD_CHECK_THREADS", "Doorkeeper"]

logger = logging.getLogger("laadplein.ocpp")

# A password not seen before costs a scrypt (~40 ms of a core), run in a worker thread so that the
# event loop goes on. At most this many run at once, on the gateway's few cores...
PASSWORD_CHECK_THREADS = 2
# ...and at most this many wait or run; beyond, a login is refused with 429 rather than queued without
# bound (a flood of wrong passwords from many addresses, or a whole square reconnecting after a restart).
MAX_PASSWORD_CHECKS_PENDING = 8
BUSY_RETRY_AFTER_S = 1

Spawn = Callable[[Coroutine[Any, Any, bool], str], "asyncio.Task[bool] | None"]


class Doorkeeper:
    """Decides each handshake of the endpoint at `host` whose chargers connect under `prefix` (ending in "/").

    Failed Basic Auth logins and unknown charger ids are counted by `guard`; one that has seen too many
    is refused with 429. A password check that costs a scrypt runs in a worker thread, a few at once
    (429 beyond), as a task made by `spawn` (None: awaited in place). `policy` says who needs a password.
    Repeated refusals are logged through `faults`, one line a minute.
    """

    def __init__(
        self,
        host: str,
        prefix: str,
        backend: CentralSystemBackend,
        guard: LoginGuard,
        policy: LoginPolicy,
        faults: FaultLog,
        spawn: Spawn,
    ) -> None:
        self._host = host
        self._prefix = prefix
        self._backend = backend
        self._guard = guard
        self._policy = policy
        self._faults = faults
        self._spawn = spawn
        self._check_threads = asyncio.Semaphore(PASSWORD_CHECK_THREADS)
        self._checks_pending = 0

    def check_passwords(self) -> None:
        """Name at start every charger of the config that will be refused for want of a password."""
        refused = [
            charger_id for charger_id in sorted(self._policy.configured)
            if self._policy.no_password_refused(charger_id)
            and self._backend.charger_password_known(charger_id, None) is True
        ]
        if refused:
            logger.warning(
                "ocpp.host %s is not loopback, and %d charger(s) have no password: %s; each will be refused until "
                "it has one (password in its [[chargers]] entry or PUT /api/chargers/<id>/password) or its entry "
                "says insecure = true", self._host, len(refused), ", ".join(refused),
            )

    def charger_id(self, request_path: str) -> str | None:
        """The charger id in a request path under the endpoint's path, or None when there is none."""
        path = urlsplit(request_path).path
        if not path.startswith(self._prefix):
            return None
        charger_id = unquote(path[len(self._prefix) :])
        if not charger_id or "/" in charger_id:
            return None
        return charger_id

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The library's process_request: None lets the charger in, a Response refuses it."""
        peer = peer_address(connection)
        host = _peer_host(connection)
        now_s = time.monotonic()
        charger_id = self.charger_id(request.path)
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
            logger.info("refused charger %s from %s: not a charger of this square", printable(charger_id, 64), peer)
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
        task = self._spawn(check, f"password-{charger_id}")
        return await (check if task is None else asyncio.shield(task))

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
            printable(charger_id, 64), peer, self._checks_pending, more,
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
            printable(charger_id, 64), peer, refusal.retry_after_s, what, more,
        )


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
