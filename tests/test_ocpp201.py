"""OCPP 2.0.1's pure parts: EVSE status in the square's words, seqNo checks, meter values, the
smart-charging payloads (each checked against the official schema)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ocpp.messages import Call, validate_payload

from drivers.contract.orders import Order
from drivers.ocpp import profiles201 as p201
from drivers.ocpp.dialects import Dialect16, Dialect201, dialect
from drivers.ocpp.evse201 import (
    ChargerBook,
    Evse,
    Transaction,
    meter_values_as_v16,
    sequence_problem,
)
from drivers.ocpp.frames import parse_meter_values

NOW = datetime(2026, 11, 28, 13, 5, 9, tzinfo=UTC)
V16_WORDS = {"Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Reserved", "Unavailable", "Faulted"}
PLUGGED = {"Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing"}


def valid(action: str, payload: dict) -> None:
    asyncio.run(validate_payload(Call("1", action, payload), "2.0.1"))


@pytest.mark.parametrize(
    ("connector", "tx", "state", "ended", "expected"),
    [
        ("Available", None, None, False, "Available"),
        ("Occupied", None, None, False, "Preparing"),  # plugged, no transaction yet
        ("Occupied", "t", "Charging", False, "Charging"),
        ("Occupied", "t", "SuspendedEV", False, "SuspendedEV"),
        ("Occupied", "t", "SuspendedEVSE", False, "SuspendedEVSE"),
        ("Occupied", "t", "EVConnected", False, "Preparing"),
        ("Occupied", None, "Idle", True, "Finishing"),  # transaction over, cable still in
        (None, "t", "Charging", False, "Charging"),  # the event came before the status
        ("Faulted", "t", "Charging", False, "Faulted"),
        ("Unavailable", None, None, False, "Unavailable"),
        ("Reserved", None, None, False, "Reserved"),
        (None, None, None, False, None),
    ],
)
def test_evse_status_in_the_squares_words(connector, tx, state, ended, expected) -> None:
    evse = Evse(connectors={1: connector} if connector else {}, transaction=tx, charging_state=state, ended=ended)
    assert evse.status() == expected


def test_idle_without_a_known_connector_status_is_not_plugged() -> None:
    # chargingState Idle means no car: a bay must not turn blue on it alone
    assert Evse(transaction="t", charging_state="Idle").status() is None


def test_another_connector_of_the_evse_does_not_hide_the_car() -> None:
    evse = Evse()
    evse.set_connector(2, "Occupied")
    evse.transaction, evse.charging_state = "t", "Charging"
    evse.set_connector(1, "Available")
    assert evse.connector_status == "Occupied" and evse.status() == "Charging"
    evse.set_connector(1, "Unavailable")
    assert evse.status() == "Charging"


def test_a_car_unplugged_before_its_transaction_ended_leaves_no_finishing_for_the_next() -> None:
    evse = Evse()
    evse.set_connector(1, "Occupied")
    evse.transaction, evse.charging_state = "t1", "Charging"
    evse.set_connector(1, "Available")  # EVDisconnected: the status comes first ...
    evse.transaction_ended("Idle")  # ... then the Ended
    assert evse.status() == "Available"
    evse.set_connector(1, "Occupied")  # the next car
    assert evse.status() == "Preparing"


def test_a_transaction_ended_with_the_cable_in_is_finishing_until_unplugged() -> None:
    evse = Evse()
    evse.set_connector(1, "Occupied")
    evse.transaction, evse.charging_state = "t1", "Charging"
    evse.transaction_ended("EVConnected")
    assert evse.status() == "Finishing"
    evse.set_connector(1, "Occupied")  # the same status again (a reconnect asks for it)
    assert evse.status() == "Finishing"
    evse.set_connector(1, "Available")
    assert evse.status() == "Available"


@given(
    st.sampled_from([None, "Available", "Occupied", "Reserved", "Unavailable", "Faulted"]),
    st.sampled_from([None, "tx"]),
    st.sampled_from([None, "Charging", "SuspendedEV", "SuspendedEVSE", "EVConnected", "Idle"]),
    st.booleans(),
)
def test_every_evse_state_maps_to_a_known_word_and_occupied_is_always_plugged(connector, tx, state, ended) -> None:
    status = Evse(connectors={1: connector} if connector else {}, transaction=tx, charging_state=state, ended=ended).status()
    assert status is None or status in V16_WORDS
    if connector == "Occupied":
        assert status in PLUGGED  # signage.md: a 2.0.1 connector Occupied is plugged
    if connector == "Available":
        assert status == "Available"


def test_a_seq_no_is_handled_once() -> None:
    tx = Transaction(evse_id=1)
    assert tx.note_seq(0) and tx.note_seq(2) and not tx.note_seq(2)
    assert tx.note_seq(1) and tx.last_seq == 2  # late, but new
    for n in range(3, 1000):
        tx.note_seq(n)
    assert len(tx.seen) <= 512 and not tx.note_seq(999)


def test_sequence_numbers() -> None:
    assert sequence_problem(None, 5) is None
    assert sequence_problem(4, 5) is None
    assert sequence_problem(5, 5) == "seqNo 5 repeated"
    assert "out of order" in (sequence_problem(5, 3) or "")
    assert "2 message(s) missing" in (sequence_problem(5, 8) or "")


def test_the_book_keeps_the_newest_transactions_only() -> None:
    book = ChargerBook()
    for i in range(40):
        book.transaction(f"tx{i}", 1)
    assert len(book.transactions) == 16 and "tx39" in book.transactions
    unplaced = book.transaction("authorized-first", None)
    assert unplaced.evse_id is None
    assert book.transaction("authorized-first", 2) is unplaced and unplaced.evse_id == 2
    assert book.transaction("authorized-first", 1).evse_id == 2  # a later event cannot move it


def test_meter_values_with_numbers_and_multipliers_read_as_in_16() -> None:
    entry = {
        "timestamp": "2026-11-28T13:05:09.123Z",
        "sampledValue": [
            {"value": 12.5, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "kWh"}},
            {"value": 16, "measurand": "Current.Import", "phase": "L2", "unitOfMeasure": {"unit": "A"}},
            {"value": 7.4, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W", "multiplier": 3}},
        ],
    }
    samples, problems = parse_meter_values("CP01", 1, None, meter_values_as_v16([entry]), NOW)
    assert problems == []
    (s,) = samples
    assert s.energy_wh == 12500 and s.current_a == (None, 16, None) and s.power_w == pytest.approx(7400)


def test_broken_meter_values_are_reported_not_raised() -> None:
    for junk in (None, [1], [{"sampledValue": [{"value": "x", "measurand": "Current.Import"}]}],
                 [{"sampledValue": [{"value": 1, "unitOfMeasure": {"multiplier": 400}}]}]):
        parse_meter_values("CP01", 1, None, meter_values_as_v16(junk), NOW)


def test_safe_defaults_on_evse_0_when_equal_else_per_evse() -> None:
    (one,) = p201.safe_defaults({1: 16.0, 2: 16.05})
    assert one["evseId"] == 0 and one["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 16.0
    apart = p201.safe_defaults({1: 6.0, 2: 0.0})
    assert [p["evseId"] for p in apart] == [1, 2]
    for payload in [one, *apart]:
        valid("SetChargingProfile", payload)
        assert payload["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile"


def test_a_lease_names_the_chargers_transaction_and_drops_to_the_grid_share() -> None:
    order = Order(key="CP01/2", limit_a=20.06, grid_only_a=10.0, why="increase", first_period_s=120)
    payload = p201.lease(order, 2, "b5a9-tx", NOW, 300)
    valid("SetChargingProfile", payload)
    profile = payload["chargingProfile"]
    assert payload["evseId"] == 2 and profile["transactionId"] == "b5a9-tx"
    assert profile["chargingProfilePurpose"] == "TxProfile" and profile["chargingProfileKind"] == "Absolute"
    (schedule,) = profile["chargingSchedule"]
    assert schedule["startSchedule"] == "2026-11-28T13:05:04.000Z" and schedule["duration"] == 300
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 20.0}, {"startPeriod": 120, "limit": 10.0}]


def test_the_other_payloads_fit_the_schema() -> None:
    valid("ClearChargingProfile", p201.clear_profile(p201.MAX_PROFILE_ID))
    valid("ClearChargingProfile", p201.clear_profile(101))
    valid("SetChargingProfile", p201.charger_max(24.0, NOW))
    valid("SetVariables", p201.meter_settings(5))
    valid("GetVariables", p201.rotation_query(2))


def test_phase_rotation_from_get_variables() -> None:
    answer = {"getVariableResult": [
        {"attributeStatus": "Accepted", "attributeValue": "STR", "component": {"name": "ChargingStation"}, "variable": {"name": "PhaseRotation"}},
        {"attributeStatus": "Accepted", "attributeValue": "TRS", "component": {"name": "EVSE", "evse": {"id": 2}}, "variable": {"name": "PhaseRotation"}},
        {"attributeStatus": "UnknownVariable", "component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "PhaseRotation"}},
        {"attributeStatus": "Accepted", "attributeValue": "XYZ", "component": {"name": "EVSE", "evse": {"id": 3}}, "variable": {"name": "PhaseRotation"}},
    ]}
    assert p201.phase_rotation(answer, 3) == {1: "STR", 2: "TRS", 3: "STR"}
    assert p201.phase_rotation({"getVariableResult": "junk"}, 2) == {}


def test_refused_settings() -> None:
    answer = {"setVariableResult": [
        {"attributeStatus": "Accepted", "component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}},
        {"attributeStatus": "Rejected", "component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedMeasurands"}},
    ]}
    assert p201.refused_settings(answer) == {"TxUpdatedMeasurands": "Rejected"}


def test_dialects_by_subprotocol() -> None:
    assert isinstance(dialect("ocpp2.0.1"), Dialect201)
    assert isinstance(dialect("ocpp1.6"), Dialect16) and isinstance(dialect(None), Dialect16)
    order = Order(key="CP01/1", limit_a=16, grid_only_a=16, why="increase")
    assert dialect("ocpp1.6").lease(order, 1, 42, NOW, 60)["csChargingProfiles"]["transactionId"] == 42
    assert dialect("ocpp2.0.1").lease(order, 1, "abc", NOW, 60)["chargingProfile"]["transactionId"] == "abc"


def test_configure_meter_asks_again_without_current_offered() -> None:
    sent: list[dict] = []

    async def call(action: str, payload: dict) -> dict:
        sent.append(payload)
        measurands = payload["setVariableData"][1]["attributeValue"]
        status = "Rejected" if "Current.Offered" in measurands else "Accepted"
        return {"setVariableResult": [{"attributeStatus": "Accepted", "component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}},
                                      {"attributeStatus": status, "component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedMeasurands"}}]}

    assert asyncio.run(Dialect201().configure_meter(call, 5)) == []
    assert len(sent) == 2 and "Current.Offered" not in sent[1]["setVariableData"][1]["attributeValue"]
