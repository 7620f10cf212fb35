"""The simulated OCPP 2.0.1 station against a small CSMS (ocpp.v201, which checks every message
against the 2.0.1 schemas both ways) on 127.0.0.1 that can go away and come back; and the local
authorization list, which the 1.6 charger keeps the same way.

The pure parts first (the device model, the local list), then the station on the wire.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.server import ServerConnection

from config.loader import load_config_text
from drivers.contract.clock import wire_ts
from drivers.sim.charger16 import SimCharger
from drivers.sim.charger201 import DeviceModel, SimCharger201, connector_status
from drivers.sim.outbox import ListEntry, LocalList, SimChargerError
from drivers.sim.square import SimSquare
from hil_tests.rig import mixed_versions
from tests.integration import sim_rig
from tests.integration.sim_rig import eventually, open_rig

pytestmark = pytest.mark.integration

REACTION_S = 0.3
_quiet = logging.getLogger("tests.csms")
_quiet.setLevel(logging.CRITICAL)
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


# --- the pure parts --------------------------------------------------------------------------


def test_the_device_model_knows_its_variables_and_checks_values() -> None:
    model = DeviceModel()
    assert model.get("SampledDataCtrlr", "TxUpdatedInterval") == ("Accepted", "0")
    assert model.get("ChargingStation", "PhaseRotation") == ("Accepted", "RST")
    assert model.get("SampledDataCtrlr", "Nonsense") == ("UnknownVariable", None)
    assert model.get("NoSuchCtrlr", "Enabled") == ("UnknownComponent", None)
    assert model.set("SampledDataCtrlr", "TxUpdatedInterval", "5") == "Accepted"
    assert model.seconds("SampledDataCtrlr.TxUpdatedInterval") == 5.0
    for bad in ("-1", "soon", "1e9"):
        assert model.set("SampledDataCtrlr", "TxUpdatedInterval", bad) == "Rejected"
    assert model.set("OCPPCommCtrlr", "HeartbeatInterval", "0") == "Rejected"
    assert model.set("SampledDataCtrlr", "TxUpdatedMeasurands", "Current.Import,Voltage") == "Rejected"
    assert model.set("SampledDataCtrlr", "TxUpdatedMeasurands", "Current.Import, Energy.Active.Import.Register") == "Accepted"
    assert model.measurands("SampledDataCtrlr.TxUpdatedMeasurands") == ("Current.Import", "Energy.Active.Import.Register")
    assert model.set("ChargingStation", "PhaseRotation", "TSR") == "Rejected"  # read-only
    assert model.set("LocalAuthListCtrlr", "Enabled", "maybe") == "Rejected"
    assert model.seconds("SampledDataCtrlr.TxUpdatedInterval") == 5.0  # a refused value changes nothing


def test_connector_statuses_in_2_0_1_words() -> None:
    assert [connector_status(s) for s in ("Available", "Preparing", "Charging", "SuspendedEV", "Finishing", "Faulted")] == [
        "Available", "Occupied", "Occupied", "Occupied", "Occupied", "Faulted"]


def test_the_local_list_full_and_differential() -> None:
    box = LocalList()
    assert box.version == 0 and box.status("A", T0) is None
    entries = [("A", ListEntry("Accepted")), ("B", ListEntry("Blocked")), ("C", ListEntry("Accepted", T0))]
    assert box.update(3, "Full", entries) == "Accepted" and box.version == 3
    assert [box.status(t, T0 - timedelta(seconds=1)) for t in "ABCD"] == ["Accepted", "Blocked", "Accepted", None]
    assert box.status("C", T0) == "Expired"  # its entry ran out
    assert box.update(3, "Differential", [("D", ListEntry("Accepted"))]) == "VersionMismatch"
    assert box.update(4, "Differential", [("D", ListEntry("Accepted")), ("A", None), ("B", ListEntry("Accepted"))]) == "Accepted"
    assert {t: e.status for t, e in box.entries.items()} == {"B": "Accepted", "C": "Accepted", "D": "Accepted"}
    for bad in ([("E", None)], [("E", ListEntry("Accepted")), ("E", ListEntry("Blocked"))]):
        assert box.update(5, "Full", bad) == "Failed"
    assert box.update(5, "Sometimes", []) == "Failed" and box.version == 4
    assert box.update(1, "Full", [("Z", ListEntry("Accepted"))]) == "Accepted"  # a full list may start over
    assert list(box.entries) == ["Z"] and box.version == 1


def test_a_square_builds_each_charger_in_its_version_and_the_rig_mixes_them() -> None:
    ids = ["CP03", "CP01", "CP04", "CP02"]
    text = '[site]\nid = "t"\nname = "t"\ntimezone = "Europe/Amsterdam"\n[grid]\nphases = 3\nlimit_a = 80\n' + "".join(
        f'[[chargers]]\nid = "{c}"\nmax_current_a = 32\nconnectors = 1\n[[bays]]\nid = "B{c}"\ncharger = "{c}"\nconnector = 1\n' for c in ids)
    cfg = load_config_text(text)
    versions = mixed_versions(ids)
    assert versions == {"CP01": "ocpp1.6", "CP02": "ocpp2.0.1", "CP03": "ocpp1.6", "CP04": "ocpp2.0.1"}
    square = SimSquare(cfg, [], control_port=None, ocpp_versions=versions)
    assert {c: type(s) for c, s in square.chargers.items()} == {
        "CP01": SimCharger, "CP02": SimCharger201, "CP03": SimCharger, "CP04": SimCharger201}
    assert {c: s.subprotocol for c, s in SimSquare(cfg, [], control_port=None).chargers.items()} == dict.fromkeys(ids, "ocpp1.6")
    for wrong in ({"CP09": "ocpp2.0.1"}, {"CP01": "ocpp2.1"}):
        with pytest.raises(ValueError, match="ocpp_versions"):
            SimSquare(cfg, [], control_port=None, ocpp_versions=wrong)


# --- a CSMS that goes away and comes back ------------------------------------------------------


@dataclass
class Heard(sim_rig.Heard):
    """What the CSMSs heard, and which tags they refuse."""

    blocked: set[str] = field(default_factory=set)  # tags refused in the answer to a TransactionEvent

    def events(self, tx: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.of("TransactionEvent") if tx in (None, p["transaction_info"]["transaction_id"])]


class Csms(ChargePoint):
    """The CSMS side of one station connection: answers everything, records what it heard."""

    def __init__(self, charger_id: str, connection: ServerConnection, heard: Heard) -> None:
        super().__init__(charger_id, connection, logger=_quiet)
        self.heard = heard

    @on(Action.boot_notification)
    def on_boot(self, **kw: Any) -> Any:
        self.heard.frames.append(("BootNotification", kw))
        return call_result.BootNotification(current_time=wire_ts(datetime.now(UTC)), interval=300, status="Accepted")

    @on(Action.heartbeat)
    def on_heartbeat(self, **kw: Any) -> Any:
        self.heard.frames.append(("Heartbeat", kw))
        return call_result.Heartbeat(current_time=wire_ts(datetime.now(UTC)))

    @on(Action.status_notification)
    def on_status(self, **kw: Any) -> Any:
        self.heard.frames.append(("StatusNotification", kw))
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, **kw: Any) -> Any:
        self.heard.frames.append(("Authorize", kw))
        return call_result.Authorize(id_token_info={"status": "Accepted"})

    @on(Action.transaction_event)
    def on_transaction_event(self, **kw: Any) -> Any:
        self.heard.frames.append(("TransactionEvent", kw))
        if "id_token" not in kw:
            return call_result.TransactionEvent()
        status = "Blocked" if kw["id_token"]["id_token"] in self.heard.blocked else "Accepted"
        return call_result.TransactionEvent(id_token_info={"status": status})

    @on(Action.meter_values)
    def on_meter_values(self, **kw: Any) -> Any:
        self.heard.frames.append(("MeterValues", kw))
        return call_result.MeterValues()


Rig = sim_rig.Rig[Heard, SimCharger201, Csms]


def rig(**sim_options: Any) -> AbstractAsyncContextManager[Rig]:
    options = {"meter_interval_s": 0.1, "reaction_s": REACTION_S, **sim_options}
    return open_rig(Csms, "ocpp2.0.1", Heard(), lambda url: SimCharger201(url, "CS01", **options))


async def report_readings(r: Rig, interval_s: float = 0.1, measurands: str = "Current.Import,Energy.Active.Import.Register") -> None:
    answer = await r.send(call.SetVariables(set_variable_data=[
        variable("SampledDataCtrlr", "TxUpdatedInterval", str(interval_s)),
        variable("SampledDataCtrlr", "TxUpdatedMeasurands", measurands),
    ]))
    assert [result["attribute_status"] for result in answer.set_variable_result] == ["Accepted", "Accepted"]


def variable(component: str, name: str, value: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"component": {"name": component}, "variable": {"name": name}}
    return item | ({"attributeValue": value} if value is not None else {})


def profile201(profile_id: int, purpose: str, limit_a: float, *, stack: int, start: datetime,
               duration_s: int | None = None, tx: str | None = None) -> dict[str, Any]:
    schedule: dict[str, Any] = {"id": profile_id, "chargingRateUnit": "A", "startSchedule": wire_ts(start),
                                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_a}]}
    if duration_s is not None:
        schedule["duration"] = duration_s
    body = {"id": profile_id, "stackLevel": stack, "chargingProfilePurpose": purpose, "chargingProfileKind": "Absolute",
            "chargingSchedule": [schedule]}
    return body | ({"transactionId": tx} if tx is not None else {})


def local_list(version: int, entries: dict[str, str], update_type: str = "Full") -> Any:
    return call.SendLocalList(version_number=version, update_type=update_type, local_authorization_list=[
        {"idToken": {"idToken": tag, "type": "ISO14443"}, "idTokenInfo": {"status": status}} for tag, status in entries.items()])


def statuses(heard: Heard) -> list[tuple[int, str]]:
    return [(p["evse_id"], p["connector_status"]) for p in heard.of("StatusNotification")]


def energy_of(event: dict[str, Any]) -> float:
    (reading,) = event["meter_value"]
    return next(v["value"] for v in reading["sampled_value"] if v.get("measurand") == "Energy.Active.Import.Register")


# --- the station on the wire -----------------------------------------------------------------


async def test_boot_statuses_and_the_device_model() -> None:
    async with rig() as r:
        (boot,) = r.heard.of("BootNotification")
        assert boot["reason"] == "PowerUp" and boot["charging_station"]["model"] == "SimCharger"
        assert boot["charging_station"]["vendor_name"] == "laadplein"
        assert statuses(r.heard) == [(1, "Available"), (2, "Available")]
        assert all(p["connector_id"] == 1 for p in r.heard.of("StatusNotification"))

        assert (await r.send(call.TriggerMessage(requested_message="StatusNotification", evse={"id": 2}))).status == "Accepted"
        await eventually(lambda: len(statuses(r.heard)) == 3)
        assert statuses(r.heard)[-1] == (2, "Available")
        assert (await r.send(call.TriggerMessage(requested_message="StatusNotification", evse={"id": 3}))).status == "Rejected"
        assert (await r.send(call.TriggerMessage(requested_message="Heartbeat"))).status == "Accepted"
        await eventually(lambda: len(r.heard.of("Heartbeat")) == 1)

        got = await r.send(call.GetVariables(get_variable_data=[
            variable("ChargingStation", "PhaseRotation"), variable("LocalAuthListCtrlr", "Enabled"),
            variable("SampledDataCtrlr", "Nonsense"), variable("NoSuchCtrlr", "Enabled")]))
        assert [(g["attribute_status"], g.get("attribute_value")) for g in got.get_variable_result] == [
            ("Accepted", "RST"), ("Accepted", "true"), ("UnknownVariable", None), ("UnknownComponent", None)]
        answer = await r.send(call.SetVariables(set_variable_data=[
            variable("OCPPCommCtrlr", "HeartbeatInterval", "0.2"), variable("ChargingStation", "PhaseRotation", "TSR")]))
        assert [s["attribute_status"] for s in answer.set_variable_result] == ["Accepted", "Rejected"]
        await eventually(lambda: len(r.heard.of("Heartbeat")) >= 3)  # the new interval is in force
        assert (await r.send(call.DataTransfer(vendor_id="acme"))).status == "UnknownVendorId"


async def test_a_transaction_reports_started_updated_ended_with_rising_seq_no() -> None:
    async with rig() as r:
        tx = await r.sim.plug_in(1, id_tag="04A1B2")
        assert isinstance(tx, str) and len(tx) == 36 and r.sim.transactions == {1: tx}
        await asyncio.sleep(0.5)  # five meter intervals: the CSMS has not asked for readings yet
        assert [e["trigger_reason"] for e in r.heard.events(tx)] == ["Authorized", "ChargingStateChanged"]

        await report_readings(r)
        await eventually(lambda: sum(e["trigger_reason"] == "MeterValuePeriodic" for e in r.heard.events(tx)) >= 3)
        await r.sim.stop(1)
        await r.sim.unplug(1)
        await eventually(lambda: statuses(r.heard)[-1] == (1, "Available"))

        events = r.heard.events(tx)
        assert [e["seq_no"] for e in events] == list(range(len(events)))
        started, state, *updates, ended = events
        assert started["event_type"] == "Started" and started["id_token"] == {"id_token": "04A1B2", "type": "ISO14443"}
        assert started["evse"] == {"id": 1, "connector_id": 1} and started["transaction_info"]["charging_state"] == "EVConnected"
        assert started["meter_value"][0]["sampled_value"][0]["context"] == "Transaction.Begin"
        assert state["transaction_info"]["charging_state"] == "Charging" and "meter_value" not in state
        assert {e["event_type"] for e in updates} == {"Updated"} and all("id_token" not in e for e in updates + [ended])
        reading = updates[-1]["meter_value"][0]["sampled_value"]
        assert {(v["measurand"], v.get("phase")) for v in reading} == {
            ("Current.Import", "L1"), ("Current.Import", "L2"), ("Current.Import", "L3"), ("Energy.Active.Import.Register", None)}
        current = next(v for v in reading if v["measurand"] == "Current.Import")
        assert current["value"] == 32.0 and current["unit_of_measure"] == {"unit": "A"}  # a number, with its unit
        assert ended["event_type"] == "Ended" and ended["transaction_info"]["stopped_reason"] == "Local"
        assert ended["trigger_reason"] == "StopAuthorized"
        assert energy_of(started) < energy_of(updates[-1]) <= energy_of(ended)
        assert not any(e.get("offline") for e in events)
        assert statuses(r.heard)[2:] == [(1, "Occupied"), (1, "Available")]  # Occupied once, whatever the charging state
        assert [c.action for c in r.sim.confirmed][:2] == ["StartTransaction", "StatusNotification"]
        assert r.sim.confirmed[-1].action == "StopTransaction" and r.sim.confirmed[-1].meter_wh == energy_of(ended)


async def test_what_happens_offline_is_replayed_in_order_and_marked_offline() -> None:
    async with rig() as r:
        await report_readings(r, 0.1, "Energy.Active.Import.Register")
        tx = await r.sim.plug_in(1)
        await eventually(lambda: len(r.heard.events(tx)) >= 4)
        await r.down()
        await eventually(lambda: len(r.sim.outbox) >= 3)
        await r.sim.stop(1)  # offline: the Ended waits in the outbox
        await r.sim.unplug(1)
        queued = [(m.payload.seq_no, m.payload.offline) for m in r.sim.outbox.pending()]
        # All but one that may have been on its way as the link went happened offline.
        assert all(offline is True for _, offline in queued[1:]) and len(queued) >= 4
        heard_before = len(r.heard.events(tx))

        await r.up()
        await eventually(lambda: not r.sim.outbox.pending() and r.heard.events(tx)[-1]["event_type"] == "Ended")
        events = r.heard.events(tx)
        seqs = [e["seq_no"] for e in events]
        assert list(dict.fromkeys(seqs)) == list(range(len(set(seqs)))) and seqs == sorted(seqs)  # nothing lost, in order
        after = events[heard_before:]
        assert [(e["seq_no"], e.get("offline")) for e in after] == queued  # the backlog first, as it was made
        assert not any(e.get("offline") for e in events[: heard_before - 1])
        assert after[-1]["transaction_info"]["stopped_reason"] == "Local"
        # the statuses of the new connection come once the backlog is in: the EVSE is Available again
        await eventually(lambda: statuses(r.heard)[-2:] == [(1, "Available"), (2, "Available")])
        frames = [a for a, _ in r.heard.frames]
        boot = len(frames) - 1 - frames[::-1].index("BootNotification")
        assert frames.index("StatusNotification", boot) > max(i for i, a in enumerate(frames) if a == "TransactionEvent")


async def test_a_lease_applies_after_the_reaction_time_and_falls_back_to_the_default() -> None:
    async with rig() as r:
        tx = await r.sim.plug_in(1)
        start = datetime.now(UTC)
        default = profile201(1, "TxDefaultProfile", 8.0, stack=0, start=start)
        assert (await r.send(call.SetChargingProfile(evse_id=0, charging_profile=default))).status == "Accepted"
        unnamed = profile201(11, "TxProfile", 20.0, stack=1, start=start - timedelta(seconds=5), duration_s=6)
        assert (await r.send(call.SetChargingProfile(evse_id=1, charging_profile=unnamed))).status == "Rejected"
        stranger = unnamed | {"transactionId": "someone-else"}
        assert (await r.send(call.SetChargingProfile(evse_id=1, charging_profile=stranger))).status == "Rejected"
        await eventually(lambda: r.sim.applied_a(1) == 8.0)

        sent = datetime.now(UTC)
        lease = unnamed | {"transactionId": tx}
        assert (await r.send(call.SetChargingProfile(evse_id=1, charging_profile=lease))).status == "Accepted"
        await eventually(lambda: r.sim.applied_a(1) == 20.0)
        when, connector, limit_a = r.sim.applied_history[-1]
        assert (connector, limit_a) == (1, 20.0) and (when - sent).total_seconds() >= REACTION_S - 0.01
        composite = await r.send(call.GetCompositeSchedule(duration=10, evse_id=1, charging_rate_unit="A"))
        assert composite.status == "Accepted" and composite.schedule["evse_id"] == 1
        assert [p["limit"] for p in composite.schedule["charging_schedule_period"]] == [20.0, 8.0]
        ends, highest_a = r.sim.tx_profile_in_force(1, datetime.now(UTC))
        assert highest_a == 20.0 and abs((ends - (start + timedelta(seconds=1))).total_seconds()) < 0.01

        await eventually(lambda: r.sim.applied_a(1) == 8.0)  # the lease ran out
        assert (r.sim.applied_history[-1][0] - (start + timedelta(seconds=1))).total_seconds() >= REACTION_S - 0.01
        assert r.sim.applied_a(2) == 8.0 and r.sim.tx_profile_in_force(1, datetime.now(UTC)) is None
        cleared = await r.send(call.ClearChargingProfile(charging_profile_criteria={"evseId": 0, "chargingProfilePurpose": "TxDefaultProfile"}))
        assert cleared.status == "Accepted"
        await eventually(lambda: r.sim.applied_a(1) == 32.0)
        assert (await r.send(call.ClearChargingProfile(charging_profile_id=1))).status == "Unknown"


async def test_a_listed_tag_starts_offline_and_a_blocked_answer_ends_it_deauthorized() -> None:
    async with rig() as r:
        tags = {"OK-1": "Accepted", "OK-2": "Accepted", "NO-1": "Blocked"}
        assert (await r.send(local_list(1, tags))).status == "Accepted"
        assert (await r.send(call.GetLocalListVersion())).version_number == 1
        assert (await r.send(local_list(1, {"OK-3": "Accepted"}, "Differential"))).status == "VersionMismatch"
        assert r.sim.local_list == tags and r.sim.local_list_version == 1
        r.heard.blocked = {"OK-2"}  # the CSMS has since blocked this one
        await r.down()

        for tag in ("NO-1", "UNKNOWN"):
            with pytest.raises(SimChargerError, match="local list"):
                await r.sim.plug_in(2, id_tag=tag)
        ok = await r.sim.plug_in(1, id_tag="OK-1")
        blocked = await r.sim.plug_in(2, id_tag="OK-2")
        assert r.sim.transactions == {1: ok, 2: blocked} and r.sim.statuses[1] == "Charging"
        await r.up()
        await eventually(lambda: any(e["event_type"] == "Ended" for e in r.heard.events(blocked)))
        started, *_, ended = r.heard.events(blocked)
        assert started["offline"] is True and started["id_token"]["id_token"] == "OK-2"
        assert ended["transaction_info"]["stopped_reason"] == "DeAuthorized" and ended["trigger_reason"] == "Deauthorized"
        assert "offline" not in ended  # it happened once the CSMS was back
        await eventually(lambda: r.sim.statuses[2] == "Finishing")  # once the Ended is answered
        assert r.sim.transactions == {1: ok}
        assert r.heard.events(ok)[0]["offline"] is True and all(e["event_type"] != "Ended" for e in r.heard.events(ok))


async def test_an_online_start_the_csms_refuses_in_its_answer_ends_at_once() -> None:
    async with rig() as r:
        r.heard.blocked = {"LATE-NO"}
        with pytest.raises(SimChargerError, match="Blocked"):
            await r.sim.plug_in(1, id_tag="LATE-NO")
        (authorize,) = r.heard.of("Authorize")
        assert authorize["id_token"]["id_token"] == "LATE-NO"
        events = r.heard.events()
        assert [e["event_type"] for e in events] == ["Started", "Ended"] and [e["seq_no"] for e in events] == [0, 1]
        assert events[-1]["transaction_info"]["stopped_reason"] == "DeAuthorized" and r.sim.transactions == {}


async def test_remote_start_stop_reset_and_availability() -> None:
    async with rig() as r:
        answer = await r.send(call.RequestStartTransaction(id_token={"idToken": "APP-1", "type": "Central"}, remote_start_id=7, evse_id=2))
        assert answer.status == "Accepted"
        await eventually(lambda: 2 in r.sim.transactions)
        tx = r.sim.transactions[2]
        (started,) = r.heard.events(tx)[:1]
        assert started["trigger_reason"] == "RemoteStart" and started["transaction_info"]["remote_start_id"] == 7
        assert (await r.send(call.UnlockConnector(evse_id=2, connector_id=1))).status == "OngoingAuthorizedTransaction"
        assert (await r.send(call.ChangeAvailability(operational_status="Inoperative", evse={"id": 2}))).status == "Scheduled"
        assert (await r.send(call.Reset(type="OnIdle"))).status == "Scheduled"
        assert (await r.send(call.RequestStopTransaction(transaction_id="no-such"))).status == "Rejected"
        assert (await r.send(call.RequestStopTransaction(transaction_id=tx))).status == "Accepted"
        await eventually(lambda: len(r.heard.of("BootNotification")) == 2)  # idle now: the reset was due
        assert r.heard.events(tx)[-1]["transaction_info"]["stopped_reason"] == "Remote"
        assert r.heard.of("BootNotification")[-1]["reason"] == "RemoteReset"
        await r.sim.unplug(2)
        assert r.sim.statuses[2] == "Unavailable"  # the scheduled change, now that the car is gone

        tx = await r.sim.plug_in(1)
        assert (await r.send(call.Reset(type="Immediate"))).status == "Accepted"
        await eventually(lambda: len(r.heard.of("BootNotification")) == 3 and r.sim.connected)
        assert r.heard.events(tx)[-1]["transaction_info"]["stopped_reason"] == "ImmediateReset"
        assert r.sim.transactions == {}


# --- the same local list in the 1.6 charger ---------------------------------------------------


@dataclass
class Heard16(sim_rig.Heard):
    blocked: set[str] = field(default_factory=set)  # tags refused in the answer to StartTransaction
    next_tx: int = 100


class Central16(ChargePoint16):
    def __init__(self, charger_id: str, connection: ServerConnection, heard: Heard16) -> None:
        super().__init__(charger_id, connection, logger=_quiet)
        self.heard = heard

    @on(Action16.boot_notification)
    def on_boot(self, **kw: Any) -> Any:
        self.heard.frames.append(("BootNotification", kw))
        return result16.BootNotification(current_time=wire_ts(datetime.now(UTC)), interval=300, status="Accepted")

    @on(Action16.status_notification)
    def on_status(self, **kw: Any) -> Any:
        return result16.StatusNotification()

    @on(Action16.authorize)
    def on_authorize(self, **kw: Any) -> Any:
        return result16.Authorize(id_tag_info={"status": "Accepted"})

    @on(Action16.start_transaction)
    def on_start(self, **kw: Any) -> Any:
        self.heard.frames.append(("StartTransaction", kw))
        self.heard.next_tx += 1
        status = "Blocked" if kw["id_tag"] in self.heard.blocked else "Accepted"
        return result16.StartTransaction(transaction_id=self.heard.next_tx, id_tag_info={"status": status})

    @on(Action16.meter_values)
    def on_meter_values(self, **kw: Any) -> Any:
        self.heard.frames.append(("MeterValues", kw))
        return result16.MeterValues()

    @on(Action16.stop_transaction)
    def on_stop(self, **kw: Any) -> Any:
        self.heard.frames.append(("StopTransaction", kw))
        return result16.StopTransaction()


async def test_the_1_6_charger_starts_offline_for_a_listed_tag_and_is_numbered_on_return() -> None:
    def sim(url: str) -> SimCharger:
        return SimCharger(url, "CP01", meter_interval_s=0.1, reaction_s=0.1)

    async with open_rig(Central16, "ocpp1.6", Heard16(blocked={"OK-2"}), sim) as r:
        entries = [{"idTag": t, "idTagInfo": {"status": "Accepted"}} for t in ("OK-1", "OK-2")]
        entries.append({"idTag": "OLD", "idTagInfo": {"status": "Accepted", "expiryDate": wire_ts(datetime.now(UTC))}})
        sent = await r.send(call16.SendLocalList(list_version=4, update_type="Full", local_authorization_list=entries))
        assert sent.status == "Accepted"
        assert (await r.send(call16.GetLocalListVersion())).list_version == 4
        assert r.sim.local_list == {"OK-1": "Accepted", "OK-2": "Accepted", "OLD": "Accepted"}
        with pytest.raises(SimChargerError, match="Blocked"):
            await r.sim.plug_in(2, id_tag="OK-2")  # online, the answer to the start decides
        assert r.heard.of("StopTransaction")[-1]["reason"] == "DeAuthorized" and r.sim.transactions == {}
        await r.sim.unplug(2)

        await r.down()
        with pytest.raises(SimChargerError, match="Expired"):
            await r.sim.plug_in(2, id_tag="OLD")
        provisional = await r.sim.plug_in(1, id_tag="OK-1")
        blocked = await r.sim.plug_in(2, id_tag="OK-2")
        assert provisional < 0 and blocked < 0 and r.sim.transactions == {1: provisional, 2: blocked}
        await eventually(lambda: sum(m.connector == 1 for m in r.sim.outbox.pending()) >= 3)

        await r.up()
        await eventually(lambda: len(r.heard.of("StopTransaction")) == 2 and 1 in r.sim.transactions and r.sim.transactions[1] > 0)
        numbered = r.sim.transactions[1]
        readings = [m["transaction_id"] for m in r.heard.of("MeterValues")]
        assert numbered in readings and all(tx > 0 for tx in readings)  # queued readings carry the gateway's id
        stop = r.heard.of("StopTransaction")[-1]
        assert stop["reason"] == "DeAuthorized" and stop["transaction_id"] == numbered + 1  # OK-2 started second
        assert r.sim.transactions == {1: numbered}
