"""A simulated charger's link to the gateway, whatever OCPP version it speaks: connect (Basic Auth,
reconnect with back-off, at once after a reset), boot, deliver the outbox in order, heartbeat, and
run follow-ups of the gateway's requests from the charger's own worker, never inside a handler.

`drivers.sim.charger_core` builds the charger on it; the wire layers (`drivers.sim.charger16`,
`drivers.sim.charger201`) supply the messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from ocpp.charge_point import ChargePoint
from ocpp.exceptions import OCPPError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.headers import build_authorization_basic
from websockets.typing import Subprotocol

from drivers.sim.outbox import (
    TX_RETRY_S,
    CallLost,
    Confirmed,
    Outbox,
    SimChargerError,
    TxMessage,
    _settle,
)
from drivers.support.aio import cancel_count, raise_if_cancelled

logging.getLogger("ocpp").setLevel(logging.WARNING)  # the library logs every frame, id tags included
logger = logging.getLogger("laadplein.sim.charger")
# The library logs refused requests with their payloads (id tags) at ERROR: keep them out.
library_logger = logging.getLogger("laadplein.sim.charger.library")
library_logger.setLevel(logging.CRITICAL)

MAX_BACKOFF_S = 2.0
CALL_TIMEOUT_S = 10.0
_UNIQUE_ID = re.compile(r'^\s*\[\s*\d+\s*,\s*"([^"\\]*)"')

Work = Callable[[], Awaitable[None]]
TxId = int | str  # 1.6: the gateway's integer; 2.0.1: the charger's own string


def why(exc: BaseException) -> str:
    """An exception (or a group of them) in one line, for the log."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(why(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class SimLink(ChargePoint):
    """The connection side of a simulated charger; `_stay_connected` keeps it up until cancelled."""

    subprotocol = ""  # the wire layer's

    def __init__(self, url_base: str, charger_id: str, password: str | None) -> None:
        super().__init__(charger_id, None, response_timeout=CALL_TIMEOUT_S, logger=library_logger)
        self.url = url_base.rstrip("/") + "/" + quote(charger_id, safe="")
        self._headers = {"Authorization": build_authorization_basic(charger_id, password)} if password else {}
        self.connected = False  # the gateway accepted the boot: the charger may send
        self.received: list[tuple[str, dict[str, Any]]] = []  # requests from the gateway, as sent
        self.link_log: list[tuple[float, bool]] = []  # (monotonic s, True: a connection opened, False: it ended)
        self.outbox = Outbox()
        self.confirmed: list[Confirmed] = []  # transaction messages the gateway answered, in order
        self.heartbeat_interval_s = 300.0
        self._raw_waiters: dict[str, asyncio.Future[str]] = {}
        self._work: asyncio.Queue[Work] | None = None
        self._deferred: list[Work] = []
        self._rebooting = False
        # A real charger boots when it starts or is reset, not on every reconnect; the simulator boots on
        # each connection unless told otherwise (tests of what the gateway does on a reconnect).
        self.boot_on_reconnect = True
        self._must_boot = True
        self._in_flight: set[asyncio.Timeout] = set()  # calls waiting for an answer
        self._link_lost: asyncio.Future[None] | None = None  # done once the current connection ends

    # --- what the layers above provide ----------------------------------------------------------

    async def _boot(self) -> None:
        """BootNotification until accepted (the heartbeat interval from its answer)."""
        raise NotImplementedError

    async def _heartbeat_once(self) -> None:
        raise NotImplementedError

    async def _report_statuses(self) -> None:
        """Every connector's status, as a charger sends them after a boot."""
        raise NotImplementedError

    def _answered(self, message: TxMessage, result: Any) -> TxId:
        """A queued message was answered: act on the answer; the transaction id it confirms."""
        raise NotImplementedError

    @property
    def _tx_retry_s(self) -> float:
        """Pause before sending a refused or unanswered transaction message again (s)."""
        return TX_RETRY_S

    @property
    def charger_id(self) -> str:
        """The id the charger connects with."""
        return self.id

    # --- calls ---------------------------------------------------------------------------------

    async def call(self, payload: Any, suppress: bool = True, unique_id: Any = None, skip_schema_validation: bool = False) -> Any:
        """The library's call, ended by CallLost as soon as the link goes (the library would wait for
        its timeout, holding its call lock over the reconnect).

        The library waits with asyncio.wait_for: on Python 3.11 that can swallow a cancellation
        arriving with the answer, and a simulator that ignores its cancel never stops.
        """
        base = cancel_count()
        deadline: asyncio.Timeout | None = None
        try:
            async with asyncio.timeout(None) as deadline:
                self._in_flight.add(deadline)
                result = await super().call(payload, suppress, unique_id, skip_schema_validation)
        except TimeoutError:
            if deadline is not None and deadline.expired():
                raise CallLost(f"sim {self.id}: link lost before the answer to {type(payload).__name__}") from None
            raise
        except ConnectionClosed as exc:
            raise CallLost(f"sim {self.id}: link lost sending {type(payload).__name__}") from exc
        finally:
            self._in_flight.discard(deadline)  # type: ignore[arg-type]
        raise_if_cancelled(base)
        return result

    def _abandon_calls(self) -> None:
        """The link went: calls still waiting end now (CallLost), waiters on the outbox hear of it."""
        now = asyncio.get_running_loop().time()
        for deadline in list(self._in_flight):
            deadline.reschedule(now)
        if self._link_lost is not None and not self._link_lost.done():
            self._link_lost.set_result(None)

    def _require_connection(self) -> None:
        if not self.connected:
            raise SimChargerError(f"sim {self.id} is not connected")

    async def send_raw(self, text: str | bytes, timeout_s: float = 1.0) -> str | None:
        """Send a frame as is; the gateway's answer to it (matched by message id), or None within `timeout_s`."""
        self._require_connection()
        match = _UNIQUE_ID.match(text) if isinstance(text, str) else None
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if match:
            self._raw_waiters[match.group(1)] = future
        try:
            await self._connection.send(text)
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            return None
        finally:
            if match:
                self._raw_waiters.pop(match.group(1), None)

    # --- connection -------------------------------------------------------------------------

    async def _stay_connected(self, ready: asyncio.Event | None) -> None:
        backoff_s = 0.1
        while True:
            try:
                async with connect(
                    self.url,
                    subprotocols=[Subprotocol(self.subprotocol)],
                    additional_headers=self._headers,
                    open_timeout=5,
                    max_size=2**20,
                ) as connection:
                    backoff_s = 0.1
                    self.link_log.append((time.monotonic(), True))
                    await self._session(connection, ready)
            except Exception as exc:  # noqa: BLE001 - a simulator keeps trying, like a charger
                logger.info("sim %s: connection ended (%s); retrying in %.1f s", self.id, why(exc), backoff_s)
            finally:
                if self.link_log and self.link_log[-1][1]:
                    self.link_log.append((time.monotonic(), False))
                self.connected = False
                self._work = None
                self._abandon_calls()
            if self._rebooting:  # a reset charger comes back at once, then backs off as usual
                self._rebooting = False
                continue
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)

    async def _session(self, connection: ClientConnection, ready: asyncio.Event | None) -> None:
        self._connection = connection
        self._response_queue = asyncio.Queue()
        self._work = asyncio.Queue()
        self._link_lost = asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read(connection), name=f"sim-{self.id}-read")
            tasks.create_task(self._worker(), name=f"sim-{self.id}-work")
            booting = self._must_boot or self.boot_on_reconnect
            if booting:
                await self._boot()
                self._must_boot = False
            self.connected = True
            # What waited while the gateway was gone goes first, so that the statuses that follow
            # find the transactions they speak of already started or stopped.
            backlog = self.outbox.last_seq
            tasks.create_task(self._deliver(), name=f"sim-{self.id}-outbox")
            try:
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    await self.outbox.settled(backlog)
            except TimeoutError:
                logger.warning("sim %s: %d queued messages still unanswered", self.id, len(self.outbox))
            if booting:
                await self._report_statuses()
            if ready is not None:
                ready.set()
            tasks.create_task(self._heartbeats(), name=f"sim-{self.id}-heartbeat")

    async def _read(self, connection: ClientConnection) -> None:
        while True:
            await self.route_message(await connection.recv())

    async def route_message(self, raw_msg: str | bytes) -> None:
        """Note requests, hand raw answers to `send_raw`, route the rest; queue follow-ups after the answer."""
        try:
            message = json.loads(raw_msg)
        except ValueError:
            message = None
        if isinstance(message, list) and len(message) >= 2:
            if message[0] == 2 and len(message) == 4 and isinstance(message[3], dict):
                self.received.append((str(message[2]), message[3]))
            waiter = self._raw_waiters.pop(message[1], None) if message[0] in (3, 4) and isinstance(message[1], str) else None
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(raw_msg if isinstance(raw_msg, str) else raw_msg.decode(errors="replace"))
                return
        await super().route_message(raw_msg)
        deferred, self._deferred = self._deferred, []
        for work in deferred:
            self._queue(work)

    def _later(self, work: Work) -> None:
        """Run `work` from the worker once the answer to the request being handled is out."""
        self._deferred.append(work)

    def _queue(self, work: Work) -> None:
        if self._work is not None:
            self._work.put_nowait(work)

    async def _worker(self) -> None:
        assert self._work is not None
        while True:
            work = await self._work.get()
            try:
                await work()
            except (ConnectionClosed, CallLost):
                raise
            except Exception as exc:  # noqa: BLE001 - one failed follow-up must not end the link
                logger.warning("sim %s: follow-up failed: %s", self.id, why(exc))

    async def _heartbeats(self) -> None:
        """A heartbeat every `heartbeat_interval_s`; a new interval holds from the next second on."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, min(1.0, last + self.heartbeat_interval_s - time.monotonic())))
            if time.monotonic() - last >= self.heartbeat_interval_s:
                await self._heartbeat_once()
                last = time.monotonic()

    # --- the outbox -----------------------------------------------------------------------------

    async def _deliver(self) -> None:
        """Send the outbox oldest first while connected; a message the link took with it stays for the next one.

        A 1.6 start whose caller waits for its id (transaction_id None) is not retried: the driver
        hears at once and may tap again, as the car is not charging yet.
        """
        while True:
            message = await self.outbox.next()
            awaited_start = message.action == "StartTransaction" and message.transaction_id is None
            try:
                result = await self.call(message.payload, suppress=False)
            except OCPPError as exc:
                given_up = self.outbox.withdraw(message) if awaited_start else self.outbox.refused(message)
                logger.warning("sim %s: %s refused (%s)%s", self.id, message.action, exc, ", given up" if given_up else "")
                if given_up:
                    _settle(message, exc=SimChargerError(f"sim {self.id}: {message.action} refused ({exc})"))
                else:
                    await asyncio.sleep(self._tx_retry_s)
                continue
            except TimeoutError:
                # No answer while the link stays up: the gateway may have it or not; send it again.
                if awaited_start:
                    self.outbox.withdraw(message)
                    _settle(message, exc=SimChargerError(f"sim {self.id}: no answer to StartTransaction"))
                else:
                    await asyncio.sleep(self._tx_retry_s)
                continue
            if not self.outbox.delivered(message) and awaited_start:
                logger.warning("sim %s: the answer to a start the driver gave up on came after all", self.id)
                continue
            tx_id = self._answered(message, result)
            self.confirmed.append(Confirmed(message.action, message.connector, tx_id, message.timestamp, message.meter_wh))
            _settle(message, result=result)

    def _send_later(self, action: str, payload: Any, connector: int, tx_id: TxId | None, at: str, meter_wh: float,
                    *, answer: bool = False) -> TxMessage:
        """Put a transaction-related message in the outbox; with `answer`, a caller will wait for it."""
        future = asyncio.get_running_loop().create_future() if answer else None
        return self.outbox.put(TxMessage(action, payload, connector, tx_id, at, meter_wh, answer=future))

    async def _answer_to(self, message: TxMessage) -> Any:
        """The gateway's answer to a queued message; None when the link goes first or it takes too long
        (the message stays queued). Raises SimChargerError when the message was given up."""
        assert message.answer is not None
        lost = self._link_lost
        if self.connected and lost is not None and not lost.done():
            await asyncio.wait((message.answer, lost), timeout=2 * CALL_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        if message.answer.done():
            return message.answer.result()
        message.answer.cancel()  # nobody waits for it any more
        message.answer = None
        return None
