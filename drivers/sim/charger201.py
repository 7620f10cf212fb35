"""A simulated OCPP 2.0.1 charging station, for the demo and the tests: the same charger as
`drivers.sim.charger16` (reaction time, profiles that run out, outbox replay while the gateway is
gone, cars, meter, reboot on Reset, local authorization list) speaking 2.0.1 over `ocpp2.0.1`.

Each EVSE has one connector; EVSE ids are the connectors 1..n. The station names its
transactions itself (a uuid) and reports them through TransactionEvent Started/Updated/Ended,
numbered by seqNo from 0, `offline` when they happened while the gateway was gone. It sends
periodic readings (Updated, MeterValuePeriodic) only once the gateway set
SampledDataCtrlr.TxUpdatedInterval; the measurands are the device model's. Statuses are kept in
OCPP 1.6 words (see `drivers.sim.charger_core`) and reported as 2.0.1 connector statuses and
charging states.

Kept in one file past 400 lines: it is one version's wire layer, like `charger16.py`; what both
versions share is in `charger_core.py`, `charger_link.py`, `profiles.py` and `charger_math.py`.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from drivers.contract.clock import parse_ts_or_none, wire_ts
from drivers.sim.charger_core import Car, SimChargerCore, TxId, now_text, utcnow
from drivers.sim.charger_link import logger
from drivers.sim.charger_math import charging_status, sampled_values, sampled_values201
from drivers.sim.outbox import ListEntry, SimChargerError, TxMessage
from drivers.sim.profiles import (
    Profile,
    composite_schedule201,
    parse_profile201,
    profile_wire201,
    purpose201,
)

__all__ = ["DeviceModel", "SimCharger201"]

ENERGY = "Energy.Active.Import.Register"
MEASURANDS = ("Current.Import", "Power.Active.Import", ENERGY, "Current.Offered")  # what the meter can sample
_PLAIN_STATUS = {"Available": "Available", "Reserved": "Reserved", "Unavailable": "Unavailable", "Faulted": "Faulted"}
# A connector status in 1.6 words -> the transaction's chargingState while one runs.
_CHARGING_STATE = {"Charging": "Charging", "SuspendedEV": "SuspendedEV", "SuspendedEVSE": "SuspendedEVSE", "Preparing": "EVConnected"}
_REASONS = ("DeAuthorized", "EmergencyStop", "EVDisconnected", "ImmediateReset", "Local", "PowerLoss", "Reboot", "Remote", "Other")
_TRIGGER_OF_STOP = {
    "Local": "StopAuthorized", "EVDisconnected": "EVCommunicationLost", "Remote": "RemoteStop",
    "DeAuthorized": "Deauthorized", "ImmediateReset": "ResetCommand",
}


def connector_status(status: str) -> str:
    """A connector status in 1.6 words as a 2.0.1 connectorStatus: a car plugged in is Occupied."""
    return _PLAIN_STATUS.get(status, "Occupied")


class DeviceModel:
    """The few components and variables of the station the gateway may read and set (2.0.1 B05-B07).

    Values are strings, as on the wire; `set` checks a value before it takes it.
    """

    READ_ONLY = frozenset({"ChargingStation.PhaseRotation"})

    def __init__(self) -> None:
        self.values: dict[str, str] = {
            "SampledDataCtrlr.TxUpdatedInterval": "0",  # 0: no periodic readings until the gateway asks
            "SampledDataCtrlr.TxUpdatedMeasurands": ENERGY,
            "SampledDataCtrlr.TxStartedMeasurands": ENERGY,
            "SampledDataCtrlr.TxEndedMeasurands": ENERGY,
            "OCPPCommCtrlr.HeartbeatInterval": "300",
            "ChargingStation.PhaseRotation": "RST",
            "LocalAuthListCtrlr.Enabled": "true",
            "AuthCtrlr.LocalAuthorizeOffline": "true",
            "AuthCtrlr.AuthorizeRemoteStart": "false",
            "TxCtrlr.StopTxOnInvalidId": "true",
            "SmartChargingCtrlr.Enabled": "true",
        }

    def get(self, component: str, variable: str) -> tuple[str, str | None]:
        """(attributeStatus, value) of a GetVariables entry."""
        key = f"{component}.{variable}"
        if key in self.values:
            return "Accepted", self.values[key]
        return ("UnknownVariable" if self._known(component) else "UnknownComponent"), None

    def set(self, component: str, variable: str, value: str) -> str:
        """The attributeStatus of a SetVariables entry; the value is taken only when Accepted."""
        key = f"{component}.{variable}"
        if key not in self.values:
            return "UnknownVariable" if self._known(component) else "UnknownComponent"
        if key in self.READ_ONLY or not _valid(variable, value):
            return "Rejected"
        self.values[key] = value
        return "Accepted"

    def seconds(self, key: str) -> float:
        """An interval variable (s); the simulator also takes fractions, for fast tests."""
        return float(self.values[key])

    def measurands(self, key: str) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.values[key].split(",") if m.strip())

    def _known(self, component: str) -> bool:
        return any(k.startswith(component + ".") for k in self.values)


def _valid(variable: str, value: str) -> bool:
    if variable.endswith("Interval"):
        try:
            seconds = float(value)
        except ValueError:
            return False
        return 0 <= seconds < 86_400 and (seconds > 0 or variable != "HeartbeatInterval")
    if variable.endswith("Measurands"):
        return all(m.strip() in MEASURANDS for m in value.split(",")) if value.strip() else True
    if variable in ("Enabled", "LocalAuthorizeOffline", "AuthorizeRemoteStart", "StopTxOnInvalidId"):
        return value in ("true", "false")
    return True


class SimCharger201(SimChargerCore, ChargePoint):
    """One simulated OCPP 2.0.1 charging station; `run` keeps it connected until cancelled."""

    subprotocol = "ocpp2.0.1"

    def __init__(self, url_base: str, charger_id: str, connectors: int = 2, **options: Any) -> None:
        """Options: max_current_a, phases, password, meter_interval_s, reaction_s (see SimChargerCore)."""
        super().__init__(url_base, charger_id, connectors, **options)
        self.device = DeviceModel()
        self._boot_reason = "PowerUp"
        self._seq: dict[str, int] = {}  # transaction -> the seqNo of its next event
        self._charging_states: dict[int, str] = {}  # connector -> the chargingState last reported
        self._reported: dict[int, str] = {}  # connector -> the connectorStatus last sent on this link
        self._reset_when_idle = False
        self._inoperative_after: set[int] = set()  # EVSEs to become Unavailable once their car leaves

    @property
    def configuration(self) -> dict[str, str]:
        """The device model: "Component.Variable" -> value."""
        return self.device.values

    # --- messages to the gateway ------------------------------------------------------------------

    async def _boot(self) -> None:
        self._reported.clear()
        while True:
            result = await self.call(
                call.BootNotification(
                    charging_station={"model": "SimCharger", "vendorName": "laadplein", "firmwareVersion": "sim-1"},
                    reason=self._boot_reason,
                ),
                suppress=False,
            )
            if result.interval > 0:
                self.heartbeat_interval_s = float(result.interval)
            if result.status == "Accepted":
                self._boot_reason = "PowerUp"
                return
            await asyncio.sleep(max(1.0, min(self.heartbeat_interval_s, 10.0)))

    async def _heartbeat_once(self) -> None:
        await self.call(call.Heartbeat(), suppress=False)

    async def _status(self, connector: int, status: str, error_code: str = "NoError", *, force: bool = False) -> None:
        """StatusNotification when the connector's 2.0.1 status changed since the last one sent (or `force`)."""
        reported = connector_status(status)
        if not force and self._reported.get(connector) == reported:
            return
        await self.call(
            call.StatusNotification(timestamp=now_text(), connector_status=reported, evse_id=connector, connector_id=1),
            suppress=False,
        )
        self._reported[connector] = reported

    async def _authorize(self, id_tag: str) -> str:
        result = await self.call(call.Authorize(id_token=_id_token(id_tag)), suppress=False)
        return str(result.id_token_info["status"])

    async def _start(
        self, connector: int, id_tag: str, car_max_a: float, car_phases: int, car: Car | None = None,
        *, trigger: str = "Authorized", remote_start_id: int | None = None,
    ) -> TxId:
        tx_id = str(uuid.uuid4())
        self._seq[tx_id] = 0
        self._begin(connector, tx_id, id_tag, car_max_a, car_phases, car)
        self._charging_states[connector] = "EVConnected"
        message = self._event(
            connector, tx_id, "Started", trigger, "StartTransaction", sampled=("TxStartedMeasurands", "Transaction.Begin"),
            id_tag=id_tag, answer=self.connected, chargingState="EVConnected", remoteStartId=remote_start_id,
        )
        if message.answer is not None:
            try:
                result = await self._answer_to(message)
            except SimChargerError as exc:  # the station started it: it charges whatever became of the message
                logger.warning("sim %s: %s", self.id, exc)
                result = None
            if result is not None:
                self._start_at_limit(connector)  # a lease that came with the answer holds from the start
                status = (result.id_token_info or {}).get("status", "Accepted")
                if status != "Accepted":
                    await self._refused_at_start(connector, tx_id, status)
        await self.set_status(connector, charging_status(self.applied_a(connector), getattr(car, "full", False)))
        return tx_id

    def _sampled(self, connector: int, measurands: tuple[str, ...] | None, context: str | None) -> tuple[float, list[dict[str, Any]]]:
        """The connector's energy register now (Wh, as reported) and its sampled values of `measurands` (None: all)."""
        power_w, currents = self._reading(connector)
        values = sampled_values(power_w, currents, self.energy_wh[connector], self.offered_a(connector))
        register_wh = float(next(v["value"] for v in values if v["measurand"] == ENERGY))
        return register_wh, sampled_values201(values, measurands, context)

    def _event(
        self, connector: int, tx_id: str, event_type: str, trigger: str, action: str, *, sampled: tuple[str, str] | None = None,
        id_tag: str | None = None, answer: bool = False, **info: Any,
    ) -> TxMessage:
        """Queue a TransactionEvent of a transaction on the connector, numbered and stamped now.

        `sampled`: (the SampledDataCtrlr variable naming the measurands, the reading's context) for a
        meterValue; `info`: more of transactionInfo (camelCase; None leaves a field out).
        """
        measurands = () if sampled is None else self.device.measurands(f"SampledDataCtrlr.{sampled[0]}")
        register_wh, samples = self._sampled(connector, measurands, None if sampled is None else sampled[1])
        at = now_text()
        seq_no = self._seq[tx_id]
        self._seq[tx_id] = seq_no + 1
        payload = call.TransactionEvent(
            event_type=event_type,
            timestamp=at,
            trigger_reason=trigger,
            seq_no=seq_no,
            transaction_info={"transactionId": tx_id} | {k: v for k, v in info.items() if v is not None},
            meter_value=[{"timestamp": at, "sampledValue": samples}] if samples else None,
            offline=None if self.connected else True,
            evse={"id": connector, "connectorId": 1},
            id_token=_id_token(id_tag) if id_tag is not None else None,
        )
        return self._send_later(action, payload, connector, tx_id, at, register_wh, answer=answer)

    def _answered(self, message: TxMessage, result: Any) -> TxId:
        assert message.transaction_id is not None
        status = (result.id_token_info or {}).get("status")
        # A start someone waits for is the waiter's business; a stop is past refusing.
        if status not in (None, "Accepted") and message.answer is None and message.action != "StopTransaction":
            self._deauthorize_later(message.connector, message.transaction_id, status)
        return message.transaction_id

    def _stop_message(self, connector: int, tx_id: TxId, reason: str, tag: str | None, meter_wh: int, at: str) -> TxMessage:
        reason = {"HardReset": "ImmediateReset", "SoftReset": "ImmediateReset"}.get(reason, reason)
        reason = reason if reason in _REASONS else "Other"
        message = self._event(
            connector, str(tx_id), "Ended", _TRIGGER_OF_STOP.get(reason, "AbnormalCondition"), "StopTransaction",
            sampled=("TxEndedMeasurands", "Transaction.End"), answer=True,
            chargingState="Idle" if reason == "EVDisconnected" else "EVConnected", stoppedReason=reason,
        )
        self._seq.pop(str(tx_id), None)
        self._charging_states.pop(connector, None)
        return message

    def _reading_due(self, connector: int) -> None:
        if self.device.seconds("SampledDataCtrlr.TxUpdatedInterval") > 0:
            self._event(connector, str(self.transactions[connector]), "Updated", "MeterValuePeriodic", "MeterValues",
                        sampled=("TxUpdatedMeasurands", "Sample.Periodic"))

    def _status_changed(self, connector: int, status: str) -> None:
        self._charging_state(connector, status)

    def _charging_state(self, connector: int, status: str) -> None:
        """A new charging state of a running transaction is a transaction event (it waits in the outbox)."""
        state = _CHARGING_STATE.get(status)
        if connector not in self.transactions or state is None or self._charging_states.get(connector) == state:
            return
        self._charging_states[connector] = state
        self._event(connector, str(self.transactions[connector]), "Updated", "ChargingStateChanged", "StatusNotification",
                    chargingState=state)

    async def _send_meter_values(self, connector: int) -> None:
        """A reading the gateway asked for (TriggerMessage): MeterValues, sent at once, not queued."""
        reading = {"timestamp": now_text(), "sampledValue": self._sampled(connector, None, "Trigger")[1]}
        await self.call(call.MeterValues(evse_id=connector, meter_value=[reading]), suppress=False)

    async def stop(self, connector: int, reason: str = "Local") -> None:
        await super().stop(connector, reason)
        if self._reset_when_idle and not self.transactions and self.connected:  # Reset OnIdle waited for this
            self._reset_when_idle = False
            self._boot_reason = "RemoteReset"
            self._queue(lambda: self._reset("ImmediateReset"))

    async def unplug(self, connector: int) -> None:
        await super().unplug(connector)
        if connector in self._inoperative_after:
            self._inoperative_after.discard(connector)
            await self.set_status(connector, "Unavailable")

    # --- the gateway's requests: answer at once, follow up from the worker -------------------------

    def _evses(self, evse: dict[str, Any] | None) -> list[int] | None:
        """The EVSEs a request names (all when none); None when it names one the station lacks."""
        if evse is None or evse.get("id", 0) == 0:
            return sorted(self.statuses)
        return [evse["id"]] if evse["id"] in self.statuses and evse.get("connector_id", 1) == 1 else None

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any) -> Any:
        evses = self._evses(evse)
        if evses is None:
            return call_result.TriggerMessage(status="Rejected")
        if requested_message == "StatusNotification":
            for c in evses:
                self._later(lambda c=c: self._status(c, self.statuses[c], force=True))
        elif requested_message == "MeterValues":
            for c in evses:
                self._later(lambda c=c: self._send_meter_values(c))
        elif requested_message == "TransactionEvent":
            running = [c for c in evses if c in self.transactions]
            if not running:
                return call_result.TriggerMessage(status="Rejected")
            for c in running:
                self._later(lambda c=c: self._triggered_event(c))
        elif requested_message == "Heartbeat":
            self._later(self._heartbeat_once)
        elif requested_message == "BootNotification":
            self._boot_reason = "Triggered"
            self._later(self._boot)
        else:
            return call_result.TriggerMessage(status="NotImplemented")
        return call_result.TriggerMessage(status="Accepted")

    async def _triggered_event(self, connector: int) -> None:
        if connector in self.transactions:
            self._event(connector, str(self.transactions[connector]), "Updated", "Trigger", "MeterValues",
                        sampled=("TxUpdatedMeasurands", "Trigger"))

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        try:
            profile = parse_profile201(charging_profile)
        except ValueError as exc:
            logger.info("sim %s: charging profile rejected: %s", self.id, exc)
            return call_result.SetChargingProfile(status="Rejected")
        status = self.profiles.install(evse_id, profile, self.transactions.get(evse_id))
        self._update_limits()
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, charging_profile_id: int | None = None, charging_profile_criteria: dict[str, Any] | None = None, **_: Any) -> Any:
        criteria = charging_profile_criteria or {}
        removed = self.profiles.clear(
            charging_profile_id, criteria.get("evse_id"), purpose201(criteria.get("charging_profile_purpose")), criteria.get("stack_level")
        )
        self._update_limits()
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_charging_profiles)
    def on_get_charging_profiles(self, request_id: int, charging_profile: dict[str, Any], evse_id: int | None = None, **_: Any) -> Any:
        """K09: the profiles matching the criteria, reported afterwards (ReportChargingProfiles per EVSE)."""
        ids = charging_profile.get("charging_profile_id")
        sources = charging_profile.get("charging_limit_source")
        if sources is not None and "CSO" not in sources:
            return call_result.GetChargingProfiles(status="NoProfiles")  # every profile here was set by a CSMS
        purpose = purpose201(charging_profile.get("charging_profile_purpose"))
        stack = charging_profile.get("stack_level")
        held: dict[int, list[Profile]] = {}
        for c in range(self.connectors + 1):
            for p in self.profiles.profiles(c):
                if evse_id in (None, c) and (not ids or p.profile_id in ids) and purpose in (None, p.purpose) and stack in (None, p.stack_level):
                    held.setdefault(c, []).append(p)
        if not held:
            return call_result.GetChargingProfiles(status="NoProfiles")
        self._later(lambda: self._report_profiles(request_id, held))
        return call_result.GetChargingProfiles(status="Accepted")

    async def _report_profiles(self, request_id: int, held: dict[int, list[Profile]]) -> None:
        last = max(held)
        for evse, profiles in sorted(held.items()):
            await self.call(call.ReportChargingProfiles(
                request_id=request_id, charging_limit_source="CSO", evse_id=evse, tbc=evse != last,
                charging_profile=[profile_wire201(p) for p in profiles]), suppress=False)

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, duration: int, evse_id: int, charging_rate_unit: str | None = None, **_: Any) -> Any:
        if not 0 <= evse_id <= self.connectors:
            return call_result.GetCompositeSchedule(status="Rejected")
        now = utcnow()
        tx_id, tx_start = self.transactions.get(evse_id), self._tx_start.get(evse_id)
        periods = self.profiles.composite(evse_id, now, duration, tx_id, tx_start, self.max_current_a, self.phases)
        schedule = composite_schedule201(periods, duration, evse_id, wire_ts(now), charging_rate_unit or "A", self.phases)
        return call_result.GetCompositeSchedule(status="Accepted", schedule=schedule)

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in get_variable_data:
            component, variable = item["component"], item["variable"]
            if item.get("attribute_type", "Actual") != "Actual":
                status, value = "NotSupportedAttributeType", None
            else:
                status, value = self.device.get(component["name"], variable["name"])
            result = {"attribute_status": status, "component": component, "variable": variable}
            results.append(result | ({"attribute_value": value} if value is not None else {}))
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in set_variable_data:
            component, variable = item["component"], item["variable"]
            if item.get("attribute_type", "Actual") != "Actual":
                status = "NotSupportedAttributeType"
            else:
                status = self.device.set(component["name"], variable["name"], item["attribute_value"])
            results.append({"attribute_status": status, "component": component, "variable": variable})
        interval_s = self.device.seconds("SampledDataCtrlr.TxUpdatedInterval")
        if interval_s > 0:
            self.meter_interval_s = interval_s
        self.heartbeat_interval_s = self.device.seconds("OCPPCommCtrlr.HeartbeatInterval")
        return call_result.SetVariables(set_variable_result=results)

    @on(Action.send_local_list)
    def on_send_local_list(self, version_number: int, update_type: str, local_authorization_list: list[dict[str, Any]] | None = None, **_: Any) -> Any:
        entries: list[tuple[str, ListEntry | None]] = []
        for item in local_authorization_list or []:
            info = item.get("id_token_info")
            entry = None if info is None else ListEntry(info["status"], parse_ts_or_none(info.get("cache_expiry_date_time")))
            entries.append((item["id_token"]["id_token"], entry))
        return call_result.SendLocalList(status=self.authorization.update(version_number, update_type, entries))

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> Any:
        return call_result.GetLocalListVersion(version_number=self.authorization.version)

    @on(Action.reset)
    def on_reset(self, type: str, evse_id: int | None = None, **_: Any) -> Any:
        if evse_id:
            return call_result.Reset(status="Rejected")  # an EVSE on its own cannot reboot
        if type == "OnIdle" and self.transactions:
            self._reset_when_idle = True
            return call_result.Reset(status="Scheduled")
        self._boot_reason = "RemoteReset"
        self._later(lambda: self._reset("ImmediateReset"))
        return call_result.Reset(status="Accepted")

    @on(Action.change_availability)
    def on_change_availability(self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any) -> Any:
        evses = self._evses(evse)
        if evses is None:
            return call_result.ChangeAvailability(status="Rejected")
        busy = [c for c in evses if c in self.transactions or self.statuses[c] not in ("Available", "Unavailable")]
        for c in evses:
            if operational_status == "Inoperative" and c in busy:
                self._inoperative_after.add(c)
            else:
                self._inoperative_after.discard(c)
                if c not in busy:
                    wanted = "Unavailable" if operational_status == "Inoperative" else "Available"
                    self._later(lambda c=c, s=wanted: self.set_status(c, s))
        return call_result.ChangeAvailability(status="Scheduled" if operational_status == "Inoperative" and busy else "Accepted")

    @on(Action.unlock_connector)
    def on_unlock_connector(self, evse_id: int, connector_id: int, **_: Any) -> Any:
        if evse_id not in self.statuses or connector_id != 1:
            return call_result.UnlockConnector(status="UnknownConnector")
        if evse_id in self.transactions:
            return call_result.UnlockConnector(status="OngoingAuthorizedTransaction")
        return call_result.UnlockConnector(status="Unlocked")

    @on(Action.request_start_transaction)
    def on_request_start_transaction(self, id_token: dict[str, Any], remote_start_id: int, evse_id: int | None = None, **_: Any) -> Any:
        free = [c for c in sorted(self.statuses) if c not in self.transactions and evse_id in (None, c)
                and self.statuses[c] not in ("Unavailable", "Faulted")]
        if not free:
            return call_result.RequestStartTransaction(status="Rejected")
        connector, tag = free[0], str(id_token["id_token"])

        async def start() -> None:
            await self.set_status(connector, "Preparing")
            await self._start(connector, tag, self.max_current_a, self.phases, trigger="RemoteStart", remote_start_id=remote_start_id)

        self._later(start)
        return call_result.RequestStartTransaction(status="Accepted")

    @on(Action.request_stop_transaction)
    def on_request_stop_transaction(self, transaction_id: str, **_: Any) -> Any:
        connectors = [c for c, tx in self.transactions.items() if tx == transaction_id]
        if not connectors:
            return call_result.RequestStopTransaction(status="Rejected")
        self._later(lambda: self.stop(connectors[0], reason="Remote"))
        return call_result.RequestStopTransaction(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")


def _id_token(tag: str) -> dict[str, str]:
    return {"idToken": tag, "type": "ISO14443"}
