"""The live console: screens rendered from fixed snapshots at 80x24 and 160x48, and its poll loop on a fake client."""

from __future__ import annotations

import io

import pytest
from rich.cells import cell_len
from rich.console import Console

from controller.cli.client import EXIT_REFUSED, EXIT_UNREACHABLE, ClientError
from controller.cli.console import CONNECTED, render, run_console

URL = "http://127.0.0.1:8080"
DOWN = f"daemon not reachable at {URL} — reconnecting (since 14:03:00)"
STATUSES = ("Charging", "Available", "SuspendedEVSE", "Preparing", "Faulted", "Available")


def bay(n: int, light: str | None, status: str, current_a: float | None = None, limit_a: float | None = None) -> dict:
    reason = {"blue": "charging", "green": "open", "off": "override"}.get(light)
    text = {"blue": "Alleen opladen", "green": "Vrij parkeren"}.get(light, "")
    return {"id": f"B{n:02d}", "light": light, "reason": reason, "text": text, "occupied": True,
            "charger": f"CP{(n + 1) // 2:02d}", "connector": 2 - n % 2, "status": status,
            "limit_a": limit_a, "current_a": current_a}


def snapshot(bays: int = 12, battery: dict | None = None) -> dict:
    lights = ("blue", "green", "off", None)
    made = []
    for i in range(bays):
        light = lights[i % 4]
        charging = light == "blue"
        made.append(bay(i + 1, light, STATUSES[i % 6] if not charging else "Charging",
                        15.9 if charging else None, 16.0 if charging else None))
    return {
        "site": "testplein", "ts": "2026-11-28T13:05:09.123Z", "timezone": "Europe/Amsterdam",
        "grid": {"limit_a": 80, "current_a": [41.0, 12.5, 85.2]},
        "battery": battery,
        "bays": made,
        "chargers": [{"id": f"CP{c:02d}", "online": c != 3, "ocpp": "ocpp1.6"} for c in range(1, (bays + 1) // 2 + 1)],
    }


ALARMS = [{"key": "charger_offline:CP03", "since": "2026-11-28T12:58:00.000Z", "message": "charger CP03 offline",
           "action": "its bays show green", "bay": None, "charger": "CP03"}]
EVENTS = [{"id": i, "ts": f"2026-11-28T13:{i:02d}:00.000Z", "kind": "light", "bay": "B01", "charger": "CP01",
           "message": f"bay B01: event number {i}", "data": {}} for i in range(20)]


def screen(status, alarms=ALARMS, events=EVENTS, *, width=80, height=24, connection=CONNECTED, help_shown=False):
    console = Console(record=True, width=width, height=height, color_system="truecolor")
    renderable = render(status, alarms, events, width=width, height=height, connection=connection,
                        help_shown=help_shown, now_local="2026-11-28 14:05:09 CET")
    console.print(renderable)
    return console.export_text(), console, renderable


def assert_fits(text: str, width: int, height: int) -> None:
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= height, f"{len(lines)} lines:\n{text}"
    too_wide = [line for line in lines if cell_len(line) > width]
    assert not too_wide, too_wide


@pytest.mark.parametrize("width,height", [(80, 24), (160, 48)])
def test_every_bay_shows_id_light_word_status_and_amps(width, height):
    text, _, _ = screen(snapshot(battery={"online": True, "soc_pct": 54, "power_w": 12000}), width=width, height=height)
    assert_fits(text, width, height)
    for n in range(1, 13):
        assert f"B{n:02d}" in text
    for word in ("BLUE", "GREEN", "OFF", "UNKNOWN", "charging", "open", "Alleen opladen", "Vrij parkeren",
                 "Charging", "SuspendedEVSE", "Faulted", "15.9", "16 A", "testplein", "14:05:09"):
        assert word in text, word
    assert "L1 " in text and "41.0/80 A" in text and "85.2/80 A OVER" in text
    assert "54%" in text and "+12.0 kW discharging" in text
    if width == 80:
        assert "online (OCPP 1.6)" in text and "OFFLINE" in text and "CP03" in text
    else:  # room for every charger with its own state and version
        assert "CP01 1.6" in text and "CP03 OFFLINE" in text and "Chargers · OCPP" in text
    assert "ALARM" in text and "charger CP03 offline" in text and "13:58:00" in text  # the square's time zone
    assert "bay B01: event number 19" in text  # the newest event


def test_compact_layout_is_a_dense_grid_of_three_line_blocks_with_the_newest_events():
    text, _, _ = screen(snapshot())
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == 24
    assert lines[0].startswith("laadplein testplein") and "connected" in lines[0]
    assert lines[1].lstrip().startswith("ALARM"), "active alarms come first"
    assert lines[2].startswith("B01 BLUE charging") and "B02 GREEN open" in lines[2] and "B03 OFF" in lines[2]
    assert lines[4].startswith("Charging 15.9/16 A")
    assert "event number 19" in lines[-1] and "event number 0 " not in text


def test_light_colours_and_words_go_together():
    _, console, renderable = screen(snapshot())
    styles = {}
    for seg in console.render(renderable):
        for word in ("B01 BLUE", "B02 GREEN", "B03 OFF", "B04 UNKNOWN"):
            if seg.text.startswith(word):
                styles[word] = seg.style
    assert styles["B01 BLUE"].bgcolor.name == "blue" and styles["B01 BLUE"].color.name == "white"
    assert styles["B02 GREEN"].bgcolor.name == "green" and styles["B02 GREEN"].color.name == "black"
    assert styles["B03 OFF"].dim and styles["B04 UNKNOWN"].dim


def test_daemon_gone_keeps_the_last_screen_dimmed_under_a_banner():
    text, console, renderable = screen(snapshot(), connection=DOWN)
    assert_fits(text, 80, 24)
    assert "reconnecting (since 14:03:00)" in text and f"not reachable at {URL}" in text
    assert "NOT CONNECTED" in text and "B01 BLUE" in text
    bay_segments = [s for s in console.render(renderable) if s.text.startswith("B01 BLUE")]
    assert bay_segments and all(s.style.dim for s in bay_segments)


@pytest.mark.parametrize("width,height", [(80, 24), (160, 48)])
def test_no_answer_yet_shows_the_banner_and_no_bays(width, height):
    text, _, _ = screen(None, [], [], width=width, height=height, connection=DOWN)
    assert_fits(text, width, height)
    assert "reconnecting" in text and "No answer from the daemon yet" in text and "B01" not in text


def test_help_replaces_the_events_and_explains_the_words():
    text, _, _ = screen(snapshot(), help_shown=True)
    assert_fits(text, 80, 24)
    assert "q  quit" in text and "only electric vehicles" in text and "anyone may park" in text
    text, _, _ = screen(snapshot(), width=160, height=48, help_shown=True)
    assert "Help" in text and "only electric vehicles" in text


def test_roomy_layout_uses_panels_and_full_dates():
    text, _, _ = screen(snapshot(battery={"online": False, "soc_pct": None, "power_w": None}), width=160, height=48)
    assert_fits(text, 160, 48)
    assert "╭─ B01" in text and "CP01/1 Charging" in text and "15.9 A of limit 16 A" in text
    assert "Grid (limit 80 A per phase)" in text and "Battery" in text and "OFFLINE" in text
    assert "2026-11-28 14:19:00" in text


@pytest.mark.parametrize("bays", [1, 12, 24, 40])
def test_many_bays_still_fit_80x24(bays):
    text, _, _ = screen(snapshot(bays), ALARMS * 5)
    assert_fits(text, 80, 24)
    assert "B01 BLUE" in text and "ALARM +" in text


def test_no_battery_and_no_alarms_are_said_in_words():
    text, _, _ = screen(snapshot(), [], [])
    assert "Battery none" in text and "Alarms: none active" in text and "ALARM " not in text


class FakeClient:
    """Answers from a script: each poll takes the next step (an exception or "up")."""

    base_url = URL

    def __init__(self, steps: list) -> None:
        self.steps = steps
        self.polls = 0

    def get(self, path: str) -> object:
        step = self.steps[min(self.polls, len(self.steps) - 1)]
        if path == "/api/status":
            self.polls += 1
        if isinstance(step, Exception):
            raise step
        return {"/api/status": snapshot(), "/api/alarms": ALARMS}.get(path.split("?")[0], EVENTS)


async def test_run_console_reconnects_and_ends_on_a_refused_token():
    gone = ClientError(f"daemon not reachable at {URL} (refused)", EXIT_UNREACHABLE)
    refused = ClientError("the daemon refused the token (missing or wrong bearer token)", EXIT_REFUSED)
    out = io.StringIO()
    console = Console(file=out, width=80, height=24, force_terminal=True, color_system=None)
    client = FakeClient([gone, gone, "up", "up", gone, "up", refused])
    code = await run_console(client, refresh_s=0.0, stdin_keys=False, console=console)
    assert code == EXIT_REFUSED
    drawn = out.getvalue()
    first_bays, banner = drawn.find("B01 BLUE"), drawn.find("reconnecting")
    assert 0 <= banner < first_bays, "starts reconnecting, then shows the bays"
    assert drawn.find("reconnecting", first_bays) > first_bays, "the banner comes back when the daemon goes"
