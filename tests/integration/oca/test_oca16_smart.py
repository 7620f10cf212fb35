"""OCA test cases for a Central System, OCPP 1.6J smart charging and configuration: the safe default
(TxDefaultProfile) and meter settings the gateway sets on every connect, its leases (TxProfile),
clearing profiles, composite schedules and a remote start with a profile."""

from __future__ import annotations

import time

import pytest
from ocpp import v16

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    boot16,
    call_api,
    connect,
    parse_ts_or_none,
    square_fixture,
    wire_time,
)

pytestmark = pytest.mark.integration

call = v16.call
SAFE_DEFAULT_A = 16.0  # 96 A over 6 connectors
LEASE_S = 30


square = square_fixture("oca16-smart", chargers=3, connectors=2, grid_limit_a=96)


def received_at(cp, payload: dict) -> float:
    """When the station received a request (UTC epoch seconds)."""
    frame = next(f for f in cp.received if f.payload is payload)
    return time.time() - (time.monotonic() - frame.at)


def purpose(payload: dict) -> str:
    return payload["csChargingProfiles"]["chargingProfilePurpose"]


async def test_TC_056_CSMS_central_smart_charging_tx_default_profile(square: Daemon) -> None:
    """TC_056_CSMS "Central Smart Charging - TxDefaultProfile".

    On connect the gateway sets its safe default on each connector (clearing nothing it did not set):
    TxDefaultProfile at stack level 0, an id from its reserved range, in A, from period 0, with the
    connector's share of the grid limit (96 A / 6 connectors). A default schedule the operator
    sends (the OCTT's Absolute one with validity) reaches the charge point unchanged.
    """
    async with connect(square, "CP01") as cp:
        await boot16(cp)
        defaults = {}
        for n in (1, 2):
            defaults[n] = await cp.expect("SetChargingProfile", lambda p, n=n: p["connectorId"] == n and purpose(p) == "TxDefaultProfile")
        assert all("id" in f.payload for f in cp.received if f.action == "ClearChargingProfile")
        for n, payload in defaults.items():
            profile = payload["csChargingProfiles"]
            assert profile["stackLevel"] == 0 and "transactionId" not in profile
            assert 990000 <= profile["chargingProfileId"] <= 999999
            schedule = profile["chargingSchedule"]
            assert schedule["chargingRateUnit"] == "A"
            assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": SAFE_DEFAULT_A}]
        octt_default = {"connectorId": 1, "csChargingProfiles": {
            "chargingProfileId": 200, "stackLevel": 3, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", "validFrom": wire_time(-60), "validTo": wire_time(3600),
            "chargingSchedule": {"duration": 300, "startSchedule": wire_time(-60), "chargingRateUnit": "A",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0}]}}}
        assert await call_api(square, "CP01", "SetChargingProfile", octt_default) == (200, {"status": "Accepted"})
        assert await cp.expect("SetChargingProfile", lambda p: p == octt_default)


async def test_TC_021_CSMS_change_set_configuration(square: Daemon) -> None:
    """TC_021_CSMS "Change/set Configuration".

    The gateway sets the meter values its control loop needs: MeterValueSampleInterval (the
    configured 5 s) and MeterValuesSampledData with the per-phase current, power and energy.
    """
    async with connect(square, "CP02") as cp:
        await boot16(cp)
        interval = await cp.expect("ChangeConfiguration", lambda p: p["key"] == "MeterValueSampleInterval")
        assert interval == {"key": "MeterValueSampleInterval", "value": "5"}
        sampled = await cp.expect("ChangeConfiguration", lambda p: p["key"] == "MeterValuesSampledData")
        assert {"Current.Import", "Power.Active.Import", "Energy.Active.Import.Register"} <= set(sampled["value"].split(","))
        assert cp.config["MeterValueSampleInterval"] == "5"


async def test_TC_019_2_CSMS_retrieve_specific_configuration_key(square: Daemon) -> None:
    """TC_019_2_CSMS "Retrieve specific configuration key".

    Without a phase rotation in its config the gateway asks the charge point for exactly one key,
    ConnectorPhaseRotation.
    """
    async with connect(square, "CP03") as cp:
        await boot16(cp)
        assert await cp.expect("GetConfiguration") == {"key": ["ConnectorPhaseRotation"]}


async def test_TC_057_CSMS_central_smart_charging_tx_profile(square: Daemon) -> None:
    """TC_057_CSMS "Central Smart Charging - TxProfile".

    For a running transaction the gateway sends its lease: a TxProfile on the connector with the
    transaction's id, above the safe default's stack level, no recurrency; as it is Absolute, the
    OCTT checks that validFrom, validTo, startSchedule and duration are all given. The schedule
    starts 5 s before it is sent and lasts lease_s (control.md).
    """
    async with connect(square, "CP02") as cp:
        await boot16(cp)
        await cp.ask(call.StatusNotification(connector_id=2, error_code="NoError", status="Preparing"))
        started = await cp.ask(call.StartTransaction(connector_id=2, id_tag="OCA-TAG-0057", meter_start=0, timestamp=wire_time()))
        await cp.ask(call.StatusNotification(connector_id=2, error_code="NoError", status="Charging"))
        lease = await cp.expect("SetChargingProfile", lambda p: purpose(p) == "TxProfile", timeout_s=10)
        profile = lease["csChargingProfiles"]
        assert lease["connectorId"] == 2 and profile["transactionId"] == started.transaction_id
        assert profile["stackLevel"] > 0 and "recurrencyKind" not in profile
        assert profile["chargingProfileKind"] == "Absolute"
        schedule = profile["chargingSchedule"]
        assert schedule["duration"] == LEASE_S and schedule["chargingRateUnit"] == "A"
        assert schedule["chargingSchedulePeriod"][0]["startPeriod"] == 0
        limit_a = schedule["chargingSchedulePeriod"][0]["limit"]
        assert limit_a == 0.0 or 6.0 <= limit_a <= 32.0  # zero or at least the minimum (control.md)
        assert 4.5 <= received_at(cp, lease) - parse_ts_or_none(schedule["startSchedule"]).timestamp() <= 8.0
        assert "validFrom" in profile and "validTo" in profile, f"OCTT TC_057_CSMS: an Absolute TxProfile needs validFrom and validTo: {lease}"


async def test_TC_066_CSMS_get_composite_schedule(square: Daemon) -> None:
    """TC_066_CSMS "Get Composite Schedule".

    The operator's GetCompositeSchedule (connector, duration, rate unit) reaches the charge point as
    sent, and its composite schedule comes back whole.
    """
    async with connect(square, "CP03") as cp:
        await boot16(cp)
        request = {"connectorId": 1, "duration": 400, "chargingRateUnit": "A"}
        code, answer = await call_api(square, "CP03", "GetCompositeSchedule", request)
        assert await cp.expect("GetCompositeSchedule", lambda p: p == request) == request
        assert code == 200 and answer["status"] == "Accepted" and answer["connectorId"] == 1
        assert answer["chargingSchedule"] == {"duration": 400, "chargingRateUnit": "A",
                                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}


async def test_TC_067_CSMS_clear_charging_profile(square: Daemon) -> None:
    """TC_067_CSMS "Clear Charging Profile".

    The gateway clears only its own profiles, by id (an earlier fallback's ChargePointMaxProfile,
    id 999999 from its reserved range, once the safe default is accepted), never by criteria; the
    operator's clears by id, by criteria and of all profiles reach the charge point as sent.
    """
    async with connect(square, "CP01") as cp:
        await boot16(cp)
        assert await cp.expect("ClearChargingProfile") == {"id": 999999}
        by_id = next(i for i, f in enumerate(cp.received) if f.payload == {"id": 999999})
        assert any(f.action == "SetChargingProfile" for f in cp.received[:by_id])
        for request in ({"id": 200}, {"connectorId": 1, "chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 3}, {}):
            mark = cp.mark()
            assert await call_api(square, "CP01", "ClearChargingProfile", request) == (200, {"status": "Accepted"})
            assert await cp.expect("ClearChargingProfile", after=mark) == request


async def test_TC_059_CSMS_remote_start_transaction_with_charging_profile(square: Daemon) -> None:
    """TC_059_CSMS "Remote Start Transaction with Charging Profile".

    A RemoteStartTransaction carrying a TxProfile reaches the charge point unchanged (1.6 schema,
    0.1 A steps) and its Accepted comes back.
    """
    async with connect(square, "CP03") as cp:
        await boot16(cp)
        request = {"connectorId": 2, "idTag": "OCA-TAG-0059", "chargingProfile": {
            "chargingProfileId": 300, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.5}]}}}
        assert await call_api(square, "CP03", "RemoteStartTransaction", request) == (200, {"status": "Accepted"})
        assert await cp.expect("RemoteStartTransaction") == request
