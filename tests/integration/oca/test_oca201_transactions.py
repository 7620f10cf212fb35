"""OCA test cases for a CSMS, OCPP 2.0.1 blocks E (transactions) and F (remote start and stop), in
free mode (every idToken is accepted). The station names its transactions; the gateway keeps a session
for each under that name (GET /api/sessions shows it as `id`)."""

from __future__ import annotations

import pytest
from ocpp import v201

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    Tx,
    bay,
    boot201,
    call_api,
    connect,
    energy_transfer_started,
    id_token,
    meter201,
    parse_ts_or_none,
    session_of,
    sessions,
    square_fixture,
    until,
    wire_time,
)

pytestmark = pytest.mark.integration

call = v201.call


square = square_fixture("oca201-tx", chargers=9, connectors=2, grid_limit_a=256)


async def test_TC_E_03_CSMS_local_start_transaction_cable_plugin_first(square: Daemon) -> None:
    """TC_E_03_CSMS "Local start transaction - Cable plugin first - Success".

    Occupied and TransactionEvent Started (CablePluggedIn, EVConnected, no idToken): answered without
    idTokenInfo, the session opens untagged; the idToken that follows (Updated, Authorized) is
    Accepted; Charging shows on the bay.
    """
    async with connect(square, "CP01", "2.0.1") as cs:
        await boot201(cs)
        await cs.ask(call.StatusNotification(timestamp=wire_time(), connector_status="Occupied", evse_id=1, connector_id=1))
        tx = Tx(cs, 1)
        started = await tx.event("Started", "CablePluggedIn", "EVConnected")
        assert started.id_token_info is None
        await until(lambda: bay(square, "B01")["status"] == "Preparing", "B01 Preparing")
        assert session_of(square, "CP01", tx.id)["stopped"] is None
        authorized = await tx.event("Updated", "Authorized", id_token=id_token("OCA-TOKEN-E03"))
        assert authorized.id_token_info == {"status": "Accepted"}
        await tx.event("Updated", "ChargingStateChanged", "Charging")
        await until(lambda: bay(square, "B01")["status"] == "Charging", "B01 Charging")


async def test_TC_E_04_CSMS_local_start_transaction_authorization_first(square: Daemon) -> None:
    """TC_E_04_CSMS "Local start transaction - Authorization first - Success".

    Authorize (Accepted), then Started with the idToken (Accepted), Occupied, Charging.
    """
    async with connect(square, "CP02", "2.0.1") as cs:
        await boot201(cs)
        tx = await energy_transfer_started(cs, 2, "OCA-TOKEN-E04")
        await until(lambda: bay(square, "B04")["status"] == "Charging", "B04 Charging")
        assert session_of(square, "CP02", tx.id)["stopped"] is None


async def test_TC_E_15_CSMS_stop_transaction_options_stop_authorized_local(square: Daemon) -> None:
    """TC_E_15_CSMS "Stop transaction options - StopAuthorized - Local".

    The driver presents the idToken to stop (Updated, StopAuthorized): Accepted; the Ended event
    (stoppedReason Local) closes the session; Finishing until the cable is out, then Available.
    """
    async with connect(square, "CP04", "2.0.1") as cs:
        await boot201(cs)
        tx = await energy_transfer_started(cs, 2, "OCA-TOKEN-E15")
        stop = await tx.event("Updated", "StopAuthorized", "EVConnected", id_token=id_token("OCA-TOKEN-E15"))
        assert stop.id_token_info == {"status": "Accepted"}
        await tx.event("Ended", "StopAuthorized", "EVConnected", info={"stopped_reason": "Local"}, meter_value=meter201(1800, 0, "Transaction.End"))
        await until(lambda: bay(square, "B08")["status"] == "Finishing", "B08 Finishing")
        await cs.ask(call.StatusNotification(timestamp=wire_time(), connector_status="Available", evse_id=2, connector_id=1))
        await until(lambda: bay(square, "B08")["status"] == "Available", "B08 Available")
        assert session_of(square, "CP04", tx.id)["stop_reason"] == "Local"


async def test_TC_E_17_CSMS_stop_transaction_options_deauthorized_ev_side_disconnect(square: Daemon) -> None:
    """TC_E_17_CSMS "Stop transaction options - Deauthorized - EV side disconnect".

    From EnergyTransferSuspended: Ended with EVCommunicationLost, Idle, stoppedReason EVDisconnected:
    the session closes with that reason (the cable may still hang at the station: Finishing).
    """
    async with connect(square, "CP05", "2.0.1") as cs:
        await boot201(cs)
        tx = await energy_transfer_started(cs, 1)
        await tx.event("Updated", "ChargingStateChanged", "SuspendedEV")
        await until(lambda: bay(square, "B09")["status"] == "SuspendedEV", "B09 SuspendedEV")
        await tx.event("Ended", "EVCommunicationLost", "Idle", info={"stopped_reason": "EVDisconnected"})
        await until(lambda: bay(square, "B09")["status"] == "Finishing", "B09 Finishing")
        assert session_of(square, "CP05", tx.id)["stop_reason"] == "EVDisconnected"


async def test_TC_E_20_CSMS_stop_transaction_options_ev_disconnected_ev_side(square: Daemon) -> None:
    """TC_E_20_CSMS "Stop transaction options - EVDisconnected - EV side (able to charge IEC 61851-1 EV)".

    Reusable state EVDisconnected: the Ended event, then the connector Available: the bay is free.
    """
    async with connect(square, "CP05", "2.0.1") as cs:
        await boot201(cs)
        tx = await energy_transfer_started(cs, 2)
        await tx.event("Ended", "EVCommunicationLost", "Idle", info={"stopped_reason": "EVDisconnected"})
        await cs.ask(call.StatusNotification(timestamp=wire_time(), connector_status="Available", evse_id=2, connector_id=1))
        await until(lambda: bay(square, "B10")["status"] == "Available", "B10 Available")
        assert session_of(square, "CP05", tx.id)["stopped"] is not None


async def test_TC_E_21_CSMS_stop_transaction_options_stop_authorized_remote(square: Daemon) -> None:
    """TC_E_21_CSMS "Stop transaction options - StopAuthorized - Remote".

    The operator's RequestStopTransaction names the station's own transactionId: Accepted; the Ended
    event (RemoteStop, stoppedReason Remote) closes the session.
    """
    async with connect(square, "CP06", "2.0.1") as cs:
        await boot201(cs)
        tx = await energy_transfer_started(cs, 1)
        assert await call_api(square, "CP06", "RequestStopTransaction", {"transactionId": tx.id}) == (200, {"status": "Accepted"})
        assert await cs.expect("RequestStopTransaction") == {"transactionId": tx.id}
        await tx.event("Ended", "RemoteStop", "EVConnected", info={"stopped_reason": "Remote"})
        assert session_of(square, "CP06", tx.id)["stop_reason"] == "Remote"


async def test_TC_F_01_CSMS_remote_start_transaction_cable_plugin_first(square: Daemon) -> None:
    """TC_F_01_CSMS "Remote start transaction - Cable plugin first".

    With the cable in (a transaction Started without idToken), the operator's RequestStartTransaction
    reaches the station as sent; its answer (Accepted, with the running transactionId) comes back
    whole; the RemoteStart event with the idToken is Accepted.
    """
    async with connect(square, "CP06", "2.0.1") as cs:
        await boot201(cs)
        await cs.ask(call.StatusNotification(timestamp=wire_time(), connector_status="Occupied", evse_id=2, connector_id=1))
        tx = Tx(cs, 2)
        await tx.event("Started", "CablePluggedIn", "EVConnected")
        cs.answers["RequestStartTransaction"] = {"status": "Accepted", "transactionId": tx.id}
        request = {"evseId": 2, "remoteStartId": 101, "idToken": {"idToken": "OCA-REMOTE-F01", "type": "Central"}}
        assert await call_api(square, "CP06", "RequestStartTransaction", request) == (200, {"status": "Accepted", "transactionId": tx.id})
        assert await cs.expect("RequestStartTransaction") == request
        started = await tx.event("Updated", "RemoteStart", "Charging", info={"remote_start_id": 101},
                                 id_token={"id_token": "OCA-REMOTE-F01", "type": "Central"})
        assert started.id_token_info == {"status": "Accepted"}
        await until(lambda: bay(square, "B12")["status"] == "Charging", "B12 Charging")


async def test_TC_F_02_CSMS_remote_start_first_authorize_remote_start(square: Daemon) -> None:
    """TC_F_02_CSMS "Remote start transaction - Remote start first - AuthorizeRemoteStart is true".

    RequestStartTransaction first (Accepted); the station authorizes the idToken (Accepted) and
    starts the transaction (RemoteStart, its remoteStartId) when the cable goes in: Accepted.
    """
    async with connect(square, "CP07", "2.0.1") as cs:
        await boot201(cs)
        request = {"evseId": 1, "remoteStartId": 102, "idToken": {"idToken": "OCA-REMOTE-F02", "type": "ISO14443"}}
        assert await call_api(square, "CP07", "RequestStartTransaction", request) == (200, {"status": "Accepted"})
        assert await cs.expect("RequestStartTransaction") == request
        assert (await cs.ask(call.Authorize(id_token=id_token("OCA-REMOTE-F02")))).id_token_info["status"] == "Accepted"
        tx = Tx(cs, 1)
        started = await tx.event("Started", "RemoteStart", "EVConnected", info={"remote_start_id": 102}, id_token=id_token("OCA-REMOTE-F02"))
        assert started.id_token_info == {"status": "Accepted"}
        await cs.ask(call.StatusNotification(timestamp=wire_time(), connector_status="Occupied", evse_id=1, connector_id=1))
        await tx.event("Updated", "ChargingStateChanged", "Charging")
        await until(lambda: bay(square, "B13")["status"] == "Charging", "B13 Charging")


async def test_TC_E_39_CSMS_stop_transaction_options_deauthorized_timeout(square: Daemon) -> None:
    """TC_E_39_CSMS "Stop transaction options - Deauthorized - timeout".

    Authorized first, but no cable within the station's EVConnectionTimeOut: the station ends the
    transaction (EVConnectTimeout, stoppedReason Timeout) and the gateway closes the session so.
    """
    async with connect(square, "CP07", "2.0.1") as cs:
        await boot201(cs)
        tx = Tx(cs, 2)
        started = await tx.event("Started", "Authorized", info={}, id_token=id_token("OCA-TOKEN-E39"))
        assert started.id_token_info == {"status": "Accepted"}
        await tx.event("Ended", "EVConnectTimeout", "Idle", info={"stopped_reason": "Timeout"})
        assert session_of(square, "CP07", tx.id)["stop_reason"] == "Timeout"
        await until(lambda: bay(square, "B14")["status"] in (None, "Available"), "B14 free")


async def test_TC_E_53_CSMS_reset_sequence_number_seqno_0_at_start(square: Daemon) -> None:
    """TC_E_53_CSMS "Reset Sequence Number - CSMS accepting seqNo = 0 at start of transaction".

    Two transactions in a row on one EVSE, each numbered from seqNo 0: both are accepted as their
    own sessions, neither taken for a repeat of the other.
    """
    async with connect(square, "CP08", "2.0.1") as cs:
        await boot201(cs)
        done = []
        for _ in range(2):
            tx = await energy_transfer_started(cs, 1)
            assert tx.seq == 2
            await tx.event("Ended", "EVCommunicationLost", "Idle", info={"stopped_reason": "EVDisconnected"})
            done.append(tx)
        assert [session_of(square, "CP08", tx.id)["stopped"] is not None for tx in done] == [True, True]
    assert "seqNo 0 repeated" not in square.log()


async def test_TC_E_43_CS_offline_transaction_events_replayed(square: Daemon) -> None:
    """TC_E_43_CS "Offline Behaviour - Transaction during offline period" (a Charging Station case:
    OCA has no CSMS-side one; these are the frames it makes a station send).

    After the outage the station empties its queue: Started, Updated and Ended, all with offline
    true and their own times, the last sent twice (its answer was lost). The gateway keeps one
    session with the station's start and stop times and energy, and counts the repeat once.
    """
    async with connect(square, "CP09", "2.0.1") as cs:
        await boot201(cs)
    async with connect(square, "CP09", "2.0.1") as cs:
        await cs.ask(call.BootNotification(charging_station={"model": "Scripted", "vendor_name": "OCA"}, reason="PowerUp"))
        tx = Tx(cs, 1)
        start, stop = wire_time(-900), wire_time(-120)
        started = await tx.event("Started", "Authorized", "Charging", offline=True, timestamp=start,
                                 id_token=id_token("OCA-OFFLINE-1"), meter_value=meter201(10000, 0, "Transaction.Begin"))
        assert started.id_token_info == {"status": "Accepted"}
        await tx.event("Updated", "MeterValuePeriodic", "Charging", offline=True, timestamp=wire_time(-500), meter_value=meter201(12000, 16))
        for _ in range(2):
            await tx.event("Ended", "EVCommunicationLost", "Idle", offline=True, timestamp=stop, info={"stopped_reason": "EVDisconnected"},
                           meter_value=meter201(13000, 0, "Transaction.End"))
            tx.seq -= 1
    found = session_of(square, "CP09", tx.id)
    assert found["energy_wh"] == 3000 and len(sessions(square, "CP09")) == 1
    assert parse_ts_or_none(found["started"]) == parse_ts_or_none(start) and parse_ts_or_none(found["stopped"]) == parse_ts_or_none(stop)
    assert "seqNo 2 repeated" in square.log()
