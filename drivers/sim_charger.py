"""A simulated OCPP 1.6J charger that obeys charging profiles and charges cars, for the demo and the tests.

It connects to the gateway like a real charger (Basic Auth, reconnects with back-off), boots,
reports its connectors, heartbeats, sends meter values while charging and answers the
gateway's requests; follow-up messages go out from its own task, never from inside a handler.
Like a real charger it applies a new limit only after its reaction time, and goes on applying
its profiles (which run out by time as usual) and charging while the gateway is gone. Its
transaction-related messages (OCPP 1.6 §4.x) wait in an outbox while the gateway is gone and
go out in order once it is back; a transaction cannot start while it is gone (no local auth).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.headers import build_authorization_basic
from websockets.typing import Subprotocol

from drivers.aio import cancel_count, raise_if_cancelled
from drivers.ocpp_frames import format_time
from drivers.sim_outbox import (
    TX_RETRY_S,
    CallLost,
    Confirmed,
    Outbox,
    SimChargerError,
    TxMessage,
    _settle,
)
from drivers.sim_profiles import (
    MIN_CURRENT_A,
    TX_PURPOSE,
    VOLTAGE_V,
    Follow,
    ProfileStore,
    charging_status,
    composite_schedule,
    follow_limit,
    parse_profile,
    plain_draw,
    profile_limit_a,
    sampled_values,
    schedule_start,
)

logging.getLogger("ocpp").setLevel(logging.WARNING)  # the library logs every frame, id tags included
logger = logging.getLogger(__name__)
# The library logs refused requests with their payloads (id tags) at ERROR: keep them out.
_library_logger = logging.getLogger(__name__ + ".library")
_library_logger.setLevel(logging.CRITICAL)

LIMIT_TICK_S = 0.05  # how often the charger re-evaluates its profiles
CHARGING_STATES = ("Charging", "SuspendedEV", "SuspendedEVSE")
MAX_BACKOFF_S = 2.0
CALL_TIMEOUT_S = 10.0
_UNIQUE_ID = re.compile(r'^\s*\[\s*\d+\s*,\s*"([^"\\]*)"')

Work = Callable[[], Awaitable[None]]


class Car(Protocol):
    """A car model: `step` charges for `dt_s` at `offered_a` (A) and gives (power W, A on L1, L2, L3)."""

    full: bool

    def step(self, dt_s: float, offered_a: float) -> tuple[float, tuple[float, float, float]]: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _now() -> str:
    return format_time(_utcnow())


class SimCharger(ChargePoint):
    """One simulated charger; `run` keeps it connected until cancelled."""

    def __init__(
        self,
        url_base: str,
        charger_id: str,
        connectors: int = 2,
        *,
        max_current_a: float = 32.0,
        phases: int = 3,
        password: str | None = None,
        meter_interval_s: float = 1.0,
        reaction_s: float = 2.0,
    ) -> None:
        super().__init__(charger_id, None, response_timeout=CALL_TIMEOUT_S, logger=_library_logger)
        self.url = url_base.rstrip("/") + "/" + quote(charger_id, safe="")
        self.connectors = connectors
        self.max_current_a = max_current_a
        self.phases = phases
        self.meter_interval_s = meter_interval_s
        self.reaction_s = reaction_s
        self._headers = {"Authorization": build_authorization_basic(charger_id, password)} if password else {}
        self.connected = False  # the gateway accepted the boot: the charger may send
        self.transactions: dict[int, int] = {}  # connector -> transaction id
        self.received: list[tuple[str, dict[str, Any]]] = []  # requests from the gateway, as sent
        self.statuses: dict[int, str] = {c: "Available" for c in range(1, connectors + 1)}
        self.profiles = ProfileStore(connectors=connectors)
        self.limits_a: dict[int, float] = {c: max_current_a for c in range(1, connectors + 1)}  # applied (A)
        self.applied_history: list[tuple[datetime, int, float]] = []  # every change of an applied limit
        # connector -> (monotonic s, applied A) from the start on: what the charger let its car draw when
        self.applied_log: dict[int, list[tuple[float, float]]] = {
            c: [(time.monotonic(), max_current_a)] for c in range(1, connectors + 1)
        }
        self.link_log: list[tuple[float, bool]] = []  # (monotonic s, True: a connection opened, False: it ended)
        self.outbox = Outbox()
        self.confirmed: list[Confirmed] = []  # transaction messages the gateway answered, in order
        self.energy_wh: dict[int, float] = {c: 0.0 for c in range(1, connectors + 1)}
        self.heartbeat_interval_s = 300.0
        self.configuration: dict[str, str] = {
            "HeartbeatInterval": "300",
            "MeterValueSampleInterval": str(meter_interval_s),
            "MeterValuesSampledData": "Current.Import,Power.Active.Import,Energy.Active.Import.Register",
            "NumberOfConnectors": str(connectors),
        }
        self._tags: dict[int, str] = {}
        self._cars: dict[int, tuple[float, int]] = {}  # connector -> (car max A, car phases)
        self._car_models: dict[int, Car] = {}
        self._readings: dict[int, tuple[float, tuple[float, ...]]] = {}  # connector -> (W, A per phase)
        self._tx_start: dict[int, datetime] = {}
        self._follow: dict[int, Follow] = {c: Follow(max_current_a) for c in range(1, connectors + 1)}
        self._raw_waiters: dict[str, asyncio.Future[str]] = {}
        self._work: asyncio.Queue[Work] | None = None
        self._deferred: list[Work] = []
        self._rebooting = False
        self._starting: set[int] = set()  # connectors whose StartTransaction awaits its answer
        self._in_flight: set[asyncio.Timeout] = set()  # calls waiting for an answer
        self._link_lost: asyncio.Future[None] | None = None  # done once the current connection ends

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

    @property
    def charger_id(self) -> str:
        """The id the charger connects with."""
        return self.id

    # --- connection -------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Charge and stay connected to the gateway until cancelled; `ready` is set after the first boot."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._limit_loop(), name=f"sim-{self.id}-limits")
            tasks.create_task(self._meter_loop(), name=f"sim-{self.id}-meter")
            await self._stay_connected(ready)

    async def _stay_connected(self, ready: asyncio.Event | None) -> None:
        backoff_s = 0.1
        while True:
            try:
                async with connect(
                    self.url,
                    subprotocols=[Subprotocol("ocpp1.6")],
                    additional_headers=self._headers,
                    open_timeout=5,
                    max_size=2**20,
                ) as connection:
                    backoff_s = 0.1
                    self.link_log.append((time.monotonic(), True))
                    await self._session(connection, ready)
            except Exception as exc:  # noqa: BLE001 - a simulator keeps trying, like a charger
                logger.info("sim %s: connection ended (%s); retrying in %.1f s", self.id, _why(exc), backoff_s)
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
            await self._boot()
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
            for connector in sorted(self.statuses):
                await self._status(connector, self.statuses[connector])
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
                logger.warning("sim %s: follow-up failed: %s", self.id, _why(exc))

    async def _deliver(self) -> None:
        """Send the outbox oldest first while connected; a message the link took with it stays for the next one."""
        while True:
            message = await self.outbox.next()
            try:
                result = await self.call(message.payload, suppress=False)
            except OCPPError as exc:
                if message.action == "StartTransaction":  # the driver hears at once, and may tap again
                    given_up = self.outbox.withdraw(message)
                else:
                    given_up = self.outbox.refused(message)
                logger.warning("sim %s: %s refused (%s)%s", self.id, message.action, exc, ", given up" if given_up else "")
                if given_up:
                    _settle(message, exc=SimChargerError(f"sim {self.id}: {message.action} refused ({exc})"))
                else:
                    await asyncio.sleep(TX_RETRY_S)
                continue
            except TimeoutError:
                # No answer while the link stays up: the gateway may have it or not; send it again
                # (a start is given up: the driver does not wait, the car is not charging yet).
                if message.action == "StartTransaction":
                    self.outbox.withdraw(message)
                    _settle(message, exc=SimChargerError(f"sim {self.id}: no answer to StartTransaction"))
                else:
                    await asyncio.sleep(TX_RETRY_S)
                continue
            if not self.outbox.delivered(message) and message.action == "StartTransaction":
                logger.warning("sim %s: the answer to a start the driver gave up on came after all", self.id)
                continue
            tx_id = result.transaction_id if message.action == "StartTransaction" else message.transaction_id
            self.confirmed.append(Confirmed(message.action, message.connector, tx_id, message.timestamp, message.meter_wh))
            _settle(message, result=result)

    def _send_later(self, action: str, payload: Any, connector: int, tx_id: int | None, at: str, meter_wh: float,
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

    async def _boot(self) -> None:
        while True:
            result = await self.call(
                call.BootNotification(charge_point_model="SimCharger", charge_point_vendor="laadplein", firmware_version="sim-1"),
                suppress=False,
            )
            if result.interval > 0:
                self.heartbeat_interval_s = float(result.interval)
            if result.status == "Accepted":
                return
            await asyncio.sleep(max(1.0, min(self.heartbeat_interval_s, 10.0)))

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            await self.call(call.Heartbeat(), suppress=False)

    def _require_connection(self) -> None:
        if not self.connected:
            raise SimChargerError(f"sim {self.id} is not connected")

    # --- what a driver at the charger does ----------------------------------------------------

    async def set_status(self, connector: int, status: str, error_code: str = "NoError") -> None:
        """Report a connector status (Available, Preparing, Charging, Faulted, ...); while the gateway is
        gone it is kept and reported with the others on reconnecting, as a charger does."""
        self.statuses[connector] = status
        if not self.connected:
            return
        try:
            await self._status(connector, status, error_code)
        except CallLost:
            pass  # reported again after the reconnect

    async def _status(self, connector: int, status: str, error_code: str = "NoError") -> None:
        await self.call(
            call.StatusNotification(connector_id=connector, error_code=error_code, status=status, timestamp=_now()),
            suppress=False,
        )

    async def plug_in(
        self, connector: int, id_tag: str = "SIM-TAG-0001", *, car_max_a: float = 32.0, car_phases: int | None = None, car: Car | None = None
    ) -> int:
        """A car plugs in and its driver taps a card: Preparing, Authorize, StartTransaction, Charging; the transaction id.

        Without a `car` model the car draws the applied limit, at most `car_max_a`, on `car_phases`.
        Refused (SimChargerError) while the gateway is gone or if it goes before the start is
        answered: without a local authorization list a charger cannot start on its own. The car
        stays plugged in (Preparing).
        """
        self._require_connection()
        await self.set_status(connector, "Preparing")
        result = await self.call(call.Authorize(id_tag=id_tag), suppress=False)
        status = result.id_tag_info["status"]
        if status != "Accepted":
            raise SimChargerError(f"sim {self.id}: tag refused ({status})")
        return await self._start(connector, id_tag, car_max_a, car_phases or self.phases, car)

    async def _start(self, connector: int, id_tag: str, car_max_a: float, car_phases: int, car: Car | None = None) -> int:
        self._require_connection()
        meter_start, at = int(self.energy_wh[connector]), _now()
        payload = call.StartTransaction(connector_id=connector, id_tag=id_tag, meter_start=meter_start, timestamp=at)
        message = self._send_later("StartTransaction", payload, connector, None, at, meter_start, answer=True)
        self._starting.add(connector)
        try:
            result = await self._answer_to(message)
        finally:
            self._starting.discard(connector)
        if result is None:
            self.outbox.withdraw(message)
            raise SimChargerError(f"sim {self.id}: the gateway went before the start on connector {connector} was answered")
        self.transactions[connector] = result.transaction_id
        self._tx_start[connector] = _utcnow()
        self._tags[connector] = id_tag
        self._cars[connector] = (car_max_a, min(car_phases, self.phases))
        if car is not None:
            self._car_models[connector] = car
        # A session starts at the limit in force (the safe default, or a lease that came with the
        # answer), not at the charger's maximum followed by a correction.
        target = self.profiles.limit_a(connector, _utcnow(), result.transaction_id, self._tx_start[connector], self.max_current_a, self.phases)
        self._follow[connector] = Follow(target)
        self._apply(connector, target)
        self._update_limits()
        await self.set_status(connector, charging_status(self.applied_a(connector), getattr(car, "full", False)))
        return result.transaction_id

    async def stop(self, connector: int, reason: str = "Local") -> None:
        """The driver ends charging: StopTransaction (with the final register reading), status Finishing.

        Also while the gateway is gone: the StopTransaction waits in the outbox with its own time
        and reading. Connected, this returns once the gateway answered it (or the link went).
        """
        transaction_id = self.transactions.pop(connector, None)
        if transaction_id is None:
            raise SimChargerError(f"sim {self.id}: no transaction on connector {connector}")
        for per_connector in (self._cars, self._car_models, self._readings, self._tx_start):
            per_connector.pop(connector, None)  # type: ignore[attr-defined]
        self.profiles.end_transaction(connector)
        self._update_limits()
        energy, at = int(self.energy_wh[connector]), _now()
        final = {
            "timestamp": at,
            "sampledValue": [
                {"value": str(energy), "context": "Transaction.End", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
            ],
        }
        payload = call.StopTransaction(
            meter_stop=energy, timestamp=at, transaction_id=transaction_id, reason=reason,
            id_tag=self._tags.pop(connector, None), transaction_data=[final],
        )
        message = self._send_later("StopTransaction", payload, connector, transaction_id, at, energy, answer=True)
        try:
            await self._answer_to(message)
        except SimChargerError as exc:
            logger.warning("sim %s: %s", self.id, exc)  # the charger has stopped whatever the gateway says
        await self.set_status(connector, "Finishing")

    async def unplug(self, connector: int) -> None:
        """The car leaves: status Available (stopping a transaction still running)."""
        if connector in self.transactions:
            await self.stop(connector, reason="EVDisconnected")
        await self.set_status(connector, "Available")

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

    # --- limits, the car and the meter -------------------------------------------------------

    def applied_a(self, connector: int) -> float:
        """The limit the charger applies to the car on a connector (A per phase)."""
        return self.limits_a.get(connector, self.max_current_a)

    def tx_profile_in_force(self, connector: int, now: datetime) -> tuple[datetime | None, float] | None:
        """The TxProfile (the gateway's lease) giving the connector's limit at `now`: (when it runs out,
        None if never; its highest limit A per phase); None when no TxProfile gives one."""
        tx_id, tx_start = self.transactions.get(connector), self._tx_start.get(connector)
        if tx_id is None:
            return None
        for p in self.profiles.profiles(connector):
            if p.purpose != TX_PURPOSE or p.transaction_id not in (None, tx_id):
                continue
            if profile_limit_a(p, now, tx_start, self.phases) is None:
                continue
            ends = None if p.duration_s is None else schedule_start(p, now, tx_start) + timedelta(seconds=p.duration_s)
            per_a = 1.0 if p.rate_unit == "A" else 1.0 / (VOLTAGE_V * self.phases)
            return ends, max(period.limit * per_a for period in p.periods)
        return None

    def offered_a(self, connector: int) -> float:
        """The current the charger offers on a connector (A): the applied limit."""
        return self.applied_a(connector)

    def current_a(self, connector: int) -> float:
        """What the car on a connector draws per phase (A): the highest phase current the meter shows."""
        return max(self._reading(connector)[1], default=0.0) if connector in self.transactions else 0.0

    def _update_limits(self) -> None:
        """Apply each connector's limit in force `reaction_s` after it changed, as a charger's control loop does."""
        now, now_s = _utcnow(), time.monotonic()
        for c in range(1, self.connectors + 1):
            target = self.profiles.limit_a(c, now, self.transactions.get(c), self._tx_start.get(c), self.max_current_a, self.phases)
            self._follow[c] = follow_limit(self._follow[c], target, now_s, self.reaction_s)
            self._apply(c, self._follow[c].applied_a)

    def _apply(self, connector: int, limit_a: float) -> None:
        """The charger now lets the car on `connector` draw up to `limit_a` (A per phase)."""
        if limit_a != self.limits_a[connector]:
            self.limits_a[connector] = limit_a
            self.applied_history.append((_utcnow(), connector, limit_a))
            self.applied_log[connector].append((time.monotonic(), limit_a))

    async def _limit_loop(self) -> None:
        while True:
            self._update_limits()
            await asyncio.sleep(LIMIT_TICK_S)

    def _reading(self, connector: int) -> tuple[float, tuple[float, ...]]:
        """What the meter measures on a connector: (power W, current A per phase of the charger)."""
        if connector in self._car_models:
            power_w, currents = self._readings.get(connector, (0.0, ()))
            return power_w, tuple((list(currents) + [0.0] * 3)[: self.phases])
        car_max_a, car_phases = self._cars.get(connector, (0.0, self.phases))
        return plain_draw(self.applied_a(connector), car_max_a, car_phases, self.phases)

    async def _meter_loop(self) -> None:
        """Charge the cars every `meter_interval_s` and report to the outbox, connected or not."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.meter_interval_s)
            now = time.monotonic()
            dt_s, last = now - last, now
            for connector in sorted(self.transactions):
                applied, car = self.applied_a(connector), self._car_models.get(connector)
                if car is not None:
                    self._readings[connector] = car.step(dt_s, applied if applied >= MIN_CURRENT_A else 0.0)
                self.energy_wh[connector] += self._reading(connector)[0] * dt_s / 3600
                status = charging_status(applied, getattr(car, "full", False))
                if self.statuses.get(connector) in CHARGING_STATES and status != self.statuses[connector]:
                    self.statuses[connector] = status
                    if self.connected:
                        self._queue(lambda c=connector, s=status: self._status(c, s))
                at, register_wh, payload = self._meter_values(connector)
                self._send_later("MeterValues", payload, connector, self.transactions[connector], at, register_wh)

    def _meter_values(self, connector: int) -> tuple[str, float, Any]:
        """A MeterValues request with the connector's reading now; its timestamp and register (Wh) as sent."""
        power_w, currents = self._reading(connector)
        values = sampled_values(power_w, currents, self.energy_wh[connector], self.offered_a(connector))
        at = _now()
        register_wh = float(next(v["value"] for v in values if v["measurand"] == "Energy.Active.Import.Register"))
        return at, register_wh, call.MeterValues(
            connector_id=connector,
            meter_value=[{"timestamp": at, "sampledValue": values}],
            transaction_id=self.transactions.get(connector),
        )

    async def _send_meter_values(self, connector: int) -> None:
        """A reading the gateway asked for (TriggerMessage): sent at once, not queued."""
        await self.call(self._meter_values(connector)[2], suppress=False)

    # --- the gateway's requests: answer at once, follow up from the worker -------------------------

    def _later(self, work: Work) -> None:
        self._deferred.append(work)

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None, **_: Any) -> Any:
        connectors = [connector_id] if connector_id else sorted(self.statuses)
        if requested_message == "StatusNotification":
            for connector in connectors:
                self._later(lambda c=connector: self._status(c, self.statuses.get(c, "Available")))
        elif requested_message == "MeterValues":
            for connector in connectors:
                self._later(lambda c=connector: self._send_meter_values(c))
        elif requested_message == "Heartbeat":
            self._later(lambda: self._heartbeat_once())
        elif requested_message == "BootNotification":
            self._later(self._boot)
        else:
            return call_result.TriggerMessage(status="NotImplemented")
        return call_result.TriggerMessage(status="Accepted")

    async def _heartbeat_once(self) -> None:
        await self.call(call.Heartbeat(), suppress=False)

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any) -> Any:
        try:
            profile = parse_profile(cs_charging_profiles)
        except ValueError as exc:
            logger.info("sim %s: charging profile rejected: %s", self.id, exc)
            return call_result.SetChargingProfile(status="Rejected")
        tx_id = self.transactions.get(connector_id)
        if tx_id is None and connector_id in self._starting:
            # StartTransaction.conf is in, its continuation has not run yet: a real charger knows the id.
            tx_id = profile.transaction_id
        status = self.profiles.install(connector_id, profile, tx_id)
        self._update_limits()
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, id: int | None = None, connector_id: int | None = None, **kw: Any) -> Any:
        removed = self.profiles.clear(id, connector_id, kw.get("charging_profile_purpose"), kw.get("stack_level"))
        self._update_limits()
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any) -> Any:
        if not 0 <= connector_id <= self.connectors:
            return call_result.GetCompositeSchedule(status="Rejected")
        now = _utcnow()
        tx_id, tx_start = self.transactions.get(connector_id), self._tx_start.get(connector_id)
        periods = self.profiles.composite(connector_id, now, duration, tx_id, tx_start, self.max_current_a, self.phases)
        schedule = composite_schedule(periods, duration, format_time(now), charging_rate_unit or "A", self.phases)
        return call_result.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=format_time(now), charging_schedule=schedule
        )

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        self.configuration[key] = value
        try:
            number = float(value)
        except ValueError:
            number = 0.0
        if key == "MeterValueSampleInterval" and number > 0:
            self.meter_interval_s = number
        elif key == "HeartbeatInterval" and number > 0:
            self.heartbeat_interval_s = number
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        wanted = key or sorted(self.configuration)
        known = [{"key": k, "readonly": False, "value": self.configuration[k]} for k in wanted if k in self.configuration]
        unknown = [k for k in wanted if k not in self.configuration]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> Any:
        self._later(lambda: self._reset(f"{type}Reset"))
        return call_result.Reset(status="Accepted")

    async def _reset(self, reason: str) -> None:
        for connector in sorted(self.transactions):
            await self.stop(connector, reason=reason)
        self._rebooting = True
        await self._connection.close(1000, "reset")

    @on(Action.unlock_connector)
    def on_unlock_connector(self, connector_id: int, **_: Any) -> Any:
        return call_result.UnlockConnector(status="Unlocked")

    @on(Action.remote_start_transaction)
    def on_remote_start_transaction(self, id_tag: str, connector_id: int | None = None, **_: Any) -> Any:
        free = [c for c in sorted(self.statuses) if c not in self.transactions and connector_id in (None, c)]
        if not free:
            return call_result.RemoteStartTransaction(status="Rejected")
        connector = free[0]

        async def start() -> None:
            await self.set_status(connector, "Preparing")
            await self._start(connector, id_tag, self.max_current_a, self.phases)

        self._later(start)
        return call_result.RemoteStartTransaction(status="Accepted")

    @on(Action.remote_stop_transaction)
    def on_remote_stop_transaction(self, transaction_id: int, **_: Any) -> Any:
        connectors = [c for c, tx in self.transactions.items() if tx == transaction_id]
        if not connectors:
            return call_result.RemoteStopTransaction(status="Rejected")
        self._later(lambda: self.stop(connectors[0], reason="Remote"))
        return call_result.RemoteStopTransaction(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return call_result.DataTransfer(status="Rejected")


def _why(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_why(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
