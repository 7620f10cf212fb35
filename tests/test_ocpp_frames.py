"""Frame checks and wire conversions of the OCPP driver: no sockets, no clock."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.contract.clock import parse_ts_or_none, wire_ts
from drivers.ocpp.frames import (
    MAX_DEPTH,
    call_error_frame,
    check_frame,
    error_code_for,
    parse_meter_values,
    schema_error_code,
)

T0 = datetime(2026, 11, 28, 13, 5, 9, 123000, tzinfo=timezone.utc)


def _error(verdict) -> list:
    assert verdict.kind == "answer"
    frame = json.loads(verdict.reply)
    assert frame[0] == 4 and isinstance(frame[3], str) and frame[4] == {}
    return frame


@pytest.mark.parametrize(
    "raw",
    [
        '[2,"a1","Heartbeat",{}]',
        '[3,"a2",{"status":"Accepted"}]',
        '[4,"a3","NotImplemented","no",{}]',
        '[2,"a4","Foo",{}]',  # unknown actions are the router's business
        '[2,"a5","StartTransaction",{"connectorId":1,"meterStart":1e999999}]',  # schema's business
    ],
)
def test_well_formed_frames_are_routed(raw: str) -> None:
    verdict = check_frame(raw, "1.6")
    assert verdict.kind == "route"
    assert verdict.message == json.loads(raw) or "1e999999" in raw
    assert verdict.unique_id == json.loads(raw.replace("1e999999", "0"))[1]


@pytest.mark.parametrize(
    "raw",
    [
        b'[2,"a1","Heartbeat",{}]',
        "not json",
        "",
        "[2,'single quotes']",
        '{"a": 1}',
        '"just a string"',
        "[]",
        "[2]",
        '[2, 17, "Heartbeat", {}]',  # a message id must be a string
        '[2,"a1","Heartbeat",{"x":NaN}]',
        "[" * 10_000 + "]" * 10_000,
        '[2,"a1","DataTransfer",{"vendorId":"v","data":' + "[" * 40 + "]" * 40 + "}]",
        '[4,"a1","NotImplemented"]',  # a malformed CALLERROR is never answered
    ],
)
def test_unanswerable_frames_are_dropped_with_a_reason(raw: str | bytes) -> None:
    verdict = check_frame(raw, "1.6")
    assert verdict.kind == "drop"
    assert verdict.reason


@pytest.mark.parametrize(
    "raw, problem",
    [
        ('[2,"id1"]', "elements"),
        ('[2,"id1","Heartbeat"]', "elements"),
        ('[2,"id1","Heartbeat",{},{}]', "elements"),
        ('[2,"id1",7,{}]', "action"),
        ('[2,"id1","Heartbeat",[]]', "payload"),
        ('[3,"id1"]', "elements"),
        ('[3,"id1","x"]', "payload"),
        ('[7,"id1","Heartbeat",{}]', "type id"),
        ('["2","id1","Heartbeat",{}]', "type id"),
        ('[2.0,"id1","Heartbeat",{}]', "type id"),
        ('[true,"id1","Heartbeat",{}]', "type id"),
        ('[2,"' + "x" * 37 + '","Heartbeat",{}]', "36"),
    ],
)
def test_wrong_shapes_with_a_readable_id_are_answered(raw: str, problem: str) -> None:
    verdict = check_frame(raw, "1.6")
    frame = _error(verdict)
    assert frame[1] == json.loads(raw)[1]
    assert frame[2] == "FormationViolation"
    assert problem in frame[3]


def test_the_version_decides_the_spelling_of_format_violation() -> None:
    assert _error(check_frame('[2,"id1"]', "2.0.1"))[2] == "FormatViolation"
    assert _error(check_frame('[2,"id1"]', "ocpp1.6"))[2] == "FormationViolation"


def test_a_huge_integer_becomes_infinity_instead_of_an_unreadable_frame() -> None:
    raw = '[2,"id9","StartTransaction",{"meterStart":' + "9" * 5000 + "}]"
    verdict = check_frame(raw, "1.6")
    assert verdict.kind == "route"
    assert verdict.message is not None and verdict.message[3]["meterStart"] == float("inf")


def test_nesting_up_to_the_limit_is_fine() -> None:
    inner = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    assert check_frame('[2,"id1","DataTransfer",{"data":' + inner + "}]", "1.6").kind == "route"
    brackets_in_strings = '[2,"id1","DataTransfer",{"vendorId":"' + "[" * 100 + '"}]'
    assert check_frame(brackets_in_strings, "1.6").kind == "route"


@pytest.mark.parametrize(
    "code, v16, v201",
    [
        ("FormatViolation", "FormationViolation", "FormatViolation"),
        ("FormationViolation", "FormationViolation", "FormatViolation"),
        ("TypeConstraintViolation", "TypeConstraintViolation", "TypeConstraintViolation"),
        ("ProtocolError", "ProtocolError", "ProtocolError"),
        ("PropertyConstraintViolation", "PropertyConstraintViolation", "PropertyConstraintViolation"),
        ("OccurenceConstraintViolation", "OccurenceConstraintViolation", "OccurenceConstraintViolation"),
    ],
)
def test_library_error_codes_in_each_version(code: str, v16: str, v201: str) -> None:
    assert error_code_for(code, "1.6") == v16
    assert error_code_for(code, "2.0.1") == v201


def test_a_missing_required_property_is_a_format_violation() -> None:
    assert schema_error_code("ProtocolError", "1.6") == "FormationViolation"
    assert schema_error_code("ProtocolError", "2.0.1") == "FormatViolation"
    assert schema_error_code("TypeConstraintViolation", "1.6") == "TypeConstraintViolation"


def test_call_error_frames_are_ascii_json() -> None:
    frame = call_error_frame("\ud800é", "InternalError", "x")
    assert frame.isascii()
    assert json.loads(frame) == [4, "\ud800é", "InternalError", "x", {}]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300)
@given(json_values)
def test_check_frame_never_raises_on_json(value: object) -> None:
    verdict = check_frame(json.dumps(value), "1.6")
    assert verdict.kind in ("drop", "answer", "route")
    if verdict.kind == "answer":
        _error(verdict)


@settings(max_examples=300)
@given(st.lists(json_values, min_size=0, max_size=6), st.sampled_from([2, 3, 4, 5, "2"]), st.text(max_size=40))
def test_check_frame_never_raises_on_frame_like_lists(rest: list, type_id: object, unique_id: str) -> None:
    verdict = check_frame(json.dumps([type_id, unique_id, *rest]), "2.0.1")
    assert verdict.kind in ("drop", "answer", "route")
    if verdict.kind != "drop":
        assert verdict.unique_id == unique_id


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_check_frame_never_raises_on_noise(raw: bytes | str) -> None:
    assert check_frame(raw, "1.6").kind in ("drop", "answer", "route")


# --- times ---------------------------------------------------------------------------------


def test_times_on_the_wire_are_utc_milliseconds_with_z() -> None:
    assert wire_ts(T0) == "2026-11-28T13:05:09.123Z"
    with pytest.raises(ValueError, match="no timezone"):  # a naive time has no defined instant
        wire_ts(T0.replace(tzinfo=None))


@pytest.mark.parametrize(
    "text",
    ["2026-11-28T13:05:09.123Z", "2026-11-28T13:05:09.123+00:00", "2026-11-28T13:05:09.123", "2026-11-28T14:05:09.123+01:00"],
)
def test_charger_times_are_read_leniently(text: str) -> None:
    assert parse_ts_or_none(text) == T0


@pytest.mark.parametrize("text", ["yesterday", "", None, 17, "2026-13-45T00:00:00Z"])
def test_unreadable_times_are_none(text: object) -> None:
    assert parse_ts_or_none(text) is None


# --- meter values --------------------------------------------------------------------------


def _sv(value: str, measurand: str | None = None, **more: str) -> dict:
    entry = {"value": value, **more}
    if measurand is not None:
        entry["measurand"] = measurand
    return entry


def test_meter_values_per_phase_with_units_converted() -> None:
    meter_value = [
        {
            "timestamp": "2026-11-28T13:05:09.123Z",
            "sampledValue": [
                _sv("15.8", "Current.Import", phase="L1", unit="A"),
                _sv("15.7", "Current.Import", phase="L2-N"),
                _sv("15.9", "Current.Import", phase="L3"),
                _sv("0.3", "Current.Import", phase="N"),
                _sv("10.9", "Power.Active.Import", unit="kW"),
                _sv("1.5", unit="kWh"),  # the default measurand is the energy register
                _sv("16", "Current.Offered"),
                _sv("230.1", "Voltage", phase="L1-N"),
            ],
        }
    ]
    samples, problems = parse_meter_values("CP01", 1, 42, meter_value, T0)
    assert problems == []
    (sample,) = samples
    assert sample.at == T0 and sample.transaction_id == 42 and sample.connector_id == 1
    assert sample.current_a == (15.8, 15.7, 15.9)
    assert sample.power_w == pytest.approx(10_900)
    assert sample.energy_wh == pytest.approx(1500)
    assert sample.offered_a == 16


def test_a_current_without_phase_counts_as_l1_and_phases_of_power_are_summed() -> None:
    meter_value = [
        {
            "timestamp": "2026-11-28T13:05:09Z",
            "sampledValue": [
                _sv("7.1", "Current.Import"),
                _sv("1000", "Power.Active.Import", phase="L1"),
                _sv("600", "Power.Active.Import", phase="L2"),
            ],
        },
        {"timestamp": "2026-11-28T13:05:10Z", "sampledValue": [_sv("123", "Energy.Active.Import.Register")]},
    ]
    samples, _ = parse_meter_values("CP01", 2, None, meter_value, T0)
    assert [s.current_a for s in samples] == [(7.1, None, None), (None, None, None)]
    assert samples[0].power_w == 1600 and samples[0].energy_wh is None
    assert samples[1].energy_wh == 123 and samples[1].power_w is None


@pytest.mark.parametrize("bad", ["abc", "nan", "inf", "", "12,5"])
def test_unparsable_numbers_are_skipped_and_reported(bad: str) -> None:
    meter_value = [{"timestamp": "bogus", "sampledValue": [_sv(bad, "Current.Import", phase="L1"), _sv("5", "Current.Import", phase="L2")]}]
    samples, problems = parse_meter_values("CP01", 1, None, meter_value, T0)
    assert samples[0].current_a == (None, 5.0, None)
    assert samples[0].at == T0  # unreadable timestamp: the time of receipt
    assert len(problems) == 2


def test_unknown_units_and_signed_data_are_not_taken_as_values() -> None:
    meter_value = [{"timestamp": "2026-11-28T13:05:09Z", "sampledValue": [_sv("5", "Power.Active.Import", unit="MW"), _sv("x", format="SignedData")]}]
    samples, problems = parse_meter_values("CP01", 1, None, meter_value, T0)
    assert samples[0].power_w is None and samples[0].energy_wh is None
    assert problems == ["Power.Active.Import: unit 'MW' not understood"]


@settings(max_examples=200)
@given(json_values)
def test_parse_meter_values_never_raises(value: object) -> None:
    samples, problems = parse_meter_values("CP01", 1, None, value, T0)
    assert isinstance(samples, list) and isinstance(problems, list)
