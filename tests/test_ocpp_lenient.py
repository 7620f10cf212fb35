"""Lenient mode: real chargers' schema breaks (OCPP 1.6 and 2.0.1) are mended into payloads the `ocpp`
library accepts, and breaks with no safe mend are left refused.

Every mended payload here is checked with the library's own `validate_payload`, and every broken
one is first shown to fail it, so each test proves the break was real and the mend suffices.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, validate_payload

from drivers.ocpp import lenient
from drivers.ocpp.lenient import MAX_FIXES_LISTED, normalize


def fits(action: str, payload: Any, version: str) -> bool:
    """True when the `ocpp` library's schema check passes the request."""
    try:
        asyncio.run(validate_payload(Call("1", action, payload), version))
    except OCPPError:
        return False
    return True


def mend(action: str, payload: dict[str, Any], version: str) -> tuple[dict[str, Any], list[str]]:
    """Mend a payload that the library refuses; check the result passes it and the input is untouched."""
    assert not fits(action, payload, version), "the test payload should break the schema"
    before = copy.deepcopy(payload)
    result = normalize(action, payload, version)
    assert payload == before, "normalize changed its input"
    assert result is not None, "expected the payload to be mended"
    mended, fixes = result
    assert fits(action, mended, version), mended
    assert fixes and all(isinstance(f, str) and f.isprintable() for f in fixes)
    return mended, fixes


def refused(action: str, payload: Any, version: str) -> None:
    before = copy.deepcopy(payload)
    assert normalize(action, payload, version) is None
    assert payload == before


# --- OCPP 1.6 payloads as real chargers send them ------------------------------------------------

def meter_values_16(value: Any = "230.5", **sampled: Any) -> dict[str, Any]:
    return {
        "connectorId": 1,
        "transactionId": 42,
        "meterValue": [{
            "timestamp": "2026-11-28T13:05:09Z",
            "sampledValue": [{"value": value, "measurand": "Voltage", "unit": "V", "phase": "L1-N", **sampled}],
        }],
    }


def start_16(**fields: Any) -> dict[str, Any]:
    return {"connectorId": 1, "idTag": "04A1B2C3D4", "meterStart": 1234, "timestamp": "2026-11-28T13:05:09Z", **fields}


def test_16_numeric_meter_values_become_strings_as_written() -> None:
    payload = meter_values_16(230.5)
    payload["meterValue"][0]["sampledValue"].append({"value": 1234, "measurand": "Energy.Active.Import.Register"})
    mended, fixes = mend("MeterValues", payload, "1.6")
    sampled = mended["meterValue"][0]["sampledValue"]
    assert [s["value"] for s in sampled] == ["230.5", "1234"]
    assert fixes == ["meterValue[].sampledValue[].value: number sent where a string is due (e.g. 230.5) x2"]


def test_16_whole_number_with_a_fraction_for_an_integer_and_offset_time() -> None:
    mended, fixes = mend("StartTransaction", start_16(meterStart=1234.0, timestamp="2026-11-28T13:05:09+00:00"), "1.6")
    assert mended == start_16(meterStart=1234, timestamp="2026-11-28T13:05:09.000Z")
    assert type(mended["meterStart"]) is int
    assert len(fixes) == 2 and any("meterStart" in f for f in fixes) and any("timestamp" in f for f in fixes)


def test_16_numeric_string_for_an_integer() -> None:
    mended, _ = mend("StartTransaction", start_16(connectorId="2", meterStart=" 1234 "), "1.6")
    assert mended["connectorId"] == 2 and mended["meterStart"] == 1234


@pytest.mark.parametrize(
    ("sent", "utc"),
    [
        ("2026-11-28T13:05:09+00:00", "2026-11-28T13:05:09.000Z"),
        ("2026-11-28T14:05:09+01:00", "2026-11-28T13:05:09.000Z"),
        ("2026-11-28T08:05:09.250-05:00", "2026-11-28T13:05:09.250Z"),
        ("2026-11-28T14:05:09+0100", "2026-11-28T13:05:09.000Z"),
        ("2026-11-28T13:05:09", "2026-11-28T13:05:09.000Z"),
        ("2026-11-28T13:05:09z", "2026-11-28T13:05:09.000Z"),
        ("2026-11-28 13:05:09Z", "2026-11-28T13:05:09.000Z"),
        ("2026-11-28T13:05Z", "2026-11-28T13:05:00.000Z"),
        ("2026-11-28t13:05", "2026-11-28T13:05:00.000Z"),
        ("2026-11-28T13:05:09,5Z", "2026-11-28T13:05:09.500Z"),
    ],
)
def test_16_times_become_utc_ending_in_z(sent: str, utc: str) -> None:
    # The library does not check date-time formats: the time rides along with a real break.
    mended, fixes = mend("StartTransaction", start_16(timestamp=sent, meterStart="1234"), "1.6")
    assert mended["timestamp"] == utc
    assert any(f.startswith("timestamp: time rewritten in UTC") for f in fixes)


def test_16_times_already_in_utc_and_unreadable_ones_are_left_alone() -> None:
    for kept in ("2026-11-28T13:05:09Z", "2026-11-28T13:05:09.123456Z", "yesterday", "2026-11-28"):
        mended, fixes = mend("StartTransaction", start_16(timestamp=kept, meterStart="1"), "1.6")
        assert mended["timestamp"] == kept
        assert not any("timestamp" in f for f in fixes)


def test_16_enum_case_and_vendor_spellings() -> None:
    payload = meter_values_16("55", measurand="soc", unit="%", context="sample.periodic", location="EV", phase="L1N")
    payload["meterValue"][0]["sampledValue"].append({"value": "16.0", "measurand": "Current.import", "unit": "a"})
    mended, fixes = mend("MeterValues", payload, "1.6")
    first, second = mended["meterValue"][0]["sampledValue"]
    assert first == {"value": "55", "measurand": "SoC", "unit": "Percent", "context": "Sample.Periodic", "location": "EV", "phase": "L1-N"}
    assert second == {"value": "16.0", "measurand": "Current.Import", "unit": "A"}
    assert "meterValue[].sampledValue[].measurand: enum value respelled (e.g. 'soc' as 'SoC') x2" in fixes


def test_16_status_notification_case_and_missing_error_code() -> None:
    mended, fixes = mend("StatusNotification", {"connectorId": 1, "status": "charging"}, "1.6")
    assert mended == {"connectorId": 1, "status": "Charging", "errorCode": "NoError"}
    assert "errorCode: missing, set to 'NoError'" in fixes


def test_16_boot_notification_defaults_and_truncated_firmware_version() -> None:
    firmware = "R2.11.7-build.2026-11-28+a3f9c2e1d4b5-production-signed"
    mended, fixes = mend("BootNotification", {"chargePointVendor": "Alfen BV", "firmwareVersion": firmware}, "1.6")
    assert mended == {"chargePointVendor": "Alfen BV", "chargePointModel": "unknown", "firmwareVersion": firmware[:50]}
    assert "firmwareVersion: truncated to 50 characters (was 55)" in fixes


def test_16_properties_unknown_to_the_schema_are_dropped() -> None:
    payload = meter_values_16("230.5", signedMeterValue="abc")
    payload["vendorExtension"] = {"fw": "1.2"}
    mended, fixes = mend("MeterValues", payload, "1.6")
    assert "vendorExtension" not in mended and "signedMeterValue" not in mended["meterValue"][0]["sampledValue"][0]
    assert "payload: property unknown to the schema dropped ('vendorExtension')" in fixes


def test_16_null_for_an_optional_property_is_dropped() -> None:
    mended, _ = mend("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available", "info": None, "vendorErrorCode": None}, "1.6")
    assert mended == {"connectorId": 1, "errorCode": "NoError", "status": "Available"}


def test_16_null_for_a_required_property_counts_as_missing() -> None:
    mended, fixes = mend("StatusNotification", {"connectorId": 1, "errorCode": None, "status": "Available"}, "1.6")
    assert mended == {"connectorId": 1, "status": "Available", "errorCode": "NoError"}
    assert fixes == ["errorCode: null dropped", "errorCode: missing, set to 'NoError'"]
    refused("StartTransaction", start_16(idTag=None), "1.6")


def test_a_mended_payload_that_still_breaks_the_schema_is_refused() -> None:
    # The mends fix types, spellings and keys; an empty meterValue list (minItems 1) stays a break.
    refused("MeterValues", {"connectorId": "1", "meterValue": []}, "1.6")
    refused("MeterValues", {"evseId": "1", "meterValue": []}, "2.0.1")


def test_16_stop_transaction_data_is_mended_like_meter_values() -> None:
    payload = {
        "meterStop": 5678.0,
        "timestamp": "2026-11-28T15:00:00+01:00",
        "transactionId": 42,
        "reason": "EVdisconnected",
        "transactionData": [{"timestamp": "2026-11-28 14:00:00", "sampledValue": [{"value": 5678, "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}],
    }
    mended, _ = mend("StopTransaction", payload, "1.6")
    assert mended["meterStop"] == 5678 and mended["reason"] == "EVDisconnected"
    assert mended["timestamp"] == "2026-11-28T14:00:00.000Z"
    assert mended["transactionData"][0] == {
        "timestamp": "2026-11-28T14:00:00.000Z",
        "sampledValue": [{"value": "5678", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}],
    }


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("StopTransaction", {"meterStop": 10, "timestamp": "2026-11-28T13:05:09+00:00"}),  # no transactionId
        ("MeterValues", {"connectorId": 1, "meterValue": {"timestamp": "2026-11-28T13:05:09Z", "sampledValue": [{"value": "1"}]}}),
        ("MeterValues", meter_values_16([230.5])),
        ("MeterValues", meter_values_16(float("nan"))),
        ("MeterValues", meter_values_16(True)),
        ("MeterValues", meter_values_16("1", measurand="Energy.Active.Import")),  # no enum value, in any case
        ("MeterValues", {"connectorId": 1, "meterValue": [{"sampledValue": [{"value": "1"}]}]}),  # no timestamp
        ("StartTransaction", start_16(meterStart="12.5")),  # a fraction is not rounded away
        ("StartTransaction", start_16(meterStart="1e400")),
        ("StartTransaction", start_16(meterStart="12 kWh")),
        ("StartTransaction", start_16(meterStart="9" * 60)),
        ("StartTransaction", start_16(idTag="04A1B2C3D4E5F6A7B8C9D0")),  # a cut tag would be another tag
        ("StartTransaction", {"connectorId": 1, "meterStart": 0, "timestamp": "2026-11-28T13:05:09Z"}),  # no idTag
        ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Occupied"}),
        ("StatusNotification", {"connectorId": None, "errorCode": "NoError", "status": "Available"}),
        ("DataTransfer", {"vendorId": "x" * 256}),
        ("NoSuchAction", {"a": 1}),
        ("../../v201/schemas/BootNotificationRequest", {"a": 1}),
    ],
)
def test_16_breaks_with_no_safe_mend_are_refused(action: str, payload: dict[str, Any]) -> None:
    assert not fits(action, payload, "1.6")
    refused(action, payload, "1.6")


def test_a_payload_that_is_no_object_is_refused() -> None:
    for payload in ([], "x", 5, None):
        refused("Heartbeat", payload, "1.6")
    refused("Heartbeat", {}, "1.5")


# --- OCPP 2.0.1 ---------------------------------------------------------------------------------

def meter_values_201(*values: Any) -> dict[str, Any]:
    return {
        "evseId": 1,
        "meterValue": [{
            "timestamp": "2026-11-28T13:05:09.000Z",
            "sampledValue": [{"value": v, "measurand": "Current.Import", "phase": "L1", "unitOfMeasure": {"unit": "A"}} for v in values],
        }],
    }


def transaction_event_201(**fields: Any) -> dict[str, Any]:
    return {
        "eventType": "Updated",
        "timestamp": "2026-11-28T13:05:09Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 3,
        "transactionInfo": {"transactionId": "b7e1f0c2-5d3a-4c1e-9a7b-0f2d6e8c4a13", "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1},
        **fields,
    }


def test_201_numeric_strings_become_numbers() -> None:
    payload = meter_values_201("16.2", "16", " -0.5 ")
    payload["evseId"] = "1"
    mended, fixes = mend("MeterValues", payload, "2.0.1")
    values = [s["value"] for s in mended["meterValue"][0]["sampledValue"]]
    assert values == [16.2, 16, -0.5] and type(values[1]) is int
    assert mended["evseId"] == 1
    assert "meterValue[].sampledValue[].value: number sent as a string (e.g. '16.2') x3" in fixes


def test_201_string_multiplier_and_fractional_integer() -> None:
    payload = meter_values_201(7.4)
    payload["meterValue"][0]["sampledValue"][0]["unitOfMeasure"] = {"unit": "kW", "multiplier": "3"}
    payload["evseId"] = 1.0
    mended, _ = mend("MeterValues", payload, "2.0.1")
    assert mended["meterValue"][0]["sampledValue"][0]["unitOfMeasure"] == {"unit": "kW", "multiplier": 3}
    assert mended["evseId"] == 1


def test_201_status_notification_offset_time_and_enum_case() -> None:
    payload = {"timestamp": "2026-11-28T14:05:09+01:00", "connectorStatus": "occupied", "evseId": 1, "connectorId": 1}
    mended, fixes = mend("StatusNotification", payload, "2.0.1")
    assert mended == {"timestamp": "2026-11-28T13:05:09.000Z", "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}
    assert "connectorStatus: enum value respelled ('occupied' as 'Occupied')" in fixes


def test_201_boot_notification_defaults_and_truncation() -> None:
    payload = {"chargingStation": {"vendorName": "Zaptec", "firmwareVersion": "v" * 60, "extra": 1}}
    mended, fixes = mend("BootNotification", payload, "2.0.1")
    assert mended == {"chargingStation": {"vendorName": "Zaptec", "firmwareVersion": "v" * 50, "model": "unknown"}, "reason": "Unknown"}
    assert {"reason: missing, set to 'Unknown'", "chargingStation.model: missing, set to 'unknown'"} <= set(fixes)


def test_201_transaction_event_mends_nested_values() -> None:
    payload = transaction_event_201(
        seqNo="3",
        timestamp="2026-11-28 13:05:09",
        triggerReason="meterValuePeriodic",
        meterValue=[{"timestamp": "2026-11-28T13:05:09+00:00", "sampledValue": [{"value": "2500", "measurand": "energy.active.import.register"}]}],
    )
    payload["transactionInfo"]["chargingState"] = "SuspendedEv"
    mended, _ = mend("TransactionEvent", payload, "2.0.1")
    assert mended["seqNo"] == 3 and mended["triggerReason"] == "MeterValuePeriodic"
    assert mended["timestamp"] == "2026-11-28T13:05:09.000Z"
    assert mended["transactionInfo"]["chargingState"] == "SuspendedEV"
    assert mended["meterValue"][0]["sampledValue"][0] == {"value": 2500, "measurand": "Energy.Active.Import.Register"}


def test_201_custom_data_stays_as_sent() -> None:
    custom = {"vendorId": "com.example", "anything": {"goes": [1, 2]}}
    payload = meter_values_201("1")
    payload["customData"] = custom
    mended, _ = mend("MeterValues", payload, "2.0.1")
    assert mended["customData"] == custom


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("TransactionEvent", {**transaction_event_201(), "transactionInfo": {"chargingState": "Charging"}}),
        ("TransactionEvent", transaction_event_201(idToken={"idToken": "A" * 40, "type": "ISO14443"})),
        ("TransactionEvent", transaction_event_201(seqNo="3.5")),
        ("MeterValues", meter_values_201("16,2")),  # a decimal comma: not guessed at
        ("MeterValues", meter_values_201({"value": 1})),
        ("StatusNotification", {"timestamp": "2026-11-28T13:05:09Z", "connectorStatus": "Available", "evseId": 1}),
        ("BootNotification", {"chargingStation": {"vendorName": "Zaptec", "model": "Go", "serialNumber": "S" * 30}, "reason": "PowerUp"}),
        ("Authorize", {"idToken": {"idToken": "04A1B2C3"}}),  # no type: no default would be honest
    ],
)
def test_201_breaks_with_no_safe_mend_are_refused(action: str, payload: dict[str, Any]) -> None:
    assert not fits(action, payload, "2.0.1")
    refused(action, payload, "2.0.1")


def test_the_subprotocol_name_is_taken_for_the_version() -> None:
    result = normalize("MeterValues", meter_values_201("1"), "ocpp2.0.1")
    assert result is not None and result[0]["meterValue"][0]["sampledValue"][0]["value"] == 1


# --- the fix list and the bounds ------------------------------------------------------------------

def test_many_fixes_make_one_bounded_printable_list() -> None:
    payload = meter_values_16("1")
    sampled = payload["meterValue"][0]["sampledValue"][0]
    for n in range(30):
        sampled[f"vendor\n{n}"] = n
    mended, fixes = mend("MeterValues", payload, "1.6")
    assert mended["meterValue"][0]["sampledValue"][0] == {"value": "1", "measurand": "Voltage", "unit": "V", "phase": "L1-N"}
    assert fixes == ["meterValue[].sampledValue[]: property unknown to the schema dropped (e.g. 'vendor\\n0') x30"]


def test_distinct_fixes_beyond_the_limit_are_counted() -> None:
    payload = meter_values_16(1, measurand="voltage", unit="v", phase="l1", context="trigger", location="ev", format="raw")
    payload["meterValue"][0]["timestamp"] = "2026-11-28T13:05:09+00:00"
    payload["connectorId"] = "1"
    payload["transactionId"] = 42.0
    payload["extra"] = 1
    _, fixes = mend("MeterValues", payload, "1.6")  # eleven different fixes
    assert len(fixes) == MAX_FIXES_LISTED and fixes[-1] == f"and {11 - MAX_FIXES_LISTED + 1} other fixes"


def deep(levels: int) -> Any:
    nested: Any = "bottom"
    for _ in range(levels):
        nested = {"a": [nested]}
    return nested


def test_deep_nesting_is_never_followed_past_the_schema() -> None:
    # Far deeper than Python may recurse: only the schema's own levels are walked.
    too_deep = deep(5_000)
    result = normalize("MeterValues", meter_values_16(230.5, vendorBlob=too_deep), "1.6")
    assert result is not None
    assert result[0] == meter_values_16("230.5")
    assert fits("MeterValues", result[0], "1.6")
    assert normalize("MeterValues", meter_values_16(too_deep), "1.6") is None
    open_payload = meter_values_201("1")
    open_payload["customData"] = {"vendorId": "x", "blob": too_deep}
    result = normalize("MeterValues", open_payload, "2.0.1")
    assert result is not None and result[0]["customData"]["blob"] is too_deep
    assert fits("MeterValues", result[0], "2.0.1")


def use_schema(monkeypatch: pytest.MonkeyPatch, root: dict[str, Any]) -> None:
    """Make every action's request schema `root`: for cases no OCPP schema has (yet)."""
    monkeypatch.setattr(lenient, "_schema", lambda action, version: lenient._Schema(root, Draft4Validator(root), False))


def test_a_schema_that_refers_to_itself_is_not_followed_for_ever(monkeypatch: pytest.MonkeyPatch) -> None:
    use_schema(monkeypatch, {
        "definitions": {"Node": {"type": "object", "properties": {"a": {"type": "array", "items": {"$ref": "#/definitions/Node"}}}}},
        "type": "object", "properties": {"node": {"$ref": "#/definitions/Node"}, "n": {"type": "integer"}},
    })

    def tree(levels: int) -> dict[str, Any]:
        node: dict[str, Any] = {}
        for _ in range(levels):
            node = {"a": [node]}
        return node

    shallow = normalize("Tree", {"node": tree(3), "n": "1"}, "1.6")
    assert shallow == ({"node": tree(3), "n": 1}, ["n: number sent as a string ('1')"])
    assert normalize("Tree", {"node": tree(5_000), "n": "1"}, "1.6") is None


def test_an_enum_value_matching_two_values_but_for_case_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    use_schema(monkeypatch, {"type": "object", "properties": {"mode": {"type": "string", "enum": ["On", "ON", "Off"]}}})
    assert normalize("Switch", {"mode": "off"}, "1.6") == ({"mode": "Off"}, ["mode: enum value respelled ('off' as 'Off')"])
    assert normalize("Switch", {"mode": "on"}, "1.6") is None


CARD = 4012345678901


@pytest.mark.parametrize(
    ("version", "action", "payload", "place"),
    [
        ("1.6", "Authorize", {"idTag": CARD}, "idTag"),
        ("1.6", "StartTransaction", start_16(idTag=CARD), "idTag"),
        ("1.6", "StopTransaction", {"meterStop": 5, "timestamp": "2026-11-28T15:00:00Z", "transactionId": 42, "idTag": CARD}, "idTag"),
        ("1.6", "SendLocalList", {"listVersion": 1, "updateType": "Full", "localAuthorizationList": [
            {"idTag": "04A1B2C3D4", "idTagInfo": {"status": "Accepted", "parentIdTag": CARD}}]},
         "localAuthorizationList[].idTagInfo.parentIdTag"),
        ("1.6", "BootNotification", {"chargePointVendor": "Alfen BV", "chargePointModel": "NG9xx", "chargePointSerialNumber": CARD},
         "chargePointSerialNumber"),
        ("1.6", "DataTransfer", {"vendorId": "com.example", "data": CARD}, "data"),
        ("2.0.1", "Authorize", {"idToken": {"idToken": CARD, "type": "ISO14443"}}, "idToken.idToken"),
        ("2.0.1", "TransactionEvent", transaction_event_201(idToken={
            "idToken": "A1", "type": "ISO14443", "additionalInfo": [{"additionalIdToken": CARD, "type": "x"}]}),
         "idToken.additionalInfo[].additionalIdToken"),
        ("2.0.1", "TransactionEvent", transaction_event_201(idToken={"idToken": "A1", "type": "iso14443"}), "idToken.type"),
        ("2.0.1", "SendLocalList", {"versionNumber": 1, "updateType": "Full", "localAuthorizationList": [
            {"idToken": {"idToken": "A1", "type": "ISO14443"},
             "idTokenInfo": {"status": "Accepted", "groupIdToken": {"idToken": CARD, "type": "Central"}}}]},
         "localAuthorizationList[].idTokenInfo.groupIdToken.idToken"),
        ("2.0.1", "BootNotification", {"reason": "PowerUp", "chargingStation": {"vendorName": "Zaptec", "model": "Go", "serialNumber": CARD}},
         "chargingStation.serialNumber"),
        ("2.0.1", "SignCertificate", {"csr": CARD}, "csr"),
    ],
)
def test_values_that_name_a_card_or_device_are_never_quoted(version: str, action: str, payload: dict[str, Any], place: str) -> None:
    # The fix list goes to the log at WARNING, and no card number may be written there.
    _, fixes = mend(action, payload, version)
    line = "; ".join(fixes)
    assert "4012345678901" not in line and "14443" not in line
    assert any(f.startswith(f"{place}: ") for f in fixes), fixes


def test_a_fix_next_to_an_identifier_keeps_its_example() -> None:
    _, fixes = mend("StartTransaction", start_16(idTag=CARD, meterStart="1234"), "1.6")
    assert fixes == ["idTag: number sent where a string is due", "meterStart: number sent as a string ('1234')"]


def test_a_property_unknown_under_an_identifier_is_dropped_unnamed() -> None:
    payload = {"idToken": {"idToken": "A1", "type": "ISO14443", "4012345678901": 1}}
    _, fixes = mend("Authorize", payload, "2.0.1")
    assert fixes == ["idToken: property unknown to the schema dropped"]


# --- properties -----------------------------------------------------------------------------------

VALID: list[tuple[str, str, dict[str, Any]]] = [
    ("1.6", "MeterValues", meter_values_16("230.5", context="Sample.Periodic", location="Outlet")),
    ("1.6", "StartTransaction", start_16(reservationId=7)),
    ("1.6", "StopTransaction", {"meterStop": 5678, "timestamp": "2026-11-28T15:00:00Z", "transactionId": 42, "idTag": "04A1B2C3D4",
                                "reason": "EVDisconnected", "transactionData": meter_values_16("1")["meterValue"]}),
    ("1.6", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available", "info": "ok",
                                   "timestamp": "2026-11-28T13:05:09Z", "vendorId": "v", "vendorErrorCode": "0"}),
    ("1.6", "BootNotification", {"chargePointVendor": "Alfen BV", "chargePointModel": "NG9xx", "firmwareVersion": "4.12.0"}),
    ("1.6", "Authorize", {"idTag": "04A1B2C3D4"}),
    ("1.6", "DataTransfer", {"vendorId": "com.example", "messageId": "m", "data": "d"}),
    ("2.0.1", "MeterValues", meter_values_201(16.2, 0)),
    ("2.0.1", "TransactionEvent", transaction_event_201(meterValue=meter_values_201(1)["meterValue"], idToken={"idToken": "A1", "type": "ISO14443"})),
    ("2.0.1", "StatusNotification", {"timestamp": "2026-11-28T13:05:09Z", "connectorStatus": "Available", "evseId": 1, "connectorId": 1}),
    ("2.0.1", "BootNotification", {"chargingStation": {"vendorName": "Zaptec", "model": "Go", "firmwareVersion": "1"}, "reason": "PowerUp"}),
    ("2.0.1", "Authorize", {"idToken": {"idToken": "04A1B2C3", "type": "ISO14443"}}),
]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["230.5", "12", "1e3", "-0", "Charging", "charging", "2026-11-28T13:05:09+02:00", "2026-11-28 13:05", "%", "L1N"]),
)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    places = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            places += _places(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            places += _places(inner, (*path, index))
    return places


def _break(value: Any, how: str, junk: Any) -> Any:
    """One way real chargers break a value; a way that does not apply to it leaves it as it is."""
    if how == "junk":
        return junk
    if how == "as string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if how == "as number" and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if how == "case" and isinstance(value, str):
        return value.swapcase()
    if how == "offset" and isinstance(value, str) and value.endswith("Z"):
        return value[:-1] + "+00:00"
    if how == "long" and isinstance(value, str):
        return value * 40
    return value


@st.composite
def broken_payloads(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    version, action, payload = draw(st.sampled_from(VALID))
    payload = copy.deepcopy(payload)
    for _ in range(draw(st.integers(1, 4))):
        places = _places(payload)
        if len(places) == 1:
            break  # everything dropped already
        path = draw(st.sampled_from(places[1:]))
        parent = payload
        for step in path[:-1]:
            parent = parent[step]
        how = draw(st.sampled_from(["as string", "as number", "case", "offset", "long", "junk", "drop", "extra"]))
        if how == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif how == "extra" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(json_value)
        else:
            parent[path[-1]] = _break(parent[path[-1]], how, draw(json_value))
    return version, action, payload


def _check(version: str, action: str, payload: Any) -> None:
    before = copy.deepcopy(payload)
    result = normalize(action, payload, version)
    assert [payload] == [before]  # in a list, the nan deepcopy kept is equal to itself
    if result is not None:
        mended, fixes = result
        assert fits(action, mended, version), (payload, mended)
        assert all(f.isprintable() for f in fixes) and len(fixes) <= MAX_FIXES_LISTED


@settings(max_examples=300, deadline=None)
@given(broken_payloads())
def test_broken_payloads_never_raise_and_what_returns_fits(case: tuple[str, str, dict[str, Any]]) -> None:
    _check(*case)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted({(v, a) for v, a, _ in VALID})), st.dictionaries(st.text(max_size=16), json_value, max_size=6) | json_value)
def test_any_json_never_raises_and_what_returns_fits(where: tuple[str, str], payload: Any) -> None:
    _check(where[0], where[1], payload)


def test_every_valid_payload_fits_and_mends_to_itself() -> None:
    for version, action, payload in VALID:
        assert fits(action, payload, version), (version, action)
        assert normalize(action, payload, version) == (payload, [])
