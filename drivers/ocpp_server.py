"""The OCPP 1.6J central system: accepts chargers' WebSockets, answers their requests through
the backend, and sends them requests on the gateway's behalf.

Handlers record and answer; every request to a charger runs in its own supervised task (a
request awaited inside a handler would deadlock that charger's connection).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.datatypes import IdTagInfo
from ocpp.v16.enums import Action, RegistrationStatus
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHeader, NegotiationError
from websockets.headers import parse_authorization_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from controller.events import (
    ChargerBooted,
    ChargerConnected,
    ChargerDisconnected,
    ChargerHeard,
    ConnectorStatusChanged,
)
from drivers.ocpp_backend import (
    CallErrorReceived,
    CallFailed,
    CallTimedOut,
    CentralSystemBackend,
    ChargerNotConnected,
)
from drivers.ocpp_frames import (
    CALL,
    CALLERROR,
    call_error_frame,
    check_frame,
    format_time,
    parse_meter_values,
    parse_time,
    schema_error_code,
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

__all__ = ["OcppServer", "SUBPROTOCOLS", "CallErrorReceived", "CallTimedOut", "ChargerNotConnected"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "?")


def _describe_close(exc: ConnectionClosed) -> str:
    """A few words on why a connection ended, for the log and ChargerDisconnected."""
    rcvd, sent = exc.rcvd, exc.sent
    if rcvd is None and sent is None:
        return "connection lost (no close frame)"
    by_charger = rcvd is not None and (sent is None or bool(exc.rcvd_then_sent))
    frame = rcvd if by_charger else sent
    assert frame is not None
    if frame.code == 1009:
        return f"frame too big ({frame.code})"
    reason = f": {frame.reason}" if frame.reason else ""
    return f"closed by the {'charger' if by_charger else 'gateway'} ({frame.code}{reason})"


class OcppServer:
    """WebSocket endpoint for OCPP 1.6J chargers at ws://host:port<path>/<charger id>."""

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
        self._links: dict[str, _ChargerLink] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._malformed: dict[tuple[str, str], tuple[float, int]] = {}  # (charger, what) -> (last logged, count since)
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
        peer = _peer(connection)
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
        link = _ChargerLink(charger_id, connection, self)
        old = self._links.get(charger_id)
        self._links[charger_id] = link
        self._backend.record(ChargerConnected(charger_id, link.subprotocol, _now(), link.peer))
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
                self._backend.record(ChargerDisconnected(charger_id, _now(), reason))
                logger.info("charger %s disconnected from %s: %s", charger_id, link.peer, reason)
            else:
                logger.info("older connection of charger %s from %s ended: %s", charger_id, link.peer, reason)

    def _spawn(self, coro: Any, name: str) -> None:
        if self._tasks is None:
            coro.close()
            return
        self._tasks.create_task(coro, name=name)

    async def _set_up(self, link: _ChargerLink) -> None:
        """Ask a charger that just connected for the status of all its connectors."""
        try:
            await link.request("TriggerMessage", {"requestedMessage": "StatusNotification"})
        except ChargerNotConnected:
            logger.info("charger %s went away before it could be asked for its connector status", link.id)
        except CallFailed as exc:
            logger.warning("charger %s: asking for its connector status failed: %s", link.id, exc)

    def note_malformed(self, charger_id: str, what: str, reason: str) -> None:
        """Log a malformed frame (`what`: dropped or answered), at most once per charger and kind per minute."""
        now = time.monotonic()
        key = (charger_id, what)
        last, count = self._malformed.get(key, (-DROP_LOG_INTERVAL_S, 0))
        if now - last < DROP_LOG_INTERVAL_S:
            self._malformed[key] = (last, count + 1)
            return
        more = f" ({count} more in the last minute)" if count else ""
        logger.warning("charger %s: %s a malformed frame: %s%s", charger_id, what, reason, more)
        self._malformed[key] = (now, 0)


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol:
    """The first subprotocol the charger offers that the gateway speaks; refuse (400) when none."""
    for subprotocol in offered:
        if subprotocol in SUBPROTOCOLS:
            return subprotocol
    logger.warning("refused a charger from %s: it offers %s, the gateway speaks %s", _peer(connection), list(offered) or "no subprotocol", list(SUBPROTOCOLS))
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


class _ChargerLink(ChargePoint):
    """One charger's open connection: reads its frames, answers its requests, carries ours."""

    def __init__(self, charger_id: str, connection: ServerConnection, server: OcppServer) -> None:
        super().__init__(charger_id, connection, response_timeout=server.call_timeout_s)
        self._server = server
        self._backend = server._backend
        self.subprotocol = str(connection.subprotocol or "")
        self.peer = _peer(connection)
        self.closed = False
        self._pending: dict[str, asyncio.Future[list[Any]]] = {}

    async def serve(self) -> str:
        """Handle frames until the connection ends; return why it ended."""
        connection: ServerConnection = self._connection
        try:
            while True:
                raw = await connection.recv()
                self._backend.record(ChargerHeard(self.id, _now()))
                try:
                    await self._handle_frame(raw)
                except ConnectionClosed:
                    raise
                except Exception:
                    logger.exception("charger %s: failed to handle a frame; the connection stays up", self.id)
        except ConnectionClosed as exc:
            return _describe_close(exc)

    async def close(self, reason: str) -> None:
        """Close this connection (code 1000) and fail the requests waiting on it."""
        self.closed = True
        self.fail_pending()
        try:
            await self._connection.close(1000, reason)
        except Exception:  # a dead link is as good as a closed one
            logger.warning("charger %s: closing the connection from %s failed", self.id, self.peer, exc_info=True)

    def fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ChargerNotConnected(f"connection of charger {self.id} closed"))

    async def request(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a CALL and wait for its answer (see OcppServer.call)."""
        unique_id = str(uuid.uuid4())
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._server.call_timeout_s):
                async with self._call_lock:  # OCPP-J: one request in flight per direction
                    if self.closed:
                        raise ChargerNotConnected(f"charger {self.id} is not connected")
                    self._pending[unique_id] = future
                    await self._send(Call(unique_id, action, payload).to_json())
                    answer = await future
        except TimeoutError:
            raise CallTimedOut(f"charger {self.id} did not answer {action} within {self._server.call_timeout_s} s") from None
        except ConnectionClosed:
            raise ChargerNotConnected(f"connection of charger {self.id} closed") from None
        finally:
            self._pending.pop(unique_id, None)
        if answer[0] == CALLERROR:
            raise CallErrorReceived(answer[2], answer[3], answer[4])
        return answer[2]

    async def _send(self, message: str) -> None:
        await self._connection.send(message)

    async def _handle_frame(self, raw: str | bytes) -> None:
        verdict = check_frame(raw, self._ocpp_version)
        if verdict.kind == "drop":
            self._server.note_malformed(self.id, "dropped", verdict.reason)
            return
        if verdict.kind == "answer":
            self._server.note_malformed(self.id, "answered", verdict.reason)
            await self._send(verdict.reply or "")
            return
        message = verdict.message or []
        if message[0] != CALL:
            future = self._pending.get(message[1])
            if future is None or future.done():
                logger.warning("charger %s: answer to an unknown or expired message id, ignored", self.id)
            else:
                future.set_result(message)
            return
        try:
            await self._answer_call(Call(message[1], message[2], message[3]))
        except ConnectionClosed:
            raise
        except Exception:
            logger.exception("charger %s: %s failed; answered InternalError", self.id, message[2])
            await self._send(call_error_frame(message[1], "InternalError", "the gateway could not handle this request"))

    async def _answer_call(self, msg: Call) -> None:
        """Validate, dispatch to the @on handler, validate the answer and send it."""
        handlers = self.route_map.get(msg.action, {})
        handler = handlers.get("_on_action")
        if handler is None:
            await self._send(call_error_frame(msg.unique_id, "NotImplemented", f"{msg.action} is not supported here"))
            return
        validate = not handlers.get("_skip_schema_validation", False)
        if validate:
            try:
                await validate_payload(msg, self._ocpp_version)
            except OCPPError as error:
                code = schema_error_code(error.code, self._ocpp_version)
                logger.info("charger %s: %s breaks the schema (%s)", self.id, msg.action, code)
                await self._send(call_error_frame(msg.unique_id, code, f"payload of {msg.action} does not fit the OCPP schema"))
                return
        result = handler(**camel_to_snake_case(msg.payload))
        if inspect.isawaitable(result):
            result = await result
        response = msg.create_call_result(snake_to_camel_case(remove_nones(serialize_as_dict(result))))
        if validate:
            await validate_payload(response, self._ocpp_version)
        await self._send(response.to_json())

    # --- handlers: record, ask the backend, answer --------------------------------------------

    def _time(self, text: str | None, received_at: datetime, action: str) -> datetime:
        at = parse_time(text)
        if at is None:
            logger.warning("charger %s: unreadable timestamp in %s, using the time of receipt", self.id, action)
            return received_at
        return at

    def _report(self, problems: list[str], action: str) -> None:
        if problems:
            logger.warning("charger %s: %s: %s", self.id, action, "; ".join(sorted(set(problems))))

    @on(Action.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str, firmware_version: str = "", **_: Any) -> Any:
        now = _now()
        self._backend.record(ChargerBooted(self.id, now, charge_point_vendor, charge_point_model, firmware_version))
        logger.info("charger %s booted: %s %s, firmware %s", self.id, charge_point_vendor, charge_point_model, firmware_version or "?")
        return call_result.BootNotification(
            current_time=format_time(now), interval=self._server.heartbeat_interval_s, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=format_time(_now()))

    @on(Action.status_notification)
    def on_status_notification(self, connector_id: int, error_code: str, status: str, info: str = "", **_: Any) -> Any:
        self._backend.record(ConnectorStatusChanged(self.id, connector_id, status, _now(), error_code, info))
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> Any:
        status = await self._backend.authorize(self.id, id_tag)
        return call_result.Authorize(id_tag_info=IdTagInfo(status=status))

    @on(Action.start_transaction)
    async def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any) -> Any:
        at = self._time(timestamp, _now(), "StartTransaction")
        answer = await self._backend.start_transaction(self.id, connector_id, id_tag, meter_start, at)
        self._server.tx_connectors[(self.id, answer.transaction_id)] = connector_id
        logger.info("charger %s: transaction %s started on connector %s (%s)", self.id, answer.transaction_id, connector_id, answer.status)
        return call_result.StartTransaction(transaction_id=answer.transaction_id, id_tag_info=IdTagInfo(status=answer.status))

    @on(Action.stop_transaction)
    async def on_stop_transaction(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        id_tag: str | None = None,
        transaction_data: list[Any] | None = None,
        **_: Any,
    ) -> Any:
        now = _now()
        connector_id = self._server.tx_connectors.pop((self.id, transaction_id), 0)
        samples, problems = parse_meter_values(
            self.id, connector_id, transaction_id, snake_to_camel_case(transaction_data or []), now
        )
        self._report(problems, "StopTransaction")
        at = self._time(timestamp, now, "StopTransaction")
        status = await self._backend.stop_transaction(self.id, transaction_id, meter_stop, at, reason, id_tag, samples)
        logger.info("charger %s: transaction %s stopped (%s)", self.id, transaction_id, reason or "Local")
        if id_tag is None or status is None:
            return call_result.StopTransaction()
        return call_result.StopTransaction(id_tag_info=IdTagInfo(status=status))

    @on(Action.meter_values)
    async def on_meter_values(self, connector_id: int, meter_value: list[Any], transaction_id: int | None = None, **_: Any) -> Any:
        if transaction_id is not None:
            self._server.tx_connectors.setdefault((self.id, transaction_id), connector_id)
        samples, problems = parse_meter_values(
            self.id, connector_id, transaction_id, snake_to_camel_case(meter_value), _now()
        )
        self._report(problems, "MeterValues")
        await self._backend.meter_values(self.id, samples)
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: str | None = None, **_: Any) -> Any:
        return call_result.DataTransfer(status=self._backend.data_transfer(self.id, vendor_id, message_id, data))

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status_notification(self, status: str, **_: Any) -> Any:
        logger.info("charger %s: diagnostics upload %s", self.id, status)
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, status: str, **_: Any) -> Any:
        logger.info("charger %s: firmware update %s", self.id, status)
        return call_result.FirmwareStatusNotification()
