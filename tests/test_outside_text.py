"""Text a charger supplies (boot strings, error info, an unknown charger's id) reaches the log,
the event log and the technician's terminal as one line of visible characters: an ESC sequence
is shown, not obeyed, and a line break cannot forge a log line."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from config.loader import load_config_text
from controller.cli.console import CONNECTED, render
from controller.cli.views import event_line, print_status
from controller.shell.state import SquareState
from controller.store.database import Store
from controller.store.secrets import TagVault
from drivers.contract import events as ev
from drivers.contract.text import PrintableLog, printable_tree

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=UTC)
CLEAR_SCREEN = "\x1b[2J"
FORGED = "\r\nWARNING forged"
RAW = ("\x1b", "\n", "\r")

TOML = """
[site]
id = "testplein"
name = "Test"
timezone = "Europe/Amsterdam"
[grid]
phases = 3
limit_a = 80
[ocpp]
allow_unknown_chargers = {unknown}
[[chargers]]
id = "CP01"
max_current_a = 32
connectors = 2
[[bays]]
id = "B01"
charger = "CP01"
connector = 1
"""


def raw_free(text: str) -> bool:
    return not any(c in text for c in RAW)


@pytest.fixture
async def state(tmp_path: Path):
    cfg = load_config_text(TOML.format(unknown="true"), "t.toml", base_dir=tmp_path)
    async with await Store.open(tmp_path / "laadplein.db", TagVault(bytes(range(32)))) as store:
        yield SquareState(cfg, store, clock=lambda: T0)


def test_a_log_record_carrying_outside_text_stays_one_visible_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(PrintableLog())
    logger = logging.getLogger("laadplein.test.outside")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("charger %s booted: %s", "CP01", "ABB" + CLEAR_SCREEN + FORGED)
        logger.info("plain %s", "words – ré")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("a traceback keeps its lines")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[0] == "WARNING laadplein.test.outside: charger CP01 booted: ABB\\x1b[2J\\x0d\\x0aWARNING forged"
    assert lines[1] == "INFO laadplein.test.outside: plain words – ré"
    assert not any(line.startswith("WARNING forged") for line in lines)
    assert "Traceback (most recent call last):" in lines  # not the message: left as it is


async def test_boot_strings_and_error_info_reach_the_event_log_escaped(state: SquareState) -> None:
    state.record(ev.ChargerBooted("CP01", T0, "ABB" + CLEAR_SCREEN, "M" + FORGED, "1.0\x07"))
    state.record(ev.ConnectorStatusChanged("CP01", 1, "Faulted", T0, "OtherError", "relay" + FORGED))
    messages = [e.message for e in state.pending_log]
    assert any("ABB\\x1b[2J" in m for m in messages) and any("relay\\x0d\\x0aWARNING forged" in m for m in messages)
    assert all(raw_free(m) for m in messages), messages
    charger = state.chargers["CP01"]
    assert raw_free(charger.vendor + charger.model + charger.firmware)


async def test_an_unknown_charger_id_must_be_one_a_config_could_name(state: SquareState) -> None:
    assert state.charger_known("CP-77.a_b")
    for hostile in ("CP\nWARNING forged", "CP" + CLEAR_SCREEN, "CP 01", "CP:01", "x" * 49, ""):
        assert not state.charger_known(hostile), hostile
    assert state.charger_known("CP01")


def test_console_and_operator_views_show_outside_text_escaped() -> None:
    status = {
        "site": "testplein", "ts": "2026-11-28T13:05:09.123Z", "timezone": "Europe/Amsterdam",
        "grid": {"limit_a": 80, "current_a": [1.0, 2.0, 3.0]}, "battery": None,
        "bays": [{"id": "B01", "light": "green", "reason": "fault", "text": "Vrij", "occupied": None,
                  "charger": "CP01", "connector": 1, "status": "Faulted", "limit_a": None, "current_a": None}],
        "chargers": [{"id": "CP01" + CLEAR_SCREEN, "online": False, "ocpp": "ocpp1.6", "vendor": "ABB" + CLEAR_SCREEN}],
    }
    alarms = [{"key": "x", "since": "2026-11-28T12:58:00.000Z", "message": "charger says" + FORGED + CLEAR_SCREEN,
               "action": "none" + FORGED, "bay": None, "charger": "CP01"}]
    events = [{"id": 1, "ts": "2026-11-28T13:00:00.000Z", "kind": "connector_status", "bay": "B01", "charger": "CP01",
               "message": "CP01/1: Available -> Faulted (OtherError): relay" + FORGED + CLEAR_SCREEN, "data": {}}]
    for width, height in ((80, 24), (160, 48)):
        console = Console(file=io.StringIO(), width=width, height=height, color_system=None, force_terminal=True)
        console.print(render(status, alarms, events, width=width, height=height, connection=CONNECTED,
                             help_shown=False, now_local="2026-11-28 14:05:09 CET"))
        shown = console.file.getvalue()
        assert "\x1b" not in shown and "\r" not in shown and "\\x1b[2J" in shown
        assert not any(line.lstrip("│ ").startswith("WARNING forged") for line in shown.splitlines())
    console = Console(file=io.StringIO(), width=200, color_system=None, force_terminal=True)
    print_status(status, alarms, console)
    assert "\x1b" not in console.file.getvalue() and "\r" not in console.file.getvalue()
    assert raw_free(event_line(events[0], "Europe/Amsterdam"))


def test_printable_tree_escapes_every_string_and_keeps_the_rest() -> None:
    tree = {"a": ["x\ny", 1, None, {"k\x1b": 2.5, "t": True}]}
    assert printable_tree(tree) == {"a": ["x\\x0ay", 1, None, {"k\\x1b": 2.5, "t": True}]}
