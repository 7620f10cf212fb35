"""Config schema, TOML loading with file/line errors, and `laadplein check`."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from config.loader import (
    ConfigError,
    ConfigIssue,
    config_warnings,
    load_config,
    load_config_text,
)
from config.schema import (
    BatteryConfig,
    GridConfig,
    SquareConfig,
    cross_issues,
    loopback_host,
)
from controller.cli.check import check_main

EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "examples"
ISSUE_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+): (?P<key>[\w.]+): (?P<message>.+)$")

MINIMAL: dict[str, Any] = {
    "site": {"id": "test-square"},
    "grid": {"limit_a": 80},
    "chargers": [{"id": "CP01", "max_current_a": 32, "connectors": 2}, {"id": "CP02", "max_current_a": 32}],
    "bays": [
        {"id": "B01", "charger": "CP01", "connector": 1},
        {"id": "B02", "charger": "CP01", "connector": 2},
        {"id": "B03", "charger": "CP02", "connector": 1},
    ],
}
BATTERY = {"driver": "simulated", "capacity_kwh": 100, "max_charge_w": 30000, "max_discharge_w": 30000}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)
    raise TypeError(value)


def emit(doc: dict[str, Any]) -> str:
    """A tiny TOML writer for config documents: tables of scalars and arrays of such tables."""
    out: list[str] = []
    for name, value in doc.items():
        if isinstance(value, dict):
            out.append(f"[{name}]")
            out.extend(f"{key} = {toml_value(item)}" for key, item in value.items())
        else:
            for table in value:
                out.append(f"[[{name}]]")
                out.extend(f"{key} = {toml_value(item)}" for key, item in table.items())
        out.append("")
    return "\n".join(out)


def doc_with(*changes: tuple[str, str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(MINIMAL)
    for section, key, value in changes:
        target = doc.setdefault(section, {})
        if section == "battery" and not target:
            target.update(BATTERY)
        target[key] = value
    return doc


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "square.toml")
    return caught.value.issues


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    hits = [number for number, line in enumerate(text.splitlines(), 1) if line.strip().startswith(needle)]
    return hits[occurrence - 1]


# -- the examples ---------------------------------------------------------------------------------


def test_hoofddorp_example_loads() -> None:
    square = load_config(EXAMPLES / "hoofddorp-marktplein.toml")
    assert square.site.id == "hoofddorp-marktplein"
    assert (square.grid.phases, square.grid.limit_a) == (3, 80)
    assert [c.id for c in square.chargers] == [f"CP{i:02d}" for i in range(1, 7)]
    assert all(c.connectors == 2 and c.max_current_a == 32 and c.phases == 3 for c in square.chargers)
    assert [b.id for b in square.bays] == [f"B{i:02d}" for i in range(1, 13)]
    assert all(b.sensor for b in square.bays)
    assert square.battery is not None and square.battery.driver == "simulated"
    assert (square.battery.capacity_kwh, square.battery.max_discharge_w) == (100, 30000)
    assert square.signage.min_free_ev_bays == 2
    assert square.storage.path == Path("/var/lib/laadplein/laadplein.db")
    assert square.api.token_file is None
    assert square.bay_for("CP03", 2) == square.bay("B06")
    assert square.topic_root == "laadplein/hoofddorp-marktplein"


def test_minimal_example_and_defaults() -> None:
    square = load_config(EXAMPLES / "minimal.toml")
    assert square.ocpp.port == 9000 and square.ocpp.path == "/ocpp" and square.ocpp.auth == "free"
    assert square.ocpp.allow_unknown_chargers is False
    assert (square.mqtt.host, square.mqtt.port, square.mqtt.topic_prefix) == ("127.0.0.1", 1883, "laadplein")
    assert (square.api.host, square.api.port) == ("127.0.0.1", 8080)
    assert square.storage.path == Path("/var/lib/laadplein/laadplein.db") and square.storage.retention_days == 90
    assert (square.control.period_s, square.control.min_current_a, square.control.lease_s) == (1.0, 6, 300)
    assert square.battery is None
    assert (square.signage.min_free_ev_bays, square.signage.grace_s, square.signage.min_dwell_s) == (0, 900, 30)
    assert square.signage.language == "nl" and square.site.timezone == "Europe/Amsterdam"
    assert (square.grid.phases, square.grid.voltage_v, square.grid.base_load_a) == (3, 230, 0)


def test_lookups_and_frozen() -> None:
    square = load_config_text(emit(MINIMAL))
    assert square.charger("CP02").max_current_a == 32
    assert square.bay("B02").connector == 2
    assert square.bay_for("CP02", 1).id == "B03"
    assert square.bay_for("CP02", 2) is None
    with pytest.raises(KeyError):
        square.charger("CP09")
    with pytest.raises(KeyError):
        square.bay("B09")
    with pytest.raises(ValidationError):
        square.grid.limit_a = 100  # type: ignore[misc]


# -- bounds -----------------------------------------------------------------------------------------

BOUNDS = [
    # section, key, lowest accepted, highest accepted, just below, just above
    ("control", "period_s", 0.1, 60, 0.09, 60.5),
    ("control", "lease_s", 10, 3600, 9, 3601),
    ("control", "min_current_a", 6, 16, 5.9, 16.1),
    ("signage", "grace_s", 0, 86400, -1, 86401),
    ("signage", "min_dwell_s", 0, 3600, -1, 3601),
    ("grid", "limit_a", 6, 4000, 5, 4001),
    ("grid", "voltage_v", 100, 480, 99, 481),
    ("ocpp", "port", 1, 65535, 0, 65536),
    ("mqtt", "port", 1, 65535, 0, 65536),
    ("api", "port", 1, 65535, 0, 65536),
    ("battery", "unit_id", 0, 255, -1, 256),
    ("battery", "soc_max_pct", 11, 100, None, 100.5),
    ("chargers", "max_current_a", 6, 1000, 5, 1001),
    ("chargers", "connectors", 2, 8, 0, 9),
]


@pytest.mark.parametrize(("section", "key", "low", "high", "below", "above"), BOUNDS)
def test_bounds(section: str, key: str, low: Any, high: Any, below: Any, above: Any) -> None:
    def text_with(value: Any) -> str:
        if section == "chargers":
            doc = copy.deepcopy(MINIMAL)
            doc["chargers"][0][key] = value
            return emit(doc)
        return emit(doc_with((section, key, value)))

    for value in (low, high):
        load_config_text(text_with(value))
    for value, word in ((below, "minimum"), (above, "maximum")):
        if value is None:
            continue
        text = text_with(value)
        [issue] = issues_of(text)
        prefix = "chargers.0" if section == "chargers" else section
        assert issue.key_path == f"{prefix}.{key}"
        assert issue.line == line_of(text, f"{key} =")
        entry = "charger CP01: " if section == "chargers" else ""
        assert issue.message.startswith(f"{entry}{value} is") and word in issue.message


def test_limit_a_message_names_value_and_bound_once() -> None:
    [issue] = issues_of(emit(doc_with(("grid", "limit_a", 5000))))
    assert str(issue) == "square.toml:5: grid.limit_a: 5000 is above the maximum 4000"
    [issue] = issues_of(emit(doc_with(("grid", "limit_a", 5000.0))))
    assert issue.message == "5000.0 is above the maximum 4000"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("grid", "phases", 2, "2 is not one of 1 or 3"),
        ("control", "lease_s", 5, "5 is below the minimum 10"),
        ("signage", "language", "de", "\"de\" is not one of 'nl' or 'en'"),
        ("site", "id", "Hoofddorp", "\"Hoofddorp\" does not match the pattern ^[a-z0-9-]+$"),
        ("mqtt", "topic_prefix", "/x", "'/x' must not start or end with '/'"),
        ("grid", "voltage_v", "230", "\"230\" is not a number"),
    ],
)
def test_message_does_not_repeat_the_key_of_its_path(section: str, key: str, value: Any, message: str) -> None:
    [issue] = issues_of(emit(doc_with((section, key, value))))
    assert (issue.key_path, issue.message) == (f"{section}.{key}", message)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("grid", "limit_a", "80"),
        ("grid", "phases", 2),
        ("chargers", "connectors", 2.0),
        ("bays", "sensor", 1),
        ("site", "id", "Hoofddorp"),
        ("site", "timezone", "Mars/Olympus_Mons"),
        ("ocpp", "path", "/ocpp/"),
        ("ocpp", "path", "ocpp"),
        ("ocpp", "auth", "open"),
        ("mqtt", "topic_prefix", "laad/#"),
        ("mqtt", "topic_prefix", "/laadplein"),
        ("signage", "language", "de"),
        ("battery", "driver", "modbus"),
        ("battery", "capacity_kwh", 0),
    ],
)
def test_wrong_values_are_errors_not_coerced(section: str, key: str, value: Any) -> None:
    if section in ("chargers", "bays"):
        doc = copy.deepcopy(MINIMAL)
        doc[section][0][key] = value
        path = f"{section}.0.{key}"
    else:
        doc = doc_with((section, key, value))
        path = f"{section}.{key}"
    text = emit(doc)
    [issue] = issues_of(text)
    assert issue.key_path == path
    assert issue.line == line_of(text, f"{key} =")
    assert str(value) in issue.message
    assert not issue.message.startswith(f"{key}:")


def test_missing_sections_and_keys() -> None:
    doc = copy.deepcopy(MINIMAL)
    del doc["grid"]["limit_a"]
    doc["grid"]["phases"] = 3
    del doc["bays"]
    text = emit(doc)
    issues = {issue.key_path: issue for issue in issues_of(text)}
    assert issues["grid.limit_a"].line == line_of(text, "[grid]")
    assert "limit_a" in issues["grid.limit_a"].message
    assert issues["bays"].line == 1 and "[[bays]]" in issues["bays"].message


# -- unknown keys, syntax, several errors -----------------------------------------------------------


def test_unknown_key_has_line_and_suggestion() -> None:
    text = emit(doc_with(("grid", "limt_a", 80)))
    [issue] = issues_of(text)
    assert issue.key_path == "grid.limt_a"
    assert issue.line == line_of(text, "limt_a")
    assert issue.message == "unknown key 'limt_a' (did you mean 'limit_a'?)"


def test_unknown_section_and_unknown_key_in_array_table() -> None:
    doc = copy.deepcopy(MINIMAL)
    doc["batery"] = dict(BATTERY)
    doc["bays"][2]["sensr"] = True
    text = emit(doc)
    issues = {issue.key_path: issue for issue in issues_of(text)}
    assert "did you mean 'battery'" in issues["batery"].message
    assert issues["batery"].line == line_of(text, "[batery]")
    assert "did you mean 'sensor'" in issues["bays.2.sensr"].message
    assert issues["bays.2.sensr"].line == line_of(text, "sensr")


def test_toml_syntax_error_line() -> None:
    text = emit(MINIMAL).replace("limit_a = 80", "limit_a = 8 0")
    [issue] = issues_of(text)
    assert issue.line == line_of(text, "limit_a")
    assert issue.key_path == "grid.limit_a"
    assert issue.message.startswith("invalid TOML")


def test_multiple_errors_all_reported_in_line_order() -> None:
    doc = copy.deepcopy(MINIMAL)
    doc["grid"]["limit_a"] = 5000
    doc["control"] = {"period_s": 0, "lease_s": 5}
    doc["chargers"][1]["phases"] = 2
    doc["bays"][0]["connectr"] = 1
    issues = issues_of(emit(doc))
    assert [issue.key_path for issue in issues] == [
        "grid.limit_a",
        "chargers.1.phases",
        "bays.0.connectr",
        "control.period_s",
        "control.lease_s",
    ]
    assert issues == sorted(issues, key=lambda issue: issue.line)


# -- cross-checks -----------------------------------------------------------------------------------


def test_cross_checks() -> None:
    doc = copy.deepcopy(MINIMAL)
    doc["chargers"].append({"id": "CP01", "max_current_a": 16})
    doc["bays"] += [
        {"id": "B04", "charger": "CP9", "connector": 1},
        {"id": "B01", "charger": "CP02", "connector": 2},
        {"id": "B06", "charger": "CP01", "connector": 1},
    ]
    doc["signage"] = {"min_free_ev_bays": 7}
    text = emit(doc)
    issues = {issue.key_path: issue for issue in issues_of(text)}
    assert set(issues) == {
        "chargers.2.id", "bays.3.charger", "bays.4.id", "bays.4.connector", "bays.5.connector",
        "signage.min_free_ev_bays",
    }
    assert issues["chargers.2.id"].message == "duplicate charger id 'CP01' (also chargers.0)"
    assert issues["bays.3.charger"].message == "bay B04: no charger 'CP9' (known: CP01, CP02)"
    assert issues["bays.3.charger"].line == line_of(text, 'charger = "CP9"')
    assert issues["bays.4.id"].message == "duplicate bay id 'B01' (also bays.0)"
    assert issues["bays.4.connector"].message.startswith("bay B01: connector 2 but charger 'CP02' has 1 connector")
    assert "already serves bay 'B01'" in issues["bays.5.connector"].message
    assert issues["bays.5.connector"].message.startswith("bay B06: ")
    assert issues["bays.5.connector"].line == line_of(text, "connector =", 6)
    assert "7" in issues["signage.min_free_ev_bays"].message


def test_field_errors_do_not_hide_cross_checks() -> None:
    doc = copy.deepcopy(MINIMAL)
    doc["grid"] = {"limit_a": 5000, "limt_a": 80}
    doc["bays"][1]["charger"] = "CP09"
    text = emit(doc)
    issues = issues_of(text)
    assert [(issue.line, issue.key_path, issue.message) for issue in issues] == [
        (line_of(text, "limit_a"), "grid.limit_a", "5000 is above the maximum 4000"),
        (line_of(text, "limt_a"), "grid.limt_a", "unknown key 'limt_a' (did you mean 'limit_a'?)"),
        (line_of(text, 'charger = "CP09"'), "bays.1.charger", "bay B02: no charger 'CP09' (known: CP01, CP02)"),
    ]


def test_every_cross_check_runs_beside_field_errors() -> None:
    doc = copy.deepcopy(MINIMAL)
    doc["site"]["id"] = "Hoofddorp"
    doc["grid"].update(voltage_v=20, base_load_a=80)
    doc["battery"] = BATTERY | {"soc_min_pct": 90, "soc_max_pct": 80, "unit_id": 300}
    doc["chargers"].append({"id": "CP01", "max_current_a": 1})
    doc["bays"] += [{"id": "B01", "charger": "CP02", "connector": 2, "sensor": "yes"}]
    doc["signage"] = {"min_free_ev_bays": 5, "language": "de"}
    issues = {issue.key_path: issue.message for issue in issues_of(emit(doc))}
    assert issues == {
        "site.id": '"Hoofddorp" does not match the pattern ^[a-z0-9-]+$',
        "grid.voltage_v": "20 is below the minimum 100",
        "grid.base_load_a": "80 A must be below limit_a (80 A)",
        "battery.unit_id": "300 is above the maximum 255",
        "battery.soc_min_pct": "90 must be below soc_max_pct (80)",
        "chargers.2.max_current_a": "charger CP01: 1 is below the minimum 6",
        "chargers.2.id": "duplicate charger id 'CP01' (also chargers.0)",
        "bays.3.sensor": 'bay B01: "yes" is not true or false',
        "bays.3.id": "duplicate bay id 'B01' (also bays.0)",
        "bays.3.connector": "bay B01: connector 2 but charger 'CP02' has 1 connector(s)",
        "signage.language": "\"de\" is not one of 'nl' or 'en'",
        "signage.min_free_ev_bays": "5 is more than the number of bays (4)",
    }


def test_cross_check_on_a_key_with_its_own_error_is_left_out() -> None:
    doc = copy.deepcopy(MINIMAL)
    doc["bays"][2]["connector"] = 9
    doc["bays"][1]["charger"] = 17
    doc["chargers"][0]["connectors"] = 0
    doc["signage"] = {"min_free_ev_bays": -1}
    issues = {issue.key_path: issue.message for issue in issues_of(emit(doc))}
    assert issues == {
        "chargers.0.connectors": "charger CP01: 0 is below the minimum 1",
        "bays.1.charger": "bay B02: 17 is not a string",
        "bays.2.connector": "bay B03: 9 is above the maximum 8",
        "signage.min_free_ev_bays": "-1 is below the minimum 0",
    }


def test_messages_name_the_entry_id_and_keep_the_key_path() -> None:
    text = (EXAMPLES / "hoofddorp-marktplein.toml").read_text()
    head, tail = text.split('id = "B12"\ncharger = "CP06"')
    text = head + 'id = "B12"\ncharger = "CP09"' + tail
    [issue] = issues_of(text)
    line = line_of(text, 'charger = "CP09"')
    assert str(issue) == (
        f"square.toml:{line}: bays.11.charger: "
        "bay B12: no charger 'CP09' (known: CP01, CP02, CP03, CP04, CP05, CP06)"
    )
    doc = copy.deepcopy(MINIMAL)
    doc["chargers"][1].update(id="CP 2", phases=2)
    doc["bays"][0]["id"] = 12
    issues = {issue.key_path: issue.message for issue in issues_of(emit(doc))}
    assert issues["chargers.1.phases"] == 'charger "CP 2": 2 is not one of 1 or 3'
    assert issues["chargers.1.id"].startswith('"CP 2" does not match')
    assert issues["bays.0.id"] == "12 is not a string"
    assert issues["bays.2.charger"] == "bay B03: no charger 'CP02' (known: CP 2, CP01)"


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "charger", "connector", "connectors", "limit_a", "base_load_a", "soc_min_pct",
                         "soc_max_pct", "min_free_ev_bays", "x"]),
        inner, max_size=5,
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["grid", "battery", "signage", "chargers", "bays", "site"]), JUNK))
def test_raw_cross_checks_take_any_data(data: dict[str, Any]) -> None:
    for loc, message in cross_issues(data):
        assert loc and message


def test_min_free_ev_bays_up_to_number_of_bays() -> None:
    assert load_config_text(emit(doc_with(("signage", "min_free_ev_bays", 3)))).signage.min_free_ev_bays == 3
    [issue] = issues_of(emit(doc_with(("signage", "min_free_ev_bays", 4))))
    assert issue.key_path == "signage.min_free_ev_bays"


def test_base_load_and_soc_window() -> None:
    [issue] = issues_of(emit(doc_with(("grid", "base_load_a", 80))))
    assert issue.key_path == "grid.base_load_a" and "limit_a" in issue.message
    [issue] = issues_of(emit(doc_with(("battery", "soc_min_pct", 95))))
    assert issue.key_path == "battery.soc_min_pct" and "soc_max_pct" in issue.message
    with pytest.raises(ValidationError):
        GridConfig(limit_a=10, base_load_a=10)
    with pytest.raises(ValidationError):
        BatteryConfig(driver="simulated", capacity_kwh=1, max_charge_w=1, max_discharge_w=1, soc_min_pct=50,
                      soc_max_pct=50)


# -- files, paths, check ----------------------------------------------------------------------------


def test_relative_paths_resolved_against_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    doc = doc_with(("storage", "path", "data/laadplein.db"), ("api", "token_file", "api-token"))
    (folder / "square.toml").write_text(emit(doc))
    square = load_config(folder / "square.toml")
    assert square.storage.path == folder / "data" / "laadplein.db"
    assert square.api.token_file == folder / "api-token"
    assert load_config_text(emit(doc)).storage.path == Path("data/laadplein.db")
    absolute = doc_with(("storage", "path", "/srv/x.db"))
    assert load_config_text(emit(absolute), base_dir=folder).storage.path == Path("/srv/x.db")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    [issue] = caught.value.issues
    assert issue.line == 0 and "cannot read" in issue.message
    (tmp_path / "latin1.toml").write_bytes(b'[site]\nid = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "latin1.toml")
    assert caught.value.issues[0].line == 2


def test_check_main_success(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main(str(EXAMPLES / "hoofddorp-marktplein.toml")) == 0
    out = capsys.readouterr().out
    for expected in ("hoofddorp-marktplein", "Europe/Amsterdam", "55.2 kW", "ws://0.0.0.0:9000/ocpp/<charger id>",
                     "laadplein/hoofddorp-marktplein", "127.0.0.1:8080", "/var/lib/laadplein/laadplein.db"):
        assert expected in out
    assert "none" not in out.split("battery", 1)[1].splitlines()[0]


def test_check_main_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = doc_with(("grid", "limit_a", 5000), ("grid", "limt_a", 1))
    config_file = tmp_path / "bad.toml"
    config_file.write_text(emit(doc))
    assert check_main(str(config_file)) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    parsed = [ISSUE_LINE.match(line) for line in lines]
    assert all(parsed)
    assert {m["key"] for m in parsed} == {"grid.limit_a", "grid.limt_a"}
    assert all(m["file"] == str(config_file) for m in parsed)
    assert check_main(str(tmp_path / "absent.toml")) == 2
    assert ISSUE_LINE.match(capsys.readouterr().out.strip())


def test_check_main_reports_every_error_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = copy.deepcopy(MINIMAL)
    doc["grid"] = {"limit_a": 5000}
    doc["control"] = {"lease_s": 300, "perod_s": 1.0}
    doc["bays"][2]["charger"] = "CP09"
    config_file = tmp_path / "bad.toml"
    config_file.write_text(emit(doc))
    text = emit(doc)
    lines = [line_of(text, needle) for needle in ("limit_a", 'charger = "CP09"', "perod_s")]
    assert check_main(str(config_file)) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"{config_file}:{lines[0]}: grid.limit_a: 5000 is above the maximum 4000",
        f"{config_file}:{lines[1]}: bays.2.charger: "
        "bay B03: no charger 'CP09' (known: CP01, CP02)",
        f"{config_file}:{lines[2]}: control.perod_s: unknown key 'perod_s' (did you mean 'period_s'?)",
    ]


# -- round trip -------------------------------------------------------------------------------------

NAMES = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
CHARGER_IDS = st.from_regex(r"[A-Za-z0-9._-]{1,48}", fullmatch=True)
BAY_IDS = st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True)


def number(low: float, high: float) -> st.SearchStrategy[float]:
    return st.one_of(st.integers(int(low) + (low % 1 > 0), int(high)), st.floats(low, high))


@st.composite
def squares(draw: st.DrawFn) -> dict[str, Any]:
    limit_a = draw(number(6, 4000))
    doc: dict[str, Any] = {
        "site": draw(st.fixed_dictionaries(
            {"id": st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True)},
            optional={"name": NAMES, "timezone": st.sampled_from(["UTC", "Europe/Amsterdam", "America/New_York"])},
        )),
        "grid": {"limit_a": limit_a, "phases": draw(st.sampled_from([1, 3])),
                 "base_load_a": draw(st.floats(0, limit_a, exclude_max=True))},
    }
    optional = {
        "ocpp": {"port": st.integers(1, 65535), "path": st.sampled_from(["/ocpp", "/a/b.c"]),
                 "auth": st.sampled_from(["free", "local_list"]), "allow_unknown_chargers": st.booleans()},
        "mqtt": {"host": st.sampled_from(["broker", "10.0.0.2"]), "topic_prefix": st.sampled_from(["x", "a/b"]),
                 "username": NAMES.filter(bool), "keepalive_s": st.integers(5, 3600)},
        "storage": {"path": st.sampled_from(["/var/lib/x.db", "/tmp/y z.db"]), "retention_days": st.integers(1, 3650)},
        "control": {"period_s": number(0.1, 60), "min_current_a": number(6, 16), "lease_s": st.integers(10, 3600)},
        "battery": {"soc_min_pct": st.floats(0, 50), "soc_max_pct": st.floats(50, 100, exclude_min=True),
                    "unit_id": st.integers(0, 255)},
        "signage": {"grace_s": st.integers(0, 86400), "min_dwell_s": st.integers(0, 3600),
                    "language": st.sampled_from(["nl", "en"])},
    }
    for section, keys in optional.items():
        if draw(st.booleans()):
            required = dict(BATTERY) if section == "battery" else {}
            doc[section] = required | draw(st.fixed_dictionaries({}, optional=keys))
    charger_ids = draw(st.lists(CHARGER_IDS, min_size=1, max_size=4, unique=True))
    doc["chargers"] = [
        {"id": cid, "max_current_a": draw(number(6, 1000)), "connectors": draw(st.integers(1, 3))}
        for cid in charger_ids
    ]
    slots = [(c["id"], k) for c in doc["chargers"] for k in range(1, c["connectors"] + 1)]
    used = draw(st.lists(st.sampled_from(slots), min_size=1, unique=True))
    bay_ids = draw(st.lists(BAY_IDS, min_size=len(used), max_size=len(used), unique=True))
    doc["bays"] = [
        {"id": bid, "charger": cid, "connector": k, "sensor": draw(st.booleans())}
        for bid, (cid, k) in zip(bay_ids, used)
    ]
    doc["signage"] = doc.get("signage", {}) | {"min_free_ev_bays": draw(st.integers(0, len(used)))}
    return doc


@settings(max_examples=150, deadline=None)
@given(squares())
def test_any_valid_square_round_trips_through_toml(doc: dict[str, Any]) -> None:
    square = load_config_text(emit(doc), "random.toml")
    assert square == SquareConfig.model_validate(doc)
    assert square.grid.limit_a == doc["grid"]["limit_a"]
    assert [bay.id for bay in square.bays] == [bay["id"] for bay in doc["bays"]]
    for bay in doc["bays"]:
        assert square.bay_for(bay["charger"], bay["connector"]).id == bay["id"]


@settings(max_examples=100, deadline=None)
@given(squares(), st.data())
def test_cross_checks_do_not_depend_on_field_errors(doc: dict[str, Any], data: st.DataObject) -> None:
    bay = data.draw(st.sampled_from(doc["bays"]))
    bay["charger"] = "no-such-charger"
    broken = copy.deepcopy(doc)
    broken["grid"]["limt_a"] = 1
    broken["chargers"][0]["max_current_a"] = 0
    before = {(issue.key_path, issue.message) for issue in issues_of(emit(doc))}
    after = {(issue.key_path, issue.message) for issue in issues_of(emit(broken))}
    assert any(path.endswith(".charger") for path, _ in before)
    assert before < after and len(after - before) == 2


# -- exposure: warnings, insecure chargers, the ECDSA pair, connection caps --------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("fe80::1", False), ("gateway.lan", False)],
)
def test_loopback_host(host: str, loopback: bool) -> None:
    assert loopback_host(host) is loopback
    assert load_config_text(emit(doc_with(("ocpp", "host", host)))).ocpp.on_loopback is loopback


def warnings_of(tmp_path: Path, doc: dict[str, Any]) -> list[ConfigIssue]:
    config_file = tmp_path / "square.toml"
    config_file.write_text(emit(doc))
    return config_warnings(config_file, load_config(config_file))


def test_warnings_name_what_an_exposed_endpoint_leaves_open(tmp_path: Path) -> None:
    doc = doc_with(("ocpp", "host", "0.0.0.0"), ("ocpp", "allow_unknown_chargers", True))
    doc["chargers"].append({"id": "CP03", "max_current_a": 16, "password": "kort-wachtwoord"})
    doc["chargers"].append({"id": "CP04", "max_current_a": 16, "password": "lang-genoeg-wachtwoord"})
    doc["chargers"][1]["insecure"] = True
    text = emit(doc)
    found = {(w.key_path, w.line): w.message for w in warnings_of(tmp_path, doc)}
    assert all(w.level == "warning" for w in warnings_of(tmp_path, doc))
    messages = " | ".join(found.values())
    assert ("ocpp.host", line_of(text, "host")) in found and "no TLS" in found["ocpp.host", line_of(text, "host")]
    assert "allow_unknown_chargers" in " ".join(path for path, _ in found)
    cp01 = found["chargers.0.id", line_of(text, 'id = "CP01"')]
    assert "CP01 has no password" in cp01 and "refused" in cp01 and "insecure = true" in cp01
    cp02 = found["chargers.1.id", line_of(text, 'id = "CP02"')]
    assert "CP02 has no password" in cp02 and "anyone who knows its id" in cp02
    cp03 = found["chargers.2.password", line_of(text, 'password = "kort')]
    assert "15 characters" in cp03 and "16 to 40" in cp03 and "refused unless insecure" in cp03
    assert "CP04" not in messages and "kort-wachtwoord" not in messages
    assert len(found) == 5
    # With TLS and every charger at 16 characters or more, nothing is left to warn about.
    safe = doc_with(("ocpp", "host", "::"), ("ocpp", "tls_cert_file", "c.pem"), ("ocpp", "tls_key_file", "k.pem"))
    for charger in safe["chargers"]:
        charger["password"] = "zestien-tekens-ok"
    assert warnings_of(tmp_path, safe) == []


def test_on_loopback_only_missing_passwords_are_warned_about(tmp_path: Path) -> None:
    found = warnings_of(tmp_path, doc_with(("ocpp", "host", "127.0.0.1")))
    assert [w.key_path for w in found] == ["chargers.0.id", "chargers.1.id"]
    assert all("anyone on this machine" in w.message for w in found)


def test_a_broker_elsewhere_without_tls_or_a_user_is_warned_about(tmp_path: Path) -> None:
    doc = doc_with(("mqtt", "host", "192.168.1.20"), ("ocpp", "host", "127.0.0.1"))
    for charger in doc["chargers"]:
        charger["password"] = "zestien-tekens-ok"
    found = {w.key_path: w.message for w in warnings_of(tmp_path, doc)}
    assert "no TLS" in found["mqtt.host"] and "anonymously" in found["mqtt.username"]
    assert set(found) == {"mqtt.host", "mqtt.username"}
    # The broker on this machine, as the example squares have it: nothing to say of it.
    doc["mqtt"]["host"] = "127.0.0.1"
    assert warnings_of(tmp_path, doc) == []


def test_check_shows_warnings_apart_from_the_summary_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "square.toml"
    config_file.write_text(emit(doc_with(("ocpp", "host", "0.0.0.0"))))
    assert check_main(str(config_file)) == 0
    out = capsys.readouterr().out
    summary, _, warnings = out.partition("3 warning(s)")
    assert "valid" in summary and "warning:" not in summary
    lines = [line for line in warnings.splitlines() if line.startswith(str(config_file))]
    assert len(lines) == 3 and all(": warning: " in line for line in lines), out
    assert {line.split(": warning: ")[1].split(":")[0] for line in lines} == {"ocpp.host", "chargers.0.id", "chargers.1.id"}


def test_insecure_and_the_new_ocpp_keys_load_with_their_defaults() -> None:
    square = load_config_text(emit(MINIMAL))
    assert not square.chargers[0].insecure
    assert square.ocpp.tls_ecdsa_cert_file is None and square.ocpp.tls_ecdsa_key_file is None
    assert square.ocpp_max_handshakes_per_host == 2 + 16 and square.ocpp_max_connections == 2 * 2 + 32
    doc = doc_with(("ocpp", "max_handshakes_per_host", 5), ("ocpp", "max_connections", 40))
    doc["chargers"][0]["insecure"] = True
    square = load_config_text(emit(doc))
    assert square.chargers[0].insecure and square.ocpp_max_handshakes_per_host == 5 and square.ocpp_max_connections == 40
    for key in ("max_handshakes_per_host", "max_connections"):
        assert any(i.key_path == f"ocpp.{key}" for i in issues_of(emit(doc_with(("ocpp", key, 0)))))


def test_the_ecdsa_pair_needs_both_files_and_an_rsa_pair_beside_it(tmp_path: Path) -> None:
    half = issues_of(emit(doc_with(("ocpp", "tls_ecdsa_cert_file", "ec.pem"))))
    assert [(i.key_path, i.message) for i in half] == [
        ("ocpp.tls_ecdsa_key_file", "missing: tls_ecdsa_cert_file is set, and TLS needs both the certificate and its key"),
        ("ocpp.tls_cert_file", ("missing: the ECDSA pair (tls_ecdsa_cert_file) stands beside an RSA pair, "
                                "tls_cert_file and tls_key_file")),
    ]
    doc = doc_with(("ocpp", "tls_cert_file", "rsa.pem"), ("ocpp", "tls_key_file", "rsa-key.pem"),
                   ("ocpp", "tls_ecdsa_cert_file", "ec.pem"), ("ocpp", "tls_ecdsa_key_file", "ec-key.pem"))
    (tmp_path / "square.toml").write_text(emit(doc))
    square = load_config(tmp_path / "square.toml")
    assert square.ocpp.tls_ecdsa_cert_file == tmp_path / "ec.pem" and square.ocpp.tls_ecdsa_key_file == tmp_path / "ec-key.pem"


def test_conformance_mode_is_off_by_default_and_warned_about_when_on(tmp_path: Path) -> None:
    assert load_config_text(emit(doc_with())).ocpp.conformance_mode is False
    doc = doc_with(("ocpp", "host", "127.0.0.1"), ("ocpp", "conformance_mode", True))
    found = [w for w in warnings_of(tmp_path, doc) if w.key_path == "ocpp.conformance_mode"]
    assert len(found) == 1 and "counts at its maximum" in found[0].message
    with pytest.raises(ConfigError):
        load_config_text(emit(doc_with(("ocpp", "conformance_mode", "yes"))))
