"""A simulated OCPP 1.6J charger with cars that draw what they are offered, for the demo and the tests.

It connects to the gateway like a real charger (Basic Auth, reconnects with back-off), boots,
reports its connectors, heartbeats, sends meter values while charging and answers the
gateway's requests; follow-up messages go out from its own task, never from inside a handler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.headers import build_authorization_basic
from websockets.typing import Subprotocol

from drivers.ocpp_frames import format_time

logging.getLogger("ocpp").setLevel(logging.WARNING)  # the library logs every frame, id tags included
logger = logging.getLogger(__name__)
# The library logs refused requests with their payloads (id tags) at ERROR: keep them out.
_library_logger = logging.getLogger(__name__ + ".library")
_library_logger.setLevel(logging.CRITICAL)

VOLTAGE_V = 230.0
MIN_CURRENT_A = 6.0  # IEC 61851: below this a car does not charge
MAX_BACKOFF_S = 2.0
CALL_TIMEOUT_S = 10.0
_UNIQUE_ID = re.compile(r'^\s*\[\s*\d+\s*,\s*"([^"\\]*)"')

Work = Callable[[], Awaitable[None]]


class SimChargerError(Exception):
    """The simulated charger cannot do what it was asked (not connected, tag refused, no transaction)."""


def _now() -> str:
    return format_time(datetime.now(timezone.utc))


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
        self.connected = False
        self.transactions: dict[int, int] = {}  # connector -> transaction id
        self.received: list[tuple[str, dict[str, Any]]] = []  # requests from the gateway, as sent
        self.statuses: dict[int, str] = {c: "Available" for c in range(1, connectors + 1)}
        self.limits_a: dict[int, float] = {}  # limit in force per connector (A), from charging profiles
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
        self._pending_limits: dict[int, tuple[float, float]] = {}  # connector -> (A, monotonic due time)
        self._raw_waiters: dict[str, asyncio.Future[str]] = {}
        self._work: asyncio.Queue[Work] | None = None
        self._deferred: list[Work] = []

    @property
    def charger_id(self) -> str:
        """The id the charger connects with."""
        return self.id

    # --- connection -------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Stay connected to the gateway until cancelled; `ready` is set after the first boot."""
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
                    await self._session(connection, ready)
            except Exception as exc:  # noqa: BLE001 - a simulator keeps trying, like a charger
                logger.info("sim %s: connection ended (%s); retrying in %.1f s", self.id, _why(exc), backoff_s)
            finally:
                self.connected = False
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)

    async def _session(self, connection: ClientConnection, ready: asyncio.Event | None) -> None:
        self._connection = connection
        self._response_queue = asyncio.Queue()
        self._work = asyncio.Queue()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read(connection), name=f"sim-{self.id}-read")
            tasks.create_task(self._worker(), name=f"sim-{self.id}-work")
            await self._boot()
            self.connected = True
            for connector in sorted(self.statuses):
                await self._status(connector, self.statuses[connector])
            if ready is not None:
                ready.set()
            tasks.create_task(self._heartbeats(), name=f"sim-{self.id}-heartbeat")
            tasks.create_task(self._meter_loop(), name=f"sim-{self.id}-meter")

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
            if self._work is not None:
                self._work.put_nowait(work)

    async def _worker(self) -> None:
        assert self._work is not None
        while True:
            work = await self._work.get()
            try:
                await work()
            except ConnectionClosed:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed follow-up must not end the link
                logger.warning("sim %s: follow-up failed: %s", self.id, _why(exc))

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
        """Report a connector status (Available, Preparing, Charging, Faulted, ...)."""
        self.statuses[connector] = status
        self._require_connection()
        await self._status(connector, status, error_code)

    async def _status(self, connector: int, status: str, error_code: str = "NoError") -> None:
        await self.call(
            call.StatusNotification(connector_id=connector, error_code=error_code, status=status, timestamp=_now()),
            suppress=False,
        )

    async def plug_in(
        self, connector: int, id_tag: str = "SIM-TAG-0001", *, car_max_a: float = 32.0, car_phases: int | None = None
    ) -> int:
        """A car plugs in and its driver taps a card: Preparing, Authorize, StartTransaction, Charging; the transaction id."""
        self._require_connection()
        await self.set_status(connector, "Preparing")
        result = await self.call(call.Authorize(id_tag=id_tag), suppress=False)
        status = result.id_tag_info["status"]
        if status != "Accepted":
            raise SimChargerError(f"sim {self.id}: tag refused ({status})")
        return await self._start(connector, id_tag, car_max_a, car_phases or self.phases)

    async def _start(self, connector: int, id_tag: str, car_max_a: float, car_phases: int) -> int:
        result = await self.call(
            call.StartTransaction(
                connector_id=connector, id_tag=id_tag, meter_start=int(self.energy_wh[connector]), timestamp=_now()
            ),
            suppress=False,
        )
        self.transactions[connector] = result.transaction_id
        self._tags[connector] = id_tag
        self._cars[connector] = (car_max_a, min(car_phases, self.phases))
        await self.set_status(connector, "Charging")
        return result.transaction_id

    async def stop(self, connector: int, reason: str = "Local") -> None:
        """The driver ends charging: StopTransaction (with the final register reading), status Finishing."""
        self._require_connection()
        transaction_id = self.transactions.pop(connector, None)
        if transaction_id is None:
            raise SimChargerError(f"sim {self.id}: no transaction on connector {connector}")
        self._cars.pop(connector, None)
        energy = int(self.energy_wh[connector])
        final = {
            "timestamp": _now(),
            "sampledValue": [
                {"value": str(energy), "context": "Transaction.End", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
            ],
        }
        await self.call(
            call.StopTransaction(
                meter_stop=energy,
                timestamp=_now(),
                transaction_id=transaction_id,
                reason=reason,
                id_tag=self._tags.pop(connector, None),
                transaction_data=[final],
            ),
            suppress=False,
        )
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

    # --- the car and the meter ---------------------------------------------------------------

    def offered_a(self, connector: int) -> float:
        """The current the charger offers on a connector (A): the profile limit in force, at most its maximum."""
        due = self._pending_limits.get(connector)
        if due is not None and time.monotonic() >= due[1]:
            self.limits_a[connector] = due[0]
            del self._pending_limits[connector]
        return min(self.limits_a.get(connector, self.max_current_a), self.max_current_a)

    def current_a(self, connector: int) -> float:
        """What the car on a connector draws per phase (A): the offer, at most the car's maximum, 0 below 6 A."""
        if connector not in self.transactions or connector not in self._cars:
            return 0.0
        current = min(self.offered_a(connector), self._cars[connector][0])
        return current if current >= MIN_CURRENT_A else 0.0

    async def _meter_loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.meter_interval_s)
            now = time.monotonic()
            for connector in sorted(self.transactions):
                phases = self._cars.get(connector, (0.0, self.phases))[1]
                self.energy_wh[connector] += self.current_a(connector) * VOLTAGE_V * phases * (now - last) / 3600
                await self._send_meter_values(connector)
            last = now

    async def _send_meter_values(self, connector: int) -> None:
        current = self.current_a(connector)
        phases = self._cars.get(connector, (0.0, self.phases))[1]
        values = [
            {"value": f"{current if phase <= phases else 0.0:.1f}", "measurand": "Current.Import", "phase": f"L{phase}", "unit": "A"}
            for phase in range(1, self.phases + 1)
        ]
        values += [
            {"value": f"{current * VOLTAGE_V * phases:.0f}", "measurand": "Power.Active.Import", "unit": "W"},
            {"value": f"{self.energy_wh[connector]:.0f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": f"{self.offered_a(connector):.1f}", "measurand": "Current.Offered", "unit": "A"},
        ]
        await self.call(
            call.MeterValues(
                connector_id=connector,
                meter_value=[{"timestamp": _now(), "sampledValue": values}],
                transaction_id=self.transactions.get(connector),
            ),
            suppress=False,
        )

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
        schedule = cs_charging_profiles.get("charging_schedule", {})
        periods = schedule.get("charging_schedule_period") or [{}]
        limit = float(periods[0].get("limit", self.max_current_a))
        if schedule.get("charging_rate_unit") == "W":
            limit = limit / (VOLTAGE_V * self.phases)
        due = time.monotonic() + self.reaction_s
        for connector in [connector_id] if connector_id else sorted(self.statuses):
            self._pending_limits[connector] = (limit, due)
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, connector_id: int | None = None, **_: Any) -> Any:
        for connector in [connector_id] if connector_id else sorted(self.statuses):
            self.limits_a.pop(connector, None)
            self._pending_limits.pop(connector, None)
        return call_result.ClearChargingProfile(status="Accepted")

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
    def on_reset(self, type: str, **_: Any) -> Any:  # noqa: A002 - the OCPP field name
        self._later(lambda: self._reset(f"{type}Reset"))
        return call_result.Reset(status="Accepted")

    async def _reset(self, reason: str) -> None:
        for connector in sorted(self.transactions):
            await self.stop(connector, reason=reason)
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
