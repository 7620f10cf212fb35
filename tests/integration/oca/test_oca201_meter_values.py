"""OCA test cases for a CSMS, OCPP 2.0.1 block J (meter values): sampled values in transaction events
and clock-aligned values outside a transaction, as the bays and sessions show them."""

from __future__ import annotations

import uuid

import pytest
from ocpp import v201

from tests.integration.harness import Daemon
from tests.integration.oca.stations import (
    Tx,
    bay,
    boot201,
    connect,
    energy_transfer_started,
    id_token,
    meter201,
    session_of,
    sessions,
    square_fixture,
    until,
    wire_time,
)

pytestmark = pytest.mark.integration

call = v201.call


square = square_fixture("oca201-meter", chargers=4, connectors=2, grid_limit_a=256)


async def test_TC_J_07_CSMS_sampled_meter_values_event_type_started(square: Daemon) -> None:
    """TC_J_07_CSMS "Sampled Meter Values - EventType Started - EVSE known": the Started event's
    Transaction.Begin reading is the session's start reading."""
    async with connect(square, "CP01", "2.0.1") as cs:
        await boot201(cs)
        tx = Tx(cs, 1)
        await tx.event("Started", "CablePluggedIn", "EVConnected", meter_value=meter201(4321, 0, "Transaction.Begin"))
        assert session_of(square, "CP01", tx.id)["meter_start_wh"] == 4321


async def test_TC_J_08_CSMS_sampled_meter_values_transaction_begin_evse_not_known(square: Daemon) -> None:
    """TC_J_08_CSMS "Sampled Meter Values - Context Transaction.Begin - EVSE not known".

    Authorized before the cable, the station does not know the EVSE yet: its Started event carries the
    idToken but no evse, and must be answered with the idToken's status (Accepted). The EVSE comes with
    the next event (CablePluggedIn, Transaction.Begin reading); the session then runs on that EVSE.
    """
    async with connect(square, "CP03", "2.0.1") as cs:
        await boot201(cs)
        tx_id = str(uuid.uuid4())
        started = await cs.ask(call.TransactionEvent(
            event_type="Started", timestamp=wire_time(), trigger_reason="Authorized", seq_no=0,
            transaction_info={"transaction_id": tx_id}, id_token=id_token("OCA-TOKEN-J08")))
        assert started.id_token_info == {"status": "Accepted"}
        await cs.ask(call.StatusNotification(timestamp=wire_time(), connector_status="Occupied", evse_id=2, connector_id=1))
        await cs.ask(call.TransactionEvent(
            event_type="Updated", timestamp=wire_time(), trigger_reason="CablePluggedIn", seq_no=1,
            transaction_info={"transaction_id": tx_id, "charging_state": "EVConnected"}, evse={"id": 2, "connector_id": 1},
            meter_value=meter201(777, 0, "Transaction.Begin")))
        found = session_of(square, "CP03", tx_id)
        assert found["connector"] == 2 and found["meter_start_wh"] == 777


async def test_TC_J_09_CSMS_sampled_meter_values_event_type_updated(square: Daemon) -> None:
    """TC_J_09_CSMS "Sampled Meter Values - EventType Updated": periodic samples in Updated events
    feed the bay's current and the session's energy so far."""
    async with connect(square, "CP01", "2.0.1") as cs:
        await boot201(cs)
        tx = await energy_transfer_started(cs, 2)
        await tx.event("Updated", "MeterValuePeriodic", "Charging", meter_value=meter201(1600, 15.5))
        await until(lambda: bay(square, "B02")["current_a"] == 15.5, "B02 15.5 A")
        assert session_of(square, "CP01", tx.id)["energy_wh"] == 600


async def test_TC_J_10_CSMS_sampled_meter_values_event_type_ended(square: Daemon) -> None:
    """TC_J_10_CSMS "Sampled Meter Values - EventType Ended": the Ended event's Transaction.End
    reading closes the session's energy."""
    async with connect(square, "CP02", "2.0.1") as cs:
        await boot201(cs)
        tx = await energy_transfer_started(cs, 1)
        await tx.event("Ended", "EVCommunicationLost", "Idle", info={"stopped_reason": "EVDisconnected"},
                       meter_value=meter201(3500, 0, "Transaction.End"))
        found = session_of(square, "CP02", tx.id)
        assert found["meter_stop_wh"] == 3500 and found["energy_wh"] == 2500


async def test_TC_J_01_CSMS_clock_aligned_meter_values_no_transaction(square: Daemon) -> None:
    """TC_J_01_CSMS "Clock-aligned Meter Values - No transaction ongoing".

    MeterValues (Sample.Clock) for the main meter (EVSE 0) and an EVSE, and the FiscalMetering
    NotifyEvent, are all answered; the EVSE's reading shows on its bay while a car is plugged in
    (control.md rule 1: no car, no current), the main meter on none.
    """
    async with connect(square, "CP04", "2.0.1") as cs:
        await boot201(cs)
        await cs.ask(call.StatusNotification(timestamp=wire_time(), connector_status="Occupied", evse_id=1, connector_id=1))
        for evse in (0, 1):
            await cs.ask(call.MeterValues(evse_id=evse, meter_value=meter201(500, 7.5 if evse else 40.0, "Sample.Clock")))
        await cs.ask(call.NotifyEvent(generated_at=wire_time(), seq_no=0, event_data=[{
            "event_id": 7, "timestamp": wire_time(), "trigger": "Periodic", "actual_value": "500", "event_notification_type": "HardWiredMonitor",
            "component": {"name": "FiscalMetering"}, "variable": {"name": "EnergyImport"}}]))
        await until(lambda: bay(square, "B07")["current_a"] == 7.5, "B07 7.5 A")
        assert bay(square, "B08")["current_a"] in (None, 0.0) and sessions(square, "CP04") == []
