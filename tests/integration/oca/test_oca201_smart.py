"""OCA test cases for a CSMS, OCPP 2.0.1 block K (smart charging): the safe default (TxDefaultProfile)
the gateway sets on every connect, its leases (TxProfile), clearing, a station without profiles,
composite schedules and a remote start with a profile.

The square: 20 A over 8 connectors, below the 6 A minimum for each, so the first three bays get
6 A and the others 0 A (control.md): CP01 (6, 6 A) gets one default for all EVSEs, CP02 (6, 0 A)
one per EVSE, CP03 and CP04 (0 A) one for all EVSEs.
"""

from __future__ import annotations

import time
import uuid

import pytest
from ocpp import v201
from ocpp.exceptions import NotSupportedError

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
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


square = square_fixture("oca201-smart", chargers=4, connectors=2, grid_limit_a=20)


def purpose(payload: dict) -> str:
    return payload["chargingProfile"]["chargingProfilePurpose"]


def defaults(cs) -> list[dict]:
    return [p for p in cs.frames("SetChargingProfile") if purpose(p) == "TxDefaultProfile"]


def schedule(payload: dict) -> dict:
    (only,) = payload["chargingProfile"]["chargingSchedule"]
    return only


async def test_TC_K_10_CSMS_set_charging_profile_tx_default_profile_all_evse(square: Daemon) -> None:
    """TC_K_10_CSMS "Set Charging Profile - TxDefaultProfile - All EVSE".

    With the same share for both EVSEs the gateway sets one TxDefaultProfile on EVSE 0 (every EVSE),
    stack level 0, in A, its first period from 0, 6.0 A; it clears nothing but its own, by id. The OCTT's
    own default profile, sent by the operator, reaches the station unchanged.
    """
    async with connect(square, "CP01", "2.0.1") as cs:
        await boot201(cs)
        default = await cs.expect("SetChargingProfile", lambda p: purpose(p) == "TxDefaultProfile")
        assert all(set(p) == {"chargingProfileId"} and p["chargingProfileId"] >= 990000 for p in cs.frames("ClearChargingProfile"))
        assert default["evseId"] == 0 and default["chargingProfile"]["stackLevel"] == 0
        assert schedule(default)["chargingRateUnit"] == "A"
        assert schedule(default)["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 6.0}]
        await cs.absent("SetChargingProfile", after=cs.mark(), for_s=0.3)
        assert len(defaults(cs)) == 1
        octt = {"evseId": 0, "chargingProfile": {
            "id": 210, "stackLevel": 2, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
            "validFrom": wire_time(-60), "validTo": wire_time(3600), "chargingSchedule": [{
                "id": 210, "startSchedule": wire_time(-60), "duration": 300, "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0}]}]}}
        assert await call_api(square, "CP01", "SetChargingProfile", octt) == (200, {"status": "Accepted"})
        assert await cs.expect("SetChargingProfile", lambda p: p == octt)


async def test_TC_K_01_CSMS_set_charging_profile_tx_default_profile_specific_evse(square: Daemon) -> None:
    """TC_K_01_CSMS "Set Charging Profile - TxDefaultProfile - Specific EVSE".

    With different shares per EVSE the gateway sets a TxDefaultProfile on each: 6.0 A on EVSE 1 and
    0.0 A on EVSE 2, each with its first period from 0.
    """
    async with connect(square, "CP02", "2.0.1") as cs:
        await boot201(cs)
        for evse, limit_a in ((1, 6.0), (2, 0.0)):
            default = await cs.expect("SetChargingProfile", lambda p, evse=evse: purpose(p) == "TxDefaultProfile" and p["evseId"] == evse)
            assert schedule(default)["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": limit_a}]
        assert not [p for p in defaults(cs) if p["evseId"] == 0]


async def test_TC_K_60_CSMS_set_charging_profile_tx_profile_with_ongoing_transaction(square: Daemon) -> None:
    """TC_K_60_CSMS "Set Charging Profile - TxProfile with ongoing transaction on the specified EVSE".

    For the running transaction the gateway sends its lease: a TxProfile on the EVSE with the
    station's own transactionId, Absolute with a startSchedule (5 s before sending), first period
    from 0, lasting lease_s, above the default's stack level.
    """
    async with connect(square, "CP01", "2.0.1") as cs:
        await boot201(cs)
        await cs.expect("SetVariables")
        tx_id = str(uuid.uuid4())
        await cs.ask(call.StatusNotification(timestamp=wire_time(), connector_status="Occupied", evse_id=1, connector_id=1))
        await cs.ask(call.TransactionEvent(
            event_type="Started", timestamp=wire_time(), trigger_reason="Authorized", seq_no=0,
            transaction_info={"transaction_id": tx_id, "charging_state": "Charging"}, evse={"id": 1, "connector_id": 1},
            id_token={"id_token": "OCA-TOKEN-K60", "type": "ISO14443"},
        ))
        lease = await cs.expect("SetChargingProfile", lambda p: purpose(p) == "TxProfile", timeout_s=10)
        received = time.time()
        profile = lease["chargingProfile"]
        assert lease["evseId"] == 1 and profile["transactionId"] == tx_id
        assert profile["chargingProfileKind"] == "Absolute" and profile["stackLevel"] > 0
        (lease_schedule,) = profile["chargingSchedule"]
        assert lease_schedule["chargingSchedulePeriod"][0]["startPeriod"] == 0 and lease_schedule["duration"] == 30
        assert 4.5 <= received - parse_ts_or_none(lease_schedule["startSchedule"]).timestamp() <= 8.0
        limit_a = lease_schedule["chargingSchedulePeriod"][0]["limit"]
        assert limit_a == 0.0 or 6.0 <= limit_a <= 32.0


async def test_TC_K_05_CSMS_clear_charging_profile_with_charging_profile_id(square: Daemon) -> None:
    """TC_K_05_CSMS "Clear Charging Profile - With chargingProfileId".

    Once its safe default is accepted the gateway clears, by its id (999999, from its reserved range),
    the ChargingStationMaxProfile
    an earlier fallback may have left; an operator's clear by id reaches the station as sent.
    """
    async with connect(square, "CP03", "2.0.1") as cs:
        await boot201(cs)
        await cs.expect("ClearChargingProfile", lambda p: p == {"chargingProfileId": 999999})
        by_id = next(i for i, f in enumerate(cs.received) if f.payload == {"chargingProfileId": 999999})
        assert any(f.action == "SetChargingProfile" for f in cs.received[:by_id])
        mark = cs.mark()
        assert await call_api(square, "CP03", "ClearChargingProfile", {"chargingProfileId": 210}) == (200, {"status": "Accepted"})
        assert await cs.expect("ClearChargingProfile", after=mark) == {"chargingProfileId": 210}


async def test_TC_K_08_CSMS_clear_charging_profile_without_previous_charging_profile(square: Daemon) -> None:
    """TC_K_08_CSMS "Clear Charging Profile - Without previous charging profile".

    A station with nothing to clear answers Unknown: the gateway carries on, sets its safe default
    and steers the station with profiles as usual.
    """
    async with connect(square, "CP04", "2.0.1") as cs:
        cs.answers["ClearChargingProfile"] = {"status": "Unknown"}
        await boot201(cs)
        await cs.expect("SetChargingProfile", lambda p: purpose(p) == "TxDefaultProfile")
        assert await cs.expect("ClearChargingProfile") == {"chargingProfileId": 999999}
        await until(lambda: charger(square, "CP04")["profiles"] == "tx", "CP04 steered by profiles")


async def test_TC_K_43_CSMS_get_composite_schedule_specific_evse(square: Daemon) -> None:
    """TC_K_43_CSMS "Get Composite Schedule - Specific EVSE": the operator's request reaches the
    station as sent and its schedule comes back whole."""
    async with connect(square, "CP03", "2.0.1") as cs:
        await boot201(cs)
        request = {"duration": 300, "evseId": 1, "chargingRateUnit": "A"}
        code, answer = await call_api(square, "CP03", "GetCompositeSchedule", request)
        assert await cs.expect("GetCompositeSchedule") == request
        assert code == 200 and answer["status"] == "Accepted"
        assert answer["schedule"]["evseId"] == 1 and answer["schedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 16.0}]


async def test_TC_K_37_CSMS_remote_start_transaction_with_charging_profile(square: Daemon) -> None:
    """TC_K_37_CSMS "Remote start transaction with charging profile - Success": a RequestStartTransaction
    carrying a TxProfile reaches the station unchanged and its Accepted comes back."""
    async with connect(square, "CP03", "2.0.1") as cs:
        await boot201(cs)
        request = {"evseId": 2, "remoteStartId": 37, "idToken": {"idToken": "OCA-REMOTE-K37", "type": "Central"},
                   "chargingProfile": {"id": 237, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
                                       "chargingSchedule": [{"id": 237, "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}]}]}}
        assert await call_api(square, "CP03", "RequestStartTransaction", request) == (200, {"status": "Accepted"})
        assert await cs.expect("RequestStartTransaction") == request


async def test_TC_K_15_CSMS_set_charging_profile_not_supported(square: Daemon) -> None:
    """TC_K_15_CSMS "Set Charging Profile - Not Supported".

    The station answers SetChargingProfile with CALLERROR NotSupported: the gateway tries a
    ChargingStationMaxProfile on EVSE 0 instead; refused too, it counts the station at its maximum
    and raises an alarm saying so. The operator's own SetChargingProfile gets 502 with the code.
    """
    async with connect(square, "CP02", "2.0.1") as cs:
        cs.answers["SetChargingProfile"] = NotSupportedError(description="no smart charging")
        await boot201(cs)
        fallback = await cs.expect("SetChargingProfile", lambda p: purpose(p) == "ChargingStationMaxProfile")
        assert fallback["evseId"] == 0
        await until(lambda: charger(square, "CP02")["profiles"] == "none", "CP02 counted at its maximum")
        alarms = await until(lambda: [a for a in square.api("GET", "/api/alarms")[1] if a["key"] == "profiles_refused:CP02"], "alarm")
        assert "32" in alarms[0]["action"] or "32" in alarms[0]["message"]
        # the operator's own profile (an id outside the gateway's range: one inside it is refused, 400)
        assert (await call_api(square, "CP02", "SetChargingProfile", fallback))[0] == 400
        operator = {**fallback, "chargingProfile": {**fallback["chargingProfile"], "id": 15}}
        code, body = await call_api(square, "CP02", "SetChargingProfile", operator)
        assert code == 502 and body["code"] == "NotSupported"


async def test_TC_K_29_CSMS_get_charging_profiles_and_the_report_is_answered(square: Daemon) -> None:
    """TC_K_29_CSMS "Get Charging Profiles - EVSE id 0" (K09).

    The operator's GetChargingProfiles reaches the station as sent; the station then reports what it
    holds with ReportChargingProfiles, which the gateway answers (K09.FR.04 asks the CSMS to accept
    it) instead of NotImplemented, and logs it for the operator.
    """
    async with connect(square, "CP04", "2.0.1") as cs:
        await boot201(cs)
        cs.answers["GetChargingProfiles"] = {"status": "Accepted"}
        mark = cs.mark()
        request = {"requestId": 29, "evseId": 0, "chargingProfile": {"chargingProfilePurpose": "TxDefaultProfile"}}
        assert await call_api(square, "CP04", "GetChargingProfiles", request) == (200, {"status": "Accepted"})
        assert await cs.expect("GetChargingProfiles", lambda p: p == request, after=mark) == request
        held = {"id": 210, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Relative",
                "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                      "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}]}
        answer = await cs.ask(call.ReportChargingProfiles(request_id=29, charging_limit_source="CSO",
                                                          charging_profile=[held], evse_id=0))
        assert answer is not None  # a CALLRESULT, not a CALLERROR (ask raises on one)
    await until(lambda: "CP04: EVSE 0 holds 1 charging profile(s) set by CSO (request 29)" in square.log(),
                "the report in the log")
