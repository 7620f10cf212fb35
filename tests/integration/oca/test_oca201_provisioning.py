"""OCA test cases for a CSMS, OCPP 2.0.1 blocks B (provisioning), F (remote control without a
transaction), G (availability) and P (data transfer). The operator's requests go through
POST /api/chargers/<id>/call/<Action> with 2.0.1 payloads. One daemon, one station per case."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from ocpp import v201
from ocpp.exceptions import OccurrenceConstraintViolationError, OCPPError

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    bay,
    boot201,
    call_api,
    charger,
    connect,
    parse_ts_or_none,
    square_fixture,
    until,
    wire_time,
)

pytestmark = pytest.mark.integration

call = v201.call


square = square_fixture("oca201-prov", chargers=8, connectors=2, grid_limit_a=256)


def status(evse: int, word: str) -> call.StatusNotification:
    return call.StatusNotification(timestamp=wire_time(), connector_status=word, evse_id=evse, connector_id=1)


def availability_event(evse: int, word: str) -> call.NotifyEvent:
    """The NotifyEvent a station sends with a connector's new AvailabilityState."""
    return call.NotifyEvent(generated_at=wire_time(), seq_no=0, event_data=[{
        "event_id": 1, "timestamp": wire_time(), "trigger": "Delta", "actual_value": word, "event_notification_type": "HardWiredNotification",
        "component": {"name": "Connector", "evse": {"id": evse, "connector_id": 1}}, "variable": {"name": "AvailabilityState"},
    }])


async def test_TC_B_01_CSMS_cold_boot_charging_station_accepted(square: Daemon) -> None:
    """TC_B_01_CSMS "Cold Boot Charging Station - Accepted".

    The gateway always accepts a BootNotification (it never answers Pending or Rejected), with its
    heartbeat interval and UTC time; it takes every connector's status and answers Heartbeats.
    """
    async with connect(square, "CP01", "2.0.1") as cs:
        boot = await boot201(cs)
        assert boot.status == "Accepted" and boot.interval == 60 and boot.current_time.endswith("Z")
        assert abs((parse_ts_or_none(boot.current_time) - parse_ts_or_none(wire_time())).total_seconds()) < 5
        await until(lambda: bay(square, "B01")["status"] == bay(square, "B02")["status"] == "Available", "B01/B02 Available")
        heartbeat = await cs.ask(call.Heartbeat())
        assert parse_ts_or_none(heartbeat.current_time) >= parse_ts_or_none(boot.current_time)
        assert charger(square, "CP01")["ocpp"] == "ocpp2.0.1"


async def test_TC_F_23_CSMS_trigger_status_notification_specific_evse_available(square: Daemon) -> None:
    """TC_F_23_CSMS "Trigger message - StatusNotification - Specific EVSE - Available".

    The gateway asks for the connector status of each EVSE not heard from within 5 s of the connect,
    with a TriggerMessage naming the EVSE and connector; the StatusNotification the station then sends
    is answered and shown.
    """
    async with connect(square, "CP02", "2.0.1") as cs:
        await boot201(cs, evses=0)  # a boot without the statuses
        for evse in (1, 2):
            trigger = await cs.expect("TriggerMessage", lambda p, evse=evse: p.get("evse", {}).get("id") == evse, timeout_s=10)
            assert trigger == {"requestedMessage": "StatusNotification", "evse": {"id": evse, "connectorId": 1}}
            await cs.ask(status(evse, "Available"))
        await until(lambda: bay(square, "B03")["status"] == bay(square, "B04")["status"] == "Available", "B03/B04 Available")


async def test_TC_F_20_CSMS_trigger_message_heartbeat(square: Daemon) -> None:
    """TC_F_20_CSMS "Trigger message - Heartbeat": the operator's TriggerMessage reaches the station as
    sent, its Accepted comes back, and the Heartbeat it then sends is answered."""
    async with connect(square, "CP02", "2.0.1") as cs:
        await boot201(cs)
        mark = cs.mark()
        assert await call_api(square, "CP02", "TriggerMessage", {"requestedMessage": "Heartbeat"}) == (200, {"status": "Accepted"})
        assert await cs.expect("TriggerMessage", after=mark) == {"requestedMessage": "Heartbeat"}
        assert (await cs.ask(call.Heartbeat())).current_time.endswith("Z")


async def test_TC_F_27_CSMS_trigger_message_not_implemented(square: Daemon) -> None:
    """TC_F_27_CSMS "Trigger message - NotImplemented".

    A station answers the gateway's TriggerMessage with NotImplemented: the gateway carries on with its
    set-up (safe default, meter settings) without the status, and passes the operator the same answer.
    """
    async with connect(square, "CP03", "2.0.1") as cs:
        cs.answers["TriggerMessage"] = {"status": "NotImplemented"}
        await boot201(cs, evses=0)  # no status: the gateway asks for it after 5 s
        await cs.expect("TriggerMessage", timeout_s=10)
        await cs.expect("SetVariables")
        assert cs.frames("SetChargingProfile")
        code, answer = await call_api(square, "CP03", "TriggerMessage", {"requestedMessage": "LogStatusNotification"})
        assert (code, answer) == (200, {"status": "NotImplemented"}) and charger(square, "CP03")["online"]


async def test_TC_B_07_CSMS_get_variables_multiple_values(square: Daemon) -> None:
    """TC_B_07_CSMS "Get Variables - multiple values".

    Without a phase rotation in its config the gateway reads PhaseRotation of the charging station and
    of each EVSE in one GetVariables (its own reads of the station's per-message limits aside).
    """
    async with connect(square, "CP04", "2.0.1") as cs:
        await boot201(cs)
        request = await cs.expect("GetVariables", rotation_read)
        assert request == {"getVariableData": [
            {"component": {"name": "ChargingStation"}, "variable": {"name": "PhaseRotation"}},
            {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "PhaseRotation"}},
            {"component": {"name": "EVSE", "evse": {"id": 2}}, "variable": {"name": "PhaseRotation"}},
        ]}


def rotation_read(payload: dict[str, Any]) -> bool:
    return any(d["variable"]["name"] == "PhaseRotation" for d in payload["getVariableData"])


def within(limits: dict[tuple[str, str], str], most: int) -> Callable[[dict[str, Any]], dict[str, Any] | OCPPError]:
    """A station's GetVariables that also knows DeviceDataCtrlr limits by instance (`limits`: (variable,
    instance) -> value) and answers more than `most` items with a CALLERROR, as B06.FR.16 allows."""

    def answer(payload: dict[str, Any]) -> dict[str, Any] | OCPPError:
        data = payload["getVariableData"]
        if len(data) > most:
            return OccurrenceConstraintViolationError(description=f"more than {most} items")
        results = []
        for item in data:
            value = limits.get((item["variable"]["name"], item["variable"].get("instance", "")))
            if item["component"]["name"] != "DeviceDataCtrlr":
                value = {"PhaseRotation": "RST"}.get(item["variable"]["name"])
            results.append({**item, "attributeStatus": "Accepted", "attributeValue": value} if value is not None
                           else {**item, "attributeStatus": "UnknownVariable"})
        return {"getVariableResult": results}

    return answer


async def test_requests_split_within_the_stations_items_per_message(square: Daemon) -> None:
    """A station that takes 2 GetVariables items and 3 SetVariables items a message (DeviceDataCtrlr
    ItemsPerMessage) gets no request with more: the gateway reads the limits before its first request
    with several items, splits its own reads and settings and the operator's, and merges the answers."""
    async with connect(square, "CP04", "2.0.1") as cs:
        cs.answers["GetVariables"] = within({("ItemsPerMessage", "GetVariables"): "2", ("ItemsPerMessage", "SetVariables"): "3",
                                             ("BytesPerMessage", "GetVariables"): "abc"}, most=2)
        await boot201(cs)
        await cs.expect("GetVariables", lambda p: any(d["component"].get("evse", {}).get("id") == 2 for d in p["getVariableData"]))
        await cs.expect("SetVariables", lambda p: p["setVariableData"][0]["variable"]["name"] == "TxEndedMeasurands")
        request = {"getVariableData": [{"component": {"name": "EVSE", "evse": {"id": n}}, "variable": {"name": "PhaseRotation"}}
                                       for n in (1, 2)] + [{"component": {"name": "ChargingStation"}, "variable": {"name": "PhaseRotation"}}]}
        code, answer = await call_api(square, "CP04", "GetVariables", request)
        assert code == 200 and [r["component"] for r in answer["getVariableResult"]] == [d["component"] for d in request["getVariableData"]]
        assert [r["attributeValue"] for r in answer["getVariableResult"]] == ["RST"] * 3
    gets = [f for f in cs.received if f.action == "GetVariables"]
    assert all(f.answer is not None and len(f.payload["getVariableData"]) <= 2 for f in gets), gets
    assert sum(rotation_read(f.payload) for f in gets) == 4  # 3 items of its own read in 2, the operator's 3 in 2
    sets = [len(f.payload["setVariableData"]) for f in cs.received if f.action == "SetVariables"]
    assert max(sets) <= 3 and sum(sets) >= 4, sets


async def test_TC_B_06_CSMS_get_variables_single_value(square: Daemon) -> None:
    """TC_B_06_CSMS "Get Variables - single value": the operator's GetVariables reaches the station as
    sent and its result comes back whole."""
    async with connect(square, "CP04", "2.0.1") as cs:
        await boot201(cs)
        request = {"getVariableData": [{"component": {"name": "LocalAuthListCtrlr"}, "variable": {"name": "ItemsPerMessage"}}]}
        code, answer = await call_api(square, "CP04", "GetVariables", request)
        assert await cs.expect("GetVariables", lambda p: p == request)
        assert code == 200 and answer == {"getVariableResult": [{**request["getVariableData"][0], "attributeStatus": "Accepted", "attributeValue": "20"}]}


async def test_TC_B_10_CSMS_set_variables_multiple_values(square: Daemon) -> None:
    """TC_B_10_CSMS "Set Variables - multiple values".

    The gateway sets both transaction meter variables its control loop needs in one SetVariables:
    SampledDataCtrlr.TxUpdatedInterval (the configured 5 s) and TxUpdatedMeasurands.
    """
    async with connect(square, "CP05", "2.0.1") as cs:
        await boot201(cs)
        data = (await cs.expect("SetVariables"))["setVariableData"]
        values = {(d["component"]["name"], d["variable"]["name"]): d["attributeValue"] for d in data}
        assert values[("SampledDataCtrlr", "TxUpdatedInterval")] == "5"
        assert {"Current.Import", "Power.Active.Import", "Energy.Active.Import.Register"} <= set(values[("SampledDataCtrlr", "TxUpdatedMeasurands")].split(","))


async def test_TC_B_09_CSMS_set_variables_single_value(square: Daemon) -> None:
    """TC_B_09_CSMS "Set Variables - single value": the operator's SetVariables reaches the station as
    sent and its result comes back whole."""
    async with connect(square, "CP05", "2.0.1") as cs:
        await boot201(cs)
        request = {"setVariableData": [{"attributeValue": "30", "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]}
        code, answer = await call_api(square, "CP05", "SetVariables", request)
        assert await cs.expect("SetVariables", lambda p: p == request)
        assert code == 200 and answer["setVariableResult"] == [
            {"attributeStatus": "Accepted", "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]


async def test_TC_B_20_CSMS_reset_charging_station_without_ongoing_transaction(square: Daemon) -> None:
    """TC_B_20_CSMS "Reset Charging Station - Without ongoing transaction - OnIdle".

    Reset OnIdle: Accepted; while the station reboots the operator gets 409; it boots again
    (reason RemoteReset, Accepted) and the gateway sets it up anew.
    """
    async with connect(square, "CP06", "2.0.1") as cs:
        await boot201(cs)
        assert await call_api(square, "CP06", "Reset", {"type": "OnIdle"}) == (200, {"status": "Accepted"})
        assert await cs.expect("Reset") == {"type": "OnIdle"}
    await until(lambda: not charger(square, "CP06")["online"], "CP06 offline")
    assert (await call_api(square, "CP06", "Reset", {"type": "OnIdle"}))[0] == 409
    async with connect(square, "CP06", "2.0.1") as cs:
        boot = await cs.ask(call.BootNotification(charging_station={"model": "Scripted", "vendor_name": "OCA"}, reason="RemoteReset"))
        assert boot.status == "Accepted"
        await cs.expect("SetChargingProfile", lambda p: p["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile")


async def test_TC_G_03_CSMS_change_availability_evse_operative_to_inoperative(square: Daemon) -> None:
    """TC_G_03_CSMS "Change Availability EVSE - Operative to inoperative".

    ChangeAvailability for EVSE 1: Accepted; the station's StatusNotification Unavailable and its
    NotifyEvent (AvailabilityState) are answered and the bay shows Unavailable.
    """
    async with connect(square, "CP07", "2.0.1") as cs:
        await boot201(cs)
        request = {"operationalStatus": "Inoperative", "evse": {"id": 1}}
        assert await call_api(square, "CP07", "ChangeAvailability", request) == (200, {"status": "Accepted"})
        assert await cs.expect("ChangeAvailability") == request
        await cs.ask(status(1, "Unavailable"))
        await cs.ask(availability_event(1, "Unavailable"))
        await until(lambda: bay(square, "B13")["status"] == "Unavailable", "B13 Unavailable")
        assert bay(square, "B14")["status"] == "Available"


async def test_TC_G_04_CSMS_change_availability_evse_inoperative_to_operative(square: Daemon) -> None:
    """TC_G_04_CSMS "Change Availability EVSE - Inoperative to operative": from Unavailable back to Available."""
    async with connect(square, "CP07", "2.0.1") as cs:
        await boot201(cs, status="Unavailable")
        request = {"operationalStatus": "Operative", "evse": {"id": 1}}
        assert await call_api(square, "CP07", "ChangeAvailability", request) == (200, {"status": "Accepted"})
        assert await cs.expect("ChangeAvailability") == request
        await cs.ask(status(1, "Available"))
        await until(lambda: bay(square, "B13")["status"] == "Available", "B13 Available")


async def test_TC_G_05_CSMS_change_availability_charging_station_operative_to_inoperative(square: Daemon) -> None:
    """TC_G_05_CSMS "Change Availability Charging Station - Operative to inoperative".

    ChangeAvailability without an EVSE: the whole station; both connectors report Unavailable.
    """
    async with connect(square, "CP08", "2.0.1") as cs:
        await boot201(cs)
        assert await call_api(square, "CP08", "ChangeAvailability", {"operationalStatus": "Inoperative"}) == (200, {"status": "Accepted"})
        assert await cs.expect("ChangeAvailability") == {"operationalStatus": "Inoperative"}
        for evse in (1, 2):
            await cs.ask(status(evse, "Unavailable"))
        await until(lambda: bay(square, "B15")["status"] == bay(square, "B16")["status"] == "Unavailable", "B15/B16 Unavailable")


async def test_TC_F_06_CSMS_remote_unlock_connector_without_transaction(square: Daemon) -> None:
    """TC_F_06_CSMS "Remote unlock Connector - Without ongoing transaction - Accepted": the
    UnlockConnector names the EVSE and connector, and the station's Unlocked comes back."""
    async with connect(square, "CP08", "2.0.1") as cs:
        await boot201(cs)
        request = {"evseId": 2, "connectorId": 1}
        assert await call_api(square, "CP08", "UnlockConnector", request) == (200, {"status": "Unlocked"})
        assert await cs.expect("UnlockConnector") == request


async def test_TC_P_02_CSMS_data_transfer_rejected(square: Daemon) -> None:
    """TC_P_02_CSMS "Data Transfer to the CSMS - Rejected / Unknown VendorId / Unknown MessageId":
    the gateway has no vendor extension and rejects the DataTransfer; the link stays up."""
    async with connect(square, "CP01", "2.0.1") as cs:
        await boot201(cs)
        answer = await cs.ask(call.DataTransfer(vendor_id="org.openchargealliance.octt", message_id="Test", data="x"))
        assert answer.status in ("Rejected", "UnknownVendorId", "UnknownMessageId")
        assert (await cs.ask(call.Heartbeat())).current_time.endswith("Z")
