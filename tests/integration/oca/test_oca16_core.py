"""OCA test cases for a Central System, OCPP 1.6J Core: cold boot, charging sessions (free mode: every
tag is accepted), stopping by the EV unplugging, power failure, offline transactions, errors reported
by the charge point and vendor data transfer. One daemon for the module, one charge point per case."""

from __future__ import annotations

import pytest
from ocpp import v16

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    bay,
    boot16,
    charger,
    connect,
    meter16,
    parse_ts_or_none,
    sessions,
    square_fixture,
    until,
    wire_time,
)

pytestmark = pytest.mark.integration

call = v16.call


square = square_fixture("oca16-core", chargers=8, connectors=2, grid_limit_a=256)


def status(n: int, word: str, error_code: str = "NoError") -> call.StatusNotification:
    return call.StatusNotification(connector_id=n, error_code=error_code, status=word)


async def start(cp, connector: int, tag: str, meter_start_wh: int = 1000, timestamp: str | None = None) -> int:
    """StartTransaction; asserts the gateway accepts the tag and returns its transaction id."""
    answer = await cp.ask(call.StartTransaction(connector_id=connector, id_tag=tag, meter_start=meter_start_wh,
                                                timestamp=timestamp or wire_time()))
    assert answer.id_tag_info == {"status": "Accepted"}
    assert isinstance(answer.transaction_id, int) and answer.transaction_id > 0
    return answer.transaction_id


async def charging(cp, connector: int = 1, tag: str = "OCA-TAG-0001") -> int:
    """Reusable state Charging: Preparing, StartTransaction, Charging; the transaction id."""
    await cp.ask(status(connector, "Preparing"))
    tx = await start(cp, connector, tag)
    await cp.ask(status(connector, "Charging"))
    return tx


async def test_TC_001_CSMS_cold_boot_charge_point(square: Daemon) -> None:
    """TC_001_CSMS "Cold Boot Charge Point".

    The gateway accepts the BootNotification with its heartbeat interval and its UTC time, takes a
    StatusNotification per connector and for connector 0, answers Heartbeats, and asks the charge
    point for the status of a connector it has not reported within 5 s of the connect (TriggerMessage
    naming that connector), and of no other.
    """
    async with connect(square, "CP01") as cp:
        boot = await boot16(cp, connectors=1)  # connector 2 stays silent
        assert boot.status == "Accepted" and boot.interval == 60
        assert abs((parse_ts_or_none(boot.current_time) - parse_ts_or_none(wire_time())).total_seconds()) < 5
        assert boot.current_time.endswith("Z")
        heartbeat = await cp.ask(call.Heartbeat())
        assert heartbeat.current_time.endswith("Z") and parse_ts_or_none(heartbeat.current_time) >= parse_ts_or_none(boot.current_time)
        assert await cp.expect("TriggerMessage", timeout_s=10) == {"requestedMessage": "StatusNotification", "connectorId": 2}
        await cp.ask(status(2, "Available"))
        assert len(cp.frames("TriggerMessage")) == 1
        await until(lambda: bay(square, "B01")["status"] == bay(square, "B02")["status"] == "Available", "B01/B02 Available")
        assert charger(square, "CP01")["online"]


async def test_TC_003_CSMS_regular_charging_session_plugin_first(square: Daemon) -> None:
    """TC_003_CSMS "Regular Charging Session - Plugin First".

    Preparing, Authorize, StartTransaction, Charging: the gateway accepts the tag (free mode) and the
    transaction, records the session before answering, and takes the sampled meter values.
    """
    async with connect(square, "CP02") as cp:
        await boot16(cp)
        await cp.ask(status(1, "Preparing"))
        authorized = await cp.ask(call.Authorize(id_tag="OCA-TAG-0003"))
        assert authorized.id_tag_info == {"status": "Accepted"}
        tx = await start(cp, 1, "OCA-TAG-0003", meter_start_wh=2000)
        await cp.ask(status(1, "Charging"))
        assert [s["id"] for s in sessions(square, "CP02")] == [tx]
        await cp.ask(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=meter16(2400, 13.2)))
        await until(lambda: bay(square, "B03")["current_a"] == 13.2, "B03 current 13.2 A")
        assert bay(square, "B03")["status"] == "Charging"
        assert sessions(square, "CP02")[0]["energy_wh"] == 400


async def test_TC_004_1_CSMS_regular_charging_session_identification_first(square: Daemon) -> None:
    """TC_004_1_CSMS "Regular Charging Session - Identification First".

    Authorize before the cable: Accepted; then Preparing, StartTransaction (Accepted) and Charging.
    """
    async with connect(square, "CP03") as cp:
        await boot16(cp)
        authorized = await cp.ask(call.Authorize(id_tag="OCA-TAG-0004"))
        assert authorized.id_tag_info == {"status": "Accepted"}
        tx = await charging(cp, 1, "OCA-TAG-0004")
        await until(lambda: bay(square, "B05")["status"] == "Charging", "B05 Charging")
        assert sessions(square, "CP03")[0]["id"] == tx and sessions(square, "CP03")[0]["stopped"] is None


async def test_TC_005_1_CSMS_ev_side_disconnected(square: Daemon) -> None:
    """TC_005_1_CSMS "EV Side Disconnected - StopTransactionOnEVSideDisconnect = true -
    UnlockConnectorOnEVSideDisconnect = true".

    From Charging: SuspendedEV, StopTransaction with reason EVDisconnected (and its transaction data),
    Finishing, Available. The gateway closes the session with that reason and its energy.
    """
    async with connect(square, "CP04") as cp:
        await boot16(cp)
        tx = await charging(cp, 2, "OCA-TAG-0005")
        await cp.ask(status(2, "SuspendedEV"))
        stopped = await cp.ask(call.StopTransaction(
            meter_stop=1750, timestamp=wire_time(), transaction_id=tx, reason="EVDisconnected",
            transaction_data=meter16(1750, 0.0, context="Transaction.End"),
        ))
        assert stopped.id_tag_info is None  # no idTag in the request: nothing to authorize
        await cp.ask(status(2, "Finishing"))
        await until(lambda: bay(square, "B08")["status"] == "Finishing", "B08 Finishing")
        await cp.ask(status(2, "Available"))
        await until(lambda: bay(square, "B08")["status"] == "Available", "B08 Available")
    (session,) = sessions(square, "CP04")
    assert session["id"] == tx and session["stop_reason"] == "EVDisconnected" and session["energy_wh"] == 750


async def test_TC_032_1_CSMS_power_failure_stop_transactions(square: Daemon) -> None:
    """TC_032_1_CSMS "Power failure boot charging point-configured to stop transaction(s)".

    The charge point loses power while charging; on its return it boots (Accepted), reports the
    connector Finishing and the others Available, and stops the transaction with reason PowerLoss.
    """
    async with connect(square, "CP05") as cp:
        await boot16(cp)
        tx = await charging(cp, 1, "OCA-TAG-0032")
    async with connect(square, "CP05") as cp:
        boot = await cp.ask(call.BootNotification(charge_point_vendor="OCA", charge_point_model="Scripted"))
        assert boot.status == "Accepted"
        for n, word in ((0, "Available"), (1, "Finishing"), (2, "Available")):
            await cp.ask(status(n, word))
        await cp.ask(call.StopTransaction(meter_stop=1300, timestamp=wire_time(-2), transaction_id=tx, reason="PowerLoss"))
        await until(lambda: bay(square, "B09")["status"] == "Finishing", "B09 Finishing")
    (session,) = sessions(square, "CP05")
    assert session["stop_reason"] == "PowerLoss" and session["meter_stop_wh"] == 1300 and session["stopped"] is not None


async def test_TC_037_1_CSMS_offline_start_transaction_valid_idtag(square: Daemon) -> None:
    """TC_037_1_CSMS "Offline Start Transaction - Valid IdTag".

    A transaction started while the link was down: after reconnecting the charge point sends the
    queued StartTransaction (its own earlier timestamp); the gateway accepts it, keeps that start
    time, and takes the Charging status.
    """
    async with connect(square, "CP06") as cp:
        await boot16(cp)
    started_at = wire_time(-90)
    async with connect(square, "CP06") as cp:
        tx = await start(cp, 1, "OCA-TAG-0037", timestamp=started_at)
        await cp.ask(status(1, "Charging"))
        await until(lambda: bay(square, "B11")["status"] == "Charging", "B11 Charging")
    (session,) = sessions(square, "CP06")
    assert session["id"] == tx and parse_ts_or_none(session["started"]) == parse_ts_or_none(started_at)


async def test_TC_039_CSMS_offline_transaction(square: Daemon) -> None:
    """TC_039_CSMS "Offline Transaction".

    A whole transaction happened offline: the queued StartTransaction is answered Accepted, the queued
    StopTransaction (reason Local) closes it with its own times and meter readings.
    """
    async with connect(square, "CP07") as cp:
        await boot16(cp)
    started_at, stopped_at = wire_time(-600), wire_time(-60)
    async with connect(square, "CP07") as cp:
        tx = await start(cp, 2, "OCA-TAG-0039", meter_start_wh=5000, timestamp=started_at)
        await cp.ask(call.StopTransaction(meter_stop=8200, timestamp=stopped_at, transaction_id=tx, reason="Local", id_tag="OCA-TAG-0039"))
        await cp.ask(status(2, "Available"))
    (session,) = sessions(square, "CP07")
    assert session["stop_reason"] == "Local" and session["energy_wh"] == 3200
    assert parse_ts_or_none(session["started"]) == parse_ts_or_none(started_at) and parse_ts_or_none(session["stopped"]) == parse_ts_or_none(stopped_at)


async def test_TC_007_CSMS_regular_start_charging_session_cached_id(square: Daemon) -> None:
    """TC_007_CSMS "Regular Start Charging Session – Cached Id".

    The charge point authorizes from its cache and sends StartTransaction without an Authorize first:
    the gateway accepts it all the same.
    """
    async with connect(square, "CP08") as cp:
        await boot16(cp)
        await cp.ask(status(1, "Preparing"))
        tx = await start(cp, 1, "OCA-TAG-0007")
        await cp.ask(status(1, "Charging"))
        await until(lambda: bay(square, "B15")["status"] == "Charging", "B15 Charging")
        assert sessions(square, "CP08")[0]["id"] == tx


async def test_TC_024_CSMS_start_charging_session_lock_failure(square: Daemon) -> None:
    """TC_024_CSMS "Start Charging Session Lock Failure".

    After Preparing the charge point reports the connector Faulted with ConnectorLockFailure: the
    gateway answers and shows the fault with its error code.
    """
    async with connect(square, "CP08") as cp:
        await boot16(cp)
        await cp.ask(status(2, "Preparing"))
        await cp.ask(status(2, "Faulted", error_code="ConnectorLockFailure"))
        await until(lambda: bay(square, "B16")["status"] == "Faulted", "B16 Faulted")
        connector = charger(square, "CP08")["connectors"][1]
        assert connector["status"] == "Faulted" and connector["error_code"] == "ConnectorLockFailure"


async def test_TC_064_CSMS_data_transfer_to_a_central_system(square: Daemon) -> None:
    """TC_064_CSMS "Data Transfer to a Central System".

    The gateway supports no vendor extension: a DataTransfer is answered Rejected (OCTT allows
    Rejected, UnknownMessageId or UnknownVendorId), and the connection stays up.
    """
    async with connect(square, "CP01") as cp:
        await boot16(cp)
        answer = await cp.ask(call.DataTransfer(vendor_id="org.openchargealliance.octt", message_id="Test", data="x"))
        assert answer.status in ("Rejected", "UnknownMessageId", "UnknownVendorId")
        assert (await cp.ask(call.Heartbeat())).current_time.endswith("Z")
