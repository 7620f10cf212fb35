"""scripts/octt's pure parts: the cases it picks, the suite's file names, the triggers turned into admin
API requests, the square's config and the results table."""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath

import pytest

from config.loader import load_config
from scripts.octt.plan import (
    CHARGERS,
    PASSWORD,
    ApiRequest,
    Outcome,
    applicable_cases,
    bridge,
    case_file,
    case_id_of,
    case_version,
    square_toml,
    summary,
    table,
)

REPO = Path(__file__).resolve().parents[1]

COVERAGE = """# OCA test cases
## OCPP 1.6J (Central System)

| id | title | source |
|---|---|---|
| TC_001_CSMS | Cold Boot Charge Point | L |
| TC_004_1_CSMS | Regular Charging Session | L |

## OCPP 2.0.1 (CSMS)

| id | title |
|---|---|
| TC_B_01_CSMS | Cold Boot |
| TC_E_43_CS | a station case |

## Notes on how cases map onto the gateway

| TC_B_02_CSMS | not a row of a version table |

## Left out

| id(s) | why |
|---|---|
| TC_A_06_CSMS (TLS version too low) | cannot fail here |
"""


def test_applicable_cases_are_the_rows_of_the_version_tables_only():
    assert applicable_cases(COVERAGE) == {"1.6": ["TC_001_CSMS", "TC_004_1_CSMS"], "2.0.1": ["TC_B_01_CSMS"]}


def test_the_coverage_page_lists_cases_of_both_versions():
    found = applicable_cases((REPO / "docs" / "oca-coverage.md").read_text(encoding="utf-8"))
    assert "TC_001_CSMS" in found["1.6"] and "TC_B_01_CSMS" in found["2.0.1"]
    assert all(case_version(c) == v for v, cases in found.items() for c in cases)


@pytest.mark.parametrize(("case", "path"), [
    ("TC_001_CSMS", "1.6/test_tc_001_csms.py"),
    ("TC_004_1_CSMS", "1.6/test_tc_004_1_csms.py"),
    ("TC_B_01_CSMS", "2.0.1/B/test_tc_b_01_csms.py"),
    ("TC_K_60_CSMS", "2.0.1/K/test_tc_k_60_csms.py"),
])
def test_case_files_follow_the_suites_names(case, path):
    assert case_file(case) == PurePosixPath(path)
    assert case_id_of(PurePosixPath(path)) == case


@pytest.mark.parametrize("case", ["TC_E_43_CS", "TC_1_CSMS", "tc_001_csms", "TC_Q_01_CSMS", "TC_001_CSMS/../x"])
def test_other_ids_are_refused(case):
    with pytest.raises(ValueError):
        case_version(case)


def test_a_trigger_becomes_the_call_endpoint_with_the_body_as_payload():
    body = {"idTag": "TAG-001", "connectorId": 1}
    plan = bridge("/api/octt/1.6/CP16_SP1/remote-start-transaction", body, "unused")
    assert plan.requests == (ApiRequest("POST", "/api/chargers/CP16_SP1/call/RemoteStartTransaction", body),)
    plan = bridge("/api/octt/2.0.1/CP201_SP1/call/GetVariables", {"getVariableData": []}, "unused")
    assert plan.requests == (ApiRequest("POST", "/api/chargers/CP201_SP1/call/GetVariables", {"getVariableData": []}),)


def test_the_batched_variable_triggers_carry_the_payload_whole():
    body = {"setVariableData": [{"component": {"name": "X"}, "variable": {"name": "Y"}, "attributeValue": "1"}]}
    assert bridge("/api/octt/2.0.1/CP201_SP1/set-variables", body, "unused").requests == (
        ApiRequest("POST", "/api/chargers/CP201_SP1/call/SetVariables", body),)


def test_a_password_update_stores_the_password_before_the_charger_hears_it():
    plan = bridge("/api/octt/2.0.1/CP201_SP1/update-basic-auth-password", {}, "Abcdefghijklmnop1234")
    put, call = plan.requests
    assert put == ApiRequest("PUT", "/api/chargers/CP201_SP1/password", {"password": "Abcdefghijklmnop1234"})
    assert call.path == "/api/chargers/CP201_SP1/call/SetVariables"
    item = call.body["setVariableData"][0]
    assert (item["component"]["name"], item["variable"]["name"], item["attributeValue"]) == (
        "SecurityCtrlr", "BasicAuthPassword", "Abcdefghijklmnop1234")


def test_an_authorization_key_is_stored_first_as_the_digits_the_station_logs_in_with():
    for value in (b"secretpassword12".hex(), "AABBCCDDEEFF00112233445566778899AABBCCDD"):
        body = {"key": "AuthorizationKey", "value": value}
        plan = bridge("/api/octt/1.6/CP16_SP1/change-configuration", body, "x")
        assert plan.requests == (ApiRequest("PUT", "/api/chargers/CP16_SP1/password", {"password": value}),
                                 ApiRequest("POST", "/api/chargers/CP16_SP1/call/ChangeConfiguration", body))
        # should the change not reach the station, the suite's password is put back
        assert plan.undo == (ApiRequest("PUT", "/api/chargers/CP16_SP1/password", {"password": "test1234"}),)


def test_the_shared_endpoints():
    assert bridge("/api/octt/set-basic-auth-password", {"station_id": "CP16_SP1", "password": "test1234"}, "x").requests == (
        ApiRequest("PUT", "/api/chargers/CP16_SP1/password", {"password": "test1234"}),)
    assert bridge("/api/octt/create-token", {"token_id": "100000C06", "status": "Blocked"}, "x").requests == (
        ApiRequest("PUT", "/api/tokens", {"tag": "100000C06", "status": "Blocked"}),)


@pytest.mark.parametrize("path", [
    "/api/octt/2.0.1/CP201_SP1/set-pending-boot", "/api/octt/2.0.1/CP201_SP1/set-security-profile",
    "/api/octt/2.0.1/CP201_SP1/set-items-per-message", "/api/octt/3.0/CP/reset", "/api/other", "/api/octt/1.6/CP",
    "/api/octt/1.6/CP/call/Reset/more",
])
def test_what_has_no_counterpart_is_refused_with_a_reason(path):
    plan = bridge(path, {}, "x")
    assert plan.requests == () and plan.refusal


def test_the_square_is_a_valid_config_with_the_suites_stations(tmp_path):
    text = square_toml(ocpp_port=19000, api_port=19001, mqtt_port=19002, tls={}, conformance=False)
    (tmp_path / "square.toml").write_text(text)
    cfg = load_config(tmp_path / "square.toml")
    assert [(c.id, c.connectors, c.password) for c in cfg.chargers] == [(i, n, PASSWORD) for i, n in CHARGERS]
    assert len(cfg.bays) == sum(n for _, n in CHARGERS)
    assert cfg.ocpp.auth == "local_list"
    assert tomllib.loads(square_toml(ocpp_port=1, api_port=2, mqtt_port=3, tls={}, conformance=True))["ocpp"][
        "conformance_mode"] is True


def test_the_table_counts_and_shows_each_failures_frames():
    outcomes = [
        Outcome("TC_001_CSMS", "test_tc_001[connection0]", "passed"),
        Outcome("TC_085_CSMS", "test_tc_085_no_auth_rejected", "passed"),
        Outcome("TC_085_CSMS", "test_tc_085[connection0]", "failed", "assert 401 == 200",
                '[3,"1",{}]', '[2,"1","BootNotification",{}]', ("POST /x -> 409",)),
    ]
    assert summary(outcomes) == {"cases": 2, "items": 3, "passed": 2, "failed": 1, "skipped": 0, "failed_cases": 1}
    text = table(outcomes)
    rows = [line.rsplit(maxsplit=1) for line in text.splitlines()[2:5]]
    assert rows == [["TC_001_CSMS", "PASSED"], ["TC_085_CSMS test_tc_085_no_auth_rejected", "PASSED"],
                    ["TC_085_CSMS test_tc_085[connection0]", "FAIL"]]
    assert "== TC_085_CSMS test_tc_085[connection0]: assert 401 == 200" in text
    assert 'last frame from the gateway: [3,"1",{}]' in text and "bridge: POST /x -> 409" in text
    assert text.endswith("2 cases (3 items): 2 passed, 1 failed (1 cases), 0 skipped")


def test_the_stations_items_per_message_are_told_to_the_gateway():
    plan = bridge("/api/octt/2.0.1/CP201_SP1/set-items-per-message", {"get_variables": 4, "set_variables": 2}, "x")
    assert plan.requests == (ApiRequest("PUT", "/api/chargers/CP201_SP1/message-limits",
                                        {"GetVariables": {"items": 4}, "SetVariables": {"items": 2}}),)
