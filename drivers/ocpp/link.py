"""One charger's OCPP-J connection, whatever its OCPP version: reads its frames, answers its requests
through the version's handlers and carries the gateway's requests to it. The handlers of each
version live in `drivers.ocpp.handlers16` and `drivers.ocpp.handlers201`; they only record and
answer, because a request awaited inside a handler would deadlock that charger's connection.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from datetime import datetime
from typing import Any

from ocpp.charge_point import (
    ChargePoint,
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, validate_payload
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from drivers.contract.backend import (
    CallErrorReceived,
    CallFailed,
    CallTimedOut,
    ChargerNotConnected,
    InvalidRequest,
)
from drivers.contract.clock import parse_ts_or_none, utc_now
from drivers.contract.events import ChargerHeard
from drivers.contract.text import printable
from drivers.ocpp import message_limits
from drivers.ocpp.context import LinkContext
from drivers.ocpp.frames import (
    CALL,
    CALLERROR,
    call_error_frame,
    check_frame,
    schema_error_code,
    value_problem,
)
from drivers.ocpp.lenient import normalize
from drivers.ocpp.pacing import trim_readings

# The central system's log lines keep one logger name, whichever module writes them.
logger = logging.getLogger("laadplein.ocpp")

__all__ = ["ChargerLink", "peer_address", "printable", "utc_now"]


def peer_address(connection: ServerConnection) -> str:
    """The far end of a connection as host:port, for log lines and events."""
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
    reason = f": {printable(frame.reason, 123)}" if frame.reason else ""  # the charger's words (a close reason is at most 123 bytes)
    return f"closed by the {'charger' if by_charger else 'gateway'} ({frame.code}{reason})"


class ChargerLink(ChargePoint):
    """One charger's open connection: reads its frames, answers its requests, carries ours.

    Subclasses set the OCPP version (`_ocpp_version`, `_call_result`) and hold its @on handlers.
    """

    def __init__(self, charger_id: str, connection: ServerConnection, context: LinkContext) -> None:
        super().__init__(charger_id, connection, response_timeout=context.call_timeout_s)
        self._context = context
        self._backend = context.backend
        self.subprotocol = str(connection.subprotocol or "")
        self.peer = peer_address(connection)
        self.closed = False
        self._pending: dict[str, asyncio.Future[list[Any]]] = {}
        self._faults = context.faults
        # A lenient charger's schema breaks are mended where they can be (drivers.ocpp.lenient).
        self.lenient = context.backend.charger_lenient(charger_id)
        self.heard: set[int] = set()  # connectors (EVSEs) that reported their status on this connection
        self.per_message = message_limits.MessageLimits()  # learned anew each connection: a new firmware may change them
        self._limits_read = False
        self._limits_lock = asyncio.Lock()

    def _fault(self, kind: str, level: int, message: str, *args: Any, exc_info: bool = False) -> None:
        """Log a fault of this charger at most once per kind and minute, with how many more came since."""
        self._faults.log(logger, level, self.id, kind, "charger %s: " + message, self.id, *args, exc_info=exc_info)

    async def serve(self) -> str:
        """Handle frames until the connection ends; return why it ended."""
        connection: ServerConnection = self._connection
        try:
            pace = self._context.pace(self.id)
            while True:
                raw = await connection.recv()
                self._backend.record(ChargerHeard(self.id, utc_now()))
                delay_s = pace.take(time.monotonic())
                if delay_s > 0:
                    # Not reading meanwhile: a charger that floods waits on its own socket.
                    self._context.note_over_limit(
                        self.id, "messages", f"more than {pace.rate_per_s:g} messages/s "
                        f"(burst {pace.burst}); its messages are answered more slowly",
                    )
                    await asyncio.sleep(delay_s)
                try:
                    await self._handle_frame(raw)
                except ConnectionClosed:
                    raise
                except Exception:
                    self._fault("frame", logging.ERROR, "failed to handle a frame; the connection stays up", exc_info=True)
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
        """Send a request and wait for its answer (see OcppServer.call); in several CALLs, their answers
        merged, when the charger's per-message limits ask for it (drivers.ocpp.message_limits)."""
        await self._check_request(str(uuid.uuid4()), action, payload)
        if self._context.own_calls and message_limits.wants_limits(self._ocpp_version, action, payload, self._limits_now()):
            await self._read_limits()
        return await self._request_within_limits(action, payload)  # TooBig is an InvalidRequest

    async def _request_within_limits(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The request split as the known limits ask, the answers merged; what they say of the limits is kept.
        A CALLERROR to a part fails the whole (parts before it may have been applied)."""
        version = self._ocpp_version
        parts = message_limits.split(version, action, payload, self._limits_now())
        if len(parts) > 1:
            logger.debug("charger %s: %s sent in %d messages, within its per-message limits", self.id, action, len(parts))
        answer = message_limits.merge(version, action, [await self._exchange(action, part) for part in parts])
        self.per_message = message_limits.learn(self.per_message, version, action, answer)
        return answer

    def _limits_now(self) -> message_limits.MessageLimits:
        return message_limits.combined(self.per_message, self._context.told_limits.get(self.id))

    async def _read_limits(self) -> None:
        """Read the charger's per-message limits, once a connection, before the first request they may split.
        Without an answer the requests go as they are."""
        async with self._limits_lock:
            if self._limits_read:
                return
            self._limits_read = True
            for action, payload in message_limits.limit_queries(self._ocpp_version):
                try:
                    await self._request_within_limits(action, payload)
                except (CallFailed, ValueError) as exc:
                    self._fault("limits", logging.WARNING, "its per-message limits could not be read (%s)", exc)
                    return

    async def _exchange(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one CALL and wait for its answer."""
        unique_id = str(uuid.uuid4())
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._context.call_timeout_s):
                async with self._call_lock:  # OCPP-J: one request in flight per direction
                    if self.closed:
                        raise ChargerNotConnected(f"charger {self.id} is not connected")
                    self._pending[unique_id] = future
                    await self._send(Call(unique_id, action, payload).to_json())
                    answer = await future
        except TimeoutError:
            raise CallTimedOut(f"charger {self.id} did not answer {action} within {self._context.call_timeout_s} s") from None
        except ConnectionClosed:
            raise ChargerNotConnected(f"connection of charger {self.id} closed") from None
        finally:
            self._pending.pop(unique_id, None)
            if future.done() and not future.cancelled():
                # fail_pending may have failed it while the send was still under way: the error
                # raised here says it all, asyncio must not report it again as never retrieved
                future.exception()
        if answer[0] == CALLERROR:
            raise CallErrorReceived(answer[2], answer[3], answer[4])
        return answer[2]

    async def _check_request(self, unique_id: str, action: str, payload: dict[str, Any]) -> None:
        """Refuse (InvalidRequest) a request that the charger's OCPP version does not have or whose
        payload breaks its schema: a charger would only answer it with a CALLERROR."""
        version = self._ocpp_version
        try:
            await validate_payload(Call(unique_id, action, payload), version)
        except OCPPError as error:
            if error.code == "NotImplemented":
                raise InvalidRequest(f"{action} is not an OCPP {version} request") from None
            cause = str((error.details or {}).get("cause", error.description)).split("\n")[0]
            raise InvalidRequest(f"{action} does not fit the OCPP {version} schema: {cause[:300]}") from None

    def unheard(self) -> list[int]:
        """The connectors (EVSEs) that have not reported their status on this connection."""
        count = self._backend.connector_count(self.id) or 1
        return [n for n in range(1, count + 1) if n not in self.heard]

    async def ask_status(self, connectors: list[int]) -> None:
        """Ask the charger for the status of these connectors (raises ChargerNotConnected; a failure
        for one connector is logged and the others are asked all the same)."""
        raise NotImplementedError

    async def _send(self, message: str) -> None:
        await self._connection.send(message)

    async def _handle_frame(self, raw: str | bytes) -> None:
        verdict = check_frame(raw, self._ocpp_version)
        if verdict.kind == "drop":
            self._context.note_malformed(self.id, "dropped", verdict.reason)
            return
        if verdict.kind == "answer":
            self._context.note_malformed(self.id, "answered", verdict.reason)
            await self._send(verdict.reply or "")
            return
        message = verdict.message or []
        if message[0] != CALL:
            future = self._pending.get(message[1])
            if future is None or future.done():
                self._fault("unknown id", logging.WARNING, "answer to an unknown or expired message id, ignored")
            else:
                future.set_result(message)
            return
        try:
            await self._answer_call(Call(message[1], message[2], message[3]))
        except ConnectionClosed:
            raise
        except Exception:
            self._fault(f"failed {message[2]}", logging.ERROR, "%s failed; answered InternalError", message[2], exc_info=True)
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
                mended = await self._mend(msg) if self.lenient else None
                if mended is None:
                    code = schema_error_code(error.code, self._ocpp_version)
                    self._context.note_malformed(self.id, "answered", f"{msg.action} breaks the OCPP schema ({code})")
                    await self._send(call_error_frame(msg.unique_id, code, f"payload of {msg.action} does not fit the OCPP schema"))
                    return
                msg = mended
            problem = value_problem(msg.payload)
            if problem is not None:
                code, description = problem
                self._context.note_malformed(self.id, "answered", f"{msg.action}: {description} ({code})")
                await self._send(call_error_frame(msg.unique_id, code, description))
                return
        cap = self._context.limits.max_samples_per_frame
        payload, dropped = trim_readings(msg.action, msg.payload, cap)
        if dropped:
            self._context.note_over_limit(
                self.id, "readings", f"{msg.action} with {dropped + cap} meter readings; the newest {cap} kept, "
                f"{dropped} dropped",
            )
        result = handler(**camel_to_snake_case(payload))
        if inspect.isawaitable(result):
            result = await result
        response = msg.create_call_result(snake_to_camel_case(remove_nones(serialize_as_dict(result))))
        if validate:
            await validate_payload(response, self._ocpp_version)
        await self._send(response.to_json())

    async def _mend(self, msg: Call) -> Call | None:
        """A lenient charger's payload, normalized so that it fits the schema; None when it cannot be."""
        fixed = normalize(msg.action, msg.payload, self._ocpp_version)
        if fixed is None:
            return None
        payload, fixes = fixed
        mended = Call(msg.unique_id, msg.action, payload)
        try:
            await validate_payload(mended, self._ocpp_version)
        except OCPPError:
            return None
        self._fault(
            f"lenient {msg.action}", logging.WARNING,
            "%s breaks the OCPP schema; accepted as it is flagged lenient, after: %s", msg.action, "; ".join(fixes),
        )
        return mended

    # --- shared by the handlers of every version -------------------------------------------------

    def _time(self, text: str | None, received_at: datetime, action: str) -> datetime:
        at = parse_ts_or_none(text)
        if at is None:
            self._fault(f"time {action}", logging.WARNING, "unreadable timestamp in %s, using the time of receipt", action)
            return received_at
        return at

    def _report(self, problems: list[str], action: str) -> None:
        if problems:
            self._fault(f"values {action}", logging.WARNING, "%s: %s", action, "; ".join(sorted(set(problems))))

