"""OCA test cases for a Central System, OCPP 1.6J remote control: remote start and stop, reset, unlock,
trigger messages. The operator sends each request through POST /api/chargers/<id>/call/<Action>
(payload in 1.6, answered 200 with the charge point's answer, 409 when it is not connected)."""

from __future__ import annotations

import pytest
from ocpp import v16

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    bay,
    boot16,
    call_api,
    charger,
    connect,
    meter16,
    sessions,
    square_fixture,
    until,
    wire_time,
)

pytestmark = pytest.mark.integration

call = v16.call


square = square_fixture("oca16-remote", chargers=8, connectors=2, grid_limit_a=256)


def status(n: int, word: str) -> call.StatusNotification:
    return call.StatusNotification(connector_id=n, error_code="NoError", status=word)


async def start(cp, connector: int, tag: str) -> int:
    answer = await cp.ask(call.StartTransaction(connector_id=connector, id_tag=tag, meter_start=0, timestamp=wire_time()))
    assert answer.id_tag_info == {"status": "Accepted"}
    return answer.transaction_id


async def test_TC_010_CSMS_remote_start_charging_session_cable_plugged_in_first(square: Daemon) -> None:
    """TC_010_CSMS "Remote Start Charging Session – Cable Plugged in First".

    Preparing; the gateway carries the operator's RemoteStartTransaction to the charge point unchanged
    and answers with its Accepted; the Authorize and StartTransaction that follow are Accepted.
    """
    async with connect(square, "CP01") as cp:
        await boot16(cp)
        await cp.ask(status(1, "Preparing"))
        request = {"connectorId": 1, "idTag": "OCA-REMOTE-10"}
        assert await call_api(square, "CP01", "RemoteStartTransaction", request) == (200, {"status": "Accepted"})
        assert await cp.expect("RemoteStartTransaction") == request
        assert (await cp.ask(call.Authorize(id_tag="OCA-REMOTE-10"))).id_tag_info == {"status": "Accepted"}
        tx = await start(cp, 1, "OCA-REMOTE-10")
        await cp.ask(status(1, "Charging"))
        await until(lambda: bay(square, "B01")["status"] == "Charging", "B01 Charging")
        assert sessions(square, "CP01")[0]["id"] == tx


async def test_TC_011_1_CSMS_remote_start_charging_session_remote_start_first(square: Daemon) -> None:
    """TC_011_1_CSMS "Remote Start Charging Session – Remote Start First".

    RemoteStartTransaction before the cable: Accepted; Authorize (Accepted), Preparing, then the
    StartTransaction when the cable goes in (Accepted) and Charging.
    """
    async with connect(square, "CP02") as cp:
        await boot16(cp)
        request = {"connectorId": 2, "idTag": "OCA-REMOTE-11"}
        assert await call_api(square, "CP02", "RemoteStartTransaction", request) == (200, {"status": "Accepted"})
        assert await cp.expect("RemoteStartTransaction") == request
        assert (await cp.ask(call.Authorize(id_tag="OCA-REMOTE-11"))).id_tag_info == {"status": "Accepted"}
        await cp.ask(status(2, "Preparing"))
        await start(cp, 2, "OCA-REMOTE-11")
        await cp.ask(status(2, "Charging"))
        await until(lambda: bay(square, "B04")["status"] == "Charging", "B04 Charging")


async def test_TC_012_CSMS_remote_stop_charging_session(square: Daemon) -> None:
    """TC_012_CSMS "Remote Stop Charging Session".

    RemoteStopTransaction with the transaction's id: Accepted; StopTransaction reason Remote closes
    the session; Finishing, then Available once the cable is out.
    """
    async with connect(square, "CP03") as cp:
        await boot16(cp)
        await cp.ask(status(1, "Preparing"))
        tx = await start(cp, 1, "OCA-REMOTE-12")
        await cp.ask(status(1, "Charging"))
        assert await call_api(square, "CP03", "RemoteStopTransaction", {"transactionId": tx}) == (200, {"status": "Accepted"})
        assert await cp.expect("RemoteStopTransaction") == {"transactionId": tx}
        await cp.ask(call.StopTransaction(meter_stop=900, timestamp=wire_time(), transaction_id=tx, reason="Remote"))
        await cp.ask(status(1, "Finishing"))
        await until(lambda: bay(square, "B05")["status"] == "Finishing", "B05 Finishing")
        await cp.ask(status(1, "Available"))
        (session,) = sessions(square, "CP03")
        assert session["stop_reason"] == "Remote" and session["energy_wh"] == 900


async def test_TC_026_CSMS_remote_start_charging_session_rejected(square: Daemon) -> None:
    """TC_026_CSMS "Remote Start Charging Session – Rejected".

    The charge point rejects the RemoteStartTransaction: the operator gets 200 with status Rejected,
    and no session is opened.
    """
    async with connect(square, "CP04") as cp:
        await boot16(cp)
        cp.answers["RemoteStartTransaction"] = {"status": "Rejected"}
        request = {"connectorId": 1, "idTag": "OCA-REMOTE-26"}
        assert await call_api(square, "CP04", "RemoteStartTransaction", request) == (200, {"status": "Rejected"})
        assert await cp.expect("RemoteStartTransaction") == request
        assert sessions(square, "CP04") == []


async def test_TC_028_CSMS_remote_stop_transaction_rejected(square: Daemon) -> None:
    """TC_028_CSMS "Remote Stop Transaction – Rejected".

    A RemoteStopTransaction for an unknown transaction id is rejected by the charge point: the
    operator gets 200 with Rejected and the running session stays open.
    """
    async with connect(square, "CP04") as cp:
        await boot16(cp)
        await cp.ask(status(2, "Preparing"))
        tx = await start(cp, 2, "OCA-REMOTE-28")
        await cp.ask(status(2, "Charging"))
        cp.answers["RemoteStopTransaction"] = {"status": "Rejected"}
        assert await call_api(square, "CP04", "RemoteStopTransaction", {"transactionId": tx + 1000}) == (200, {"status": "Rejected"})
        assert await cp.expect("RemoteStopTransaction") == {"transactionId": tx + 1000}
        assert [s["stopped"] for s in sessions(square, "CP04") if s["id"] == tx] == [None]


async def reset(square: Daemon, charger_id: str, kind: str) -> None:
    async with connect(square, charger_id) as cp:
        await boot16(cp)
        assert await call_api(square, charger_id, "Reset", {"type": kind}) == (200, {"status": "Accepted"})
        assert await cp.expect("Reset") == {"type": kind}
    # the charge point reboots: while it is away the operator is told it is not connected
    await until(lambda: not charger(square, charger_id)["online"], f"{charger_id} offline")
    code, body = await call_api(square, charger_id, "Reset", {"type": kind})
    assert code == 409 and "not connected" in body["error"]
    async with connect(square, charger_id) as cp:
        boot = await boot16(cp)
        assert boot.status == "Accepted"
        # set up again on the new connection (a boot voids what it held); the connectors reported
        # their status at the boot, so none is asked for
        await cp.expect("SetChargingProfile", lambda p: p["csChargingProfiles"]["chargingProfilePurpose"] == "TxDefaultProfile")


async def test_TC_013_CSMS_hard_reset(square: Daemon) -> None:
    """TC_013_CSMS "Hard Reset".

    Reset Hard: Accepted; the charge point reboots, boots again (Accepted) and reports its connectors;
    the gateway sets it up again on the new connection.
    """
    await reset(square, "CP05", "Hard")


async def test_TC_014_CSMS_soft_reset(square: Daemon) -> None:
    """TC_014_CSMS "Soft Reset"; as TC_013_CSMS with type Soft."""
    await reset(square, "CP06", "Soft")


async def test_TC_017_1_CSMS_unlock_connector_no_charging_session(square: Daemon) -> None:
    """TC_017_1_CSMS "Unlock connector - no charging session running (Not fixed cable)".

    UnlockConnector for connector 1: the gateway carries it and returns the charge point's Unlocked.
    """
    async with connect(square, "CP07") as cp:
        await boot16(cp)
        assert await call_api(square, "CP07", "UnlockConnector", {"connectorId": 1}) == (200, {"status": "Unlocked"})
        assert await cp.expect("UnlockConnector") == {"connectorId": 1}


async def test_TC_018_1_CSMS_unlock_connector_with_charging_session(square: Daemon) -> None:
    """TC_018_1_CSMS "Unlock Connector - With Charging Session (Not fixed cable)".

    UnlockConnector during a transaction: Unlocked; the charge point stops the transaction (reason
    UnlockCommand), Finishing, then Available; the session closes with that reason.
    """
    async with connect(square, "CP07") as cp:
        await boot16(cp)
        await cp.ask(status(2, "Preparing"))
        tx = await start(cp, 2, "OCA-REMOTE-18")
        await cp.ask(status(2, "Charging"))
        assert await call_api(square, "CP07", "UnlockConnector", {"connectorId": 2}) == (200, {"status": "Unlocked"})
        await cp.ask(call.StopTransaction(meter_stop=300, timestamp=wire_time(), transaction_id=tx, reason="UnlockCommand"))
        await cp.ask(status(2, "Finishing"))
        await cp.ask(status(2, "Available"))
        await until(lambda: bay(square, "B14")["status"] == "Available", "B14 Available")
        assert [s["stop_reason"] for s in sessions(square, "CP07") if s["id"] == tx] == ["UnlockCommand"]


async def test_TC_019_1_CSMS_retrieve_all_configuration_keys(square: Daemon) -> None:
    """TC_019_1_CSMS "Retrieve all configuration keys": a GetConfiguration without keys reaches the
    charge point as sent and every key it reports comes back."""
    async with connect(square, "CP07") as cp:
        await boot16(cp)
        mark = cp.mark()
        code, answer = await call_api(square, "CP07", "GetConfiguration", {})
        assert await cp.expect("GetConfiguration", lambda p: p == {}, after=mark) == {}
        # The gateway's own set-up may change a key while this runs: compare with what the station
        # answered to this very request, and that with every key it has.
        [sent] = [f.answer for f in cp.received[mark:] if f.action == "GetConfiguration" and f.payload == {}]
        assert code == 200 and answer == sent
        assert {k["key"] for k in answer["configurationKey"]} == set(cp.config)


async def test_TC_030_CSMS_unlock_connector_unlock_failure(square: Daemon) -> None:
    """TC_030_CSMS "Unlock Connector – Unlock Failure": the charge point's UnlockFailed reaches the operator."""
    async with connect(square, "CP07") as cp:
        await boot16(cp)
        cp.answers["UnlockConnector"] = {"status": "UnlockFailed"}
        assert await call_api(square, "CP07", "UnlockConnector", {"connectorId": 2}) == (200, {"status": "UnlockFailed"})


async def test_TC_031_CSMS_unlock_connector_unknown_connector(square: Daemon) -> None:
    """TC_031_CSMS "Unlock Connector – Unknown Connector": an unknown connector id is answered NotSupported."""
    async with connect(square, "CP07") as cp:
        await boot16(cp)
        cp.answers["UnlockConnector"] = {"status": "NotSupported"}
        assert await call_api(square, "CP07", "UnlockConnector", {"connectorId": 9}) == (200, {"status": "NotSupported"})
        assert await cp.expect("UnlockConnector") == {"connectorId": 9}


async def test_TC_054_CSMS_trigger_message(square: Daemon) -> None:
    """TC_054_CSMS "Trigger Message".

    MeterValues, Heartbeat, StatusNotification (for the configured connector), Diagnostics- and
    FirmwareStatusNotification: each TriggerMessage reaches the charge point as sent, its Accepted
    comes back, and the gateway answers the message the charge point then sends.
    """
    async with connect(square, "CP08") as cp:
        await boot16(cp)
        # A car is plugged in: only then is a connector's reading its car's current (control.md rule 1).
        await cp.ask(status(1, "Preparing"))
        triggers = [
            ({"requestedMessage": "MeterValues", "connectorId": 1}, call.MeterValues(connector_id=1, meter_value=meter16(0, 0.0, context="Trigger"))),
            ({"requestedMessage": "Heartbeat"}, call.Heartbeat()),
            ({"requestedMessage": "StatusNotification", "connectorId": 1}, status(1, "Available")),
            ({"requestedMessage": "DiagnosticsStatusNotification"}, call.DiagnosticsStatusNotification(status="Idle")),
            ({"requestedMessage": "FirmwareStatusNotification"}, call.FirmwareStatusNotification(status="Idle")),
        ]
        for request, triggered in triggers:
            mark = cp.mark()
            assert await call_api(square, "CP08", "TriggerMessage", request) == (200, {"status": "Accepted"})
            assert await cp.expect("TriggerMessage", after=mark) == request
            assert await cp.ask(triggered) is not None  # answered, and the answer fits the schema
            if request["requestedMessage"] == "MeterValues":
                await until(lambda: bay(square, "B15")["current_a"] == 0.0, "B15 triggered meter values")
        assert bay(square, "B15")["current_a"] is None  # Available again: no car, so no current


async def test_TC_055_CSMS_trigger_message_rejected(square: Daemon) -> None:
    """TC_055_CSMS "Trigger Message - Rejected": the charge point's Rejected reaches the operator."""
    async with connect(square, "CP08") as cp:
        await boot16(cp)
        cp.answers["TriggerMessage"] = {"status": "Rejected"}
        request = {"requestedMessage": "MeterValues", "connectorId": 2}
        assert await call_api(square, "CP08", "TriggerMessage", request) == (200, {"status": "Rejected"})
        assert await cp.expect("TriggerMessage", lambda p: p == request)
