"""A simulated OCPP 1.6J charger that obeys charging profiles and charges cars, for the demo and the tests.

It connects to the gateway like a real charger (Basic Auth, reconnects with back-off), boots,
reports its connectors, heartbeats, sends meter values while charging and answers the
gateway's requests; follow-up messages go out from its own task, never from inside a handler.
Like a real charger it applies a new limit only after its reaction time, and goes on applying
its profiles (which run out by time as usual) and charging while the gateway is gone. Its
transaction-related messages (OCPP 1.6 §4.x) wait in an outbox while the gateway is gone and
go out in order once it is back. While the gateway is gone a transaction starts only for a tag
its local authorization list accepts; the gateway numbers it once it hears of it. What does not
depend on the version lives in `drivers.sim.charger_core`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from drivers.contract.clock import parse_ts_or_none, wire_ts
from drivers.sim.charger_core import Car, SimChargerCore, TxId, now_text, utcnow
from drivers.sim.charger_link import logger
from drivers.sim.charger_math import charging_status, sampled_values
from drivers.sim.outbox import (
    TX_RETRY_S,
    CallLost,
    ListEntry,
    SimChargerError,
    TxMessage,
)
from drivers.sim.profiles import composite_schedule, parse_profile

__all__ = ["TX_RETRY_S", "CallLost", "Car", "SimCharger", "SimChargerError"]


class SimCharger(SimChargerCore, ChargePoint):
    """One simulated OCPP 1.6J charger; `run` keeps it connected until cancelled."""

    subprotocol = "ocpp1.6"

    def __init__(self, url_base: str, charger_id: str, connectors: int = 2, **options: Any) -> None:
        """Options: max_current_a, phases, password, meter_interval_s, reaction_s (see SimChargerCore)."""
        super().__init__(url_base, charger_id, connectors, **options)
        self.configuration: dict[str, str] = {
            "HeartbeatInterval": "300",
            "MeterValueSampleInterval": str(self.meter_interval_s),
            "MeterValuesSampledData": "Current.Import,Power.Active.Import,Energy.Active.Import.Register",
            "NumberOfConnectors": str(connectors),
            "LocalAuthListEnabled": "true",
            "LocalAuthorizeOffline": "true",
        }
        self._starting: set[int] = set()  # connectors whose StartTransaction awaits its answer
        self._provisional = 0  # the last provisional id given to a transaction started offline

    @property
    def _tx_retry_s(self) -> float:
        return TX_RETRY_S  # this module's, so that a test can shorten it

    # --- messages to the gateway ------------------------------------------------------------------

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

    async def _heartbeat_once(self) -> None:
        await self.call(call.Heartbeat(), suppress=False)

    async def _status(self, connector: int, status: str, error_code: str = "NoError") -> None:
        await self.call(
            call.StatusNotification(connector_id=connector, error_code=error_code, status=status, timestamp=now_text()),
            suppress=False,
        )

    async def _authorize(self, id_tag: str) -> str:
        result = await self.call(call.Authorize(id_tag=id_tag), suppress=False)
        return str(result.id_tag_info["status"])

    async def _start(self, connector: int, id_tag: str, car_max_a: float, car_phases: int, car: Car | None = None) -> TxId:
        meter_start, at = int(self.energy_wh[connector]), now_text()
        payload = call.StartTransaction(connector_id=connector, id_tag=id_tag, meter_start=meter_start, timestamp=at)
        if not self.connected:
            # Started on the local list's word: a provisional id until the gateway numbers it.
            self._provisional -= 1
            tx_id: TxId = self._provisional
            self._send_later("StartTransaction", payload, connector, tx_id, at, meter_start)
            self._begin(connector, tx_id, id_tag, car_max_a, car_phases, car)
        else:
            message = self._send_later("StartTransaction", payload, connector, None, at, meter_start, answer=True)
            self._starting.add(connector)
            try:
                result = await self._answer_to(message)
            finally:
                self._starting.discard(connector)
            if result is None:
                self.outbox.withdraw(message)
                raise SimChargerError(f"sim {self.id}: the gateway went before the start on connector {connector} was answered")
            tx_id = result.transaction_id
            self._begin(connector, tx_id, id_tag, car_max_a, car_phases, car)
            if result.id_tag_info["status"] != "Accepted":
                await self._refused_at_start(connector, tx_id, result.id_tag_info["status"])
        await self.set_status(connector, charging_status(self.applied_a(connector), getattr(car, "full", False)))
        return tx_id

    def _answered(self, message: TxMessage, result: Any) -> TxId:
        if message.action != "StartTransaction":
            assert message.transaction_id is not None
            return message.transaction_id
        tx_id: int = result.transaction_id
        provisional = message.transaction_id
        if provisional is not None:  # started offline: what waits behind it gets the gateway's id
            for later in self.outbox.pending():
                if later.transaction_id == provisional:
                    later.transaction_id = later.payload.transaction_id = tx_id
            for connector, running in self.transactions.items():
                if running == provisional:
                    self.transactions[connector] = tx_id
            status = result.id_tag_info["status"]
            if status != "Accepted":
                self._deauthorize_later(message.connector, tx_id, status)
        return tx_id

    def _stop_message(self, connector: int, tx_id: TxId, reason: str, tag: str | None, meter_wh: int, at: str) -> TxMessage:
        final = {
            "timestamp": at,
            "sampledValue": [
                {"value": str(meter_wh), "context": "Transaction.End", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
            ],
        }
        payload = call.StopTransaction(
            meter_stop=meter_wh, timestamp=at, transaction_id=tx_id, reason=reason, id_tag=tag, transaction_data=[final],
        )
        return self._send_later("StopTransaction", payload, connector, tx_id, at, meter_wh, answer=True)

    def _reading_due(self, connector: int) -> None:
        at, register_wh, payload = self._meter_values(connector)
        self._send_later("MeterValues", payload, connector, self.transactions[connector], at, register_wh)

    def _meter_values(self, connector: int) -> tuple[str, float, Any]:
        """A MeterValues request with the connector's reading now; its timestamp and register (Wh) as sent."""
        power_w, currents = self._reading(connector)
        values = sampled_values(power_w, currents, self.energy_wh[connector], self.offered_a(connector))
        at = now_text()
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
        now = utcnow()
        tx_id, tx_start = self.transactions.get(connector_id), self._tx_start.get(connector_id)
        periods = self.profiles.composite(connector_id, now, duration, tx_id, tx_start, self.max_current_a, self.phases)
        schedule = composite_schedule(periods, duration, wire_ts(now), charging_rate_unit or "A", self.phases)
        return call_result.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=wire_ts(now), charging_schedule=schedule
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

    @on(Action.send_local_list)
    def on_send_local_list(self, list_version: int, update_type: str, local_authorization_list: list[dict[str, Any]] | None = None, **_: Any) -> Any:
        entries: list[tuple[str, ListEntry | None]] = []
        for item in local_authorization_list or []:
            info = item.get("id_tag_info")
            entry = None if info is None else ListEntry(info["status"], parse_ts_or_none(info.get("expiry_date")))
            entries.append((item["id_tag"], entry))
        return call_result.SendLocalList(status=self.authorization.update(list_version, update_type, entries))

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> Any:
        return call_result.GetLocalListVersion(list_version=self.authorization.version)

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> Any:
        self._later(lambda: self._reset(f"{type}Reset"))
        return call_result.Reset(status="Accepted")

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
