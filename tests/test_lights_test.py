"""The lights test: one bay's step as a pure state machine, the request's checks, and the whole walk
against the real state, cycle and store with a fake clock and fixtures that ack (or do not) at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from config.loader import load_config_text
from controller.cli.lights import describe_progress, print_result, result_table, summary
from controller.shell.cycle import Cycle
from controller.shell.lights_test import (
    NOT_DECIDED,
    FixtureResult,
    LightsTestBusy,
    LightsTester,
    StepResult,
    UnknownBay,
    Waiting,
    advance,
    parse_request,
)
from controller.shell.state import SquareState
from controller.store.database import Store
from controller.store.secrets import TagVault
from drivers.contract.events import (
    BrokerConnected,
    ChargerConnected,
    ConnectorStatusChanged,
    LightAcked,
)
from signage.rules import Override

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=UTC)


def cmd(seq: int, color: str, reason: str = "override") -> dict:
    return {"seq": seq, "color": color, "reason": reason}


def at_s(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


# ---- one bay's step ------------------------------------------------------------------------


def test_a_step_passes_when_the_fixture_acks_the_published_command_in_its_colour():
    w = Waiting("blue", T0)
    w = advance(w, cmd(7, "green", "open"), (7, "green", at_s(-3)), elapsed_s=0.05, timeout_s=5)
    assert w == Waiting("blue", T0)  # the cycle has not published the test's blue yet
    # a bay that is blue for a car is not the test's blue: its ack proves nothing of this step
    assert advance(w, cmd(7, "blue", "charging"), (7, "blue", T0), elapsed_s=0.05, timeout_s=5) == w
    w = advance(w, cmd(8, "blue"), (7, "green", at_s(-3)), elapsed_s=0.1, timeout_s=5)
    assert w == Waiting("blue", T0, want=(8, "blue"))
    out = advance(w, cmd(8, "blue"), (8, "blue", at_s(0.21)), elapsed_s=0.25, timeout_s=5)
    assert out == StepResult("blue", True, "blue", 8, 0.21)


def test_a_later_published_seq_in_the_right_colour_also_passes_and_an_old_ack_counts_as_at_once():
    w = Waiting("green", at_s(10), want=(8, "green"))
    assert advance(w, cmd(9, "green"), (9, "green", at_s(9)), elapsed_s=0.1, timeout_s=5).ack_s == 0.0


@pytest.mark.parametrize("fake_seq", [9, 10**6, 2**63 - 1])
def test_an_ack_for_a_seq_the_gateway_never_published_is_no_pass(fake_seq):
    """Anyone on the broker can write `{"seq": <huge>, "color": "green"}` on an ack topic: it proves nothing."""
    w = Waiting("green", T0, want=(8, "green"))
    fake = (fake_seq, "green", at_s(0.1))
    assert advance(w, cmd(8, "green"), fake, elapsed_s=0.2, timeout_s=5) == w
    out = advance(w, cmd(8, "green"), fake, elapsed_s=5.0, timeout_s=5)
    assert not out.ok
    assert out.problem == (f"no ack for green within 5 s (last ack: seq {fake_seq}, green, a seq the gateway "
                           "never published)")
    # nor does a fake in another colour fail the fixture at once: it is not the fixture's word
    assert advance(w, cmd(8, "green"), (fake_seq, "blue", at_s(0.1)), elapsed_s=0.2, timeout_s=5) == w


def test_a_wrong_colour_is_a_failure_at_once_with_what_was_shown():
    w = Waiting("blue", T0, want=(8, "blue"))
    out = advance(w, cmd(8, "blue"), (8, "off", at_s(0.1)), elapsed_s=0.2, timeout_s=5)
    assert not out.ok and out.problem == "acked off while blue was asked (seq 8)"


def test_no_ack_within_the_timeout_says_which_colour_and_the_last_ack():
    w = Waiting("green", T0, want=(9, "green"))
    assert advance(w, cmd(9, "green"), (8, "blue", at_s(0.1)), elapsed_s=4.99, timeout_s=5) == w
    out = advance(w, cmd(9, "green"), (8, "blue", at_s(0.1)), elapsed_s=5.0, timeout_s=5)
    assert out == StepResult("green", False, "green", 9, problem="no ack for green within 5 s (last ack: seq 8, blue)")
    never = advance(w, cmd(9, "green"), None, elapsed_s=5.0, timeout_s=5, broker_online=False)
    assert never.problem == ("no ack for green within 5 s (the fixture has not acked anything since the gateway "
                             "started); the MQTT broker is not connected")


def test_a_command_never_published_is_the_gateways_failure_not_the_fixtures():
    out = advance(Waiting("off", T0), cmd(9, "green"), (9, "green", T0), elapsed_s=5, timeout_s=5)
    assert out == StepResult("off", False, "off", None, problem="the gateway did not publish off within 5 s")
    out = advance(Waiting("back", T0), cmd(9, "off"), (9, "off", T0), elapsed_s=5, timeout_s=5, before_seq=9)
    assert out.color is None and out.problem == "the gateway did not publish the bay's own light again within 5 s"


def test_back_waits_for_the_cycles_own_decision():
    off = cmd(9, "off")
    w = Waiting("back", T0)
    # still the test's off: not yet back
    assert advance(w, off, (9, "off", T0), elapsed_s=0.1, timeout_s=5, before_seq=9) == w
    # the decided light (a new seq, not an override) is what must be acked
    out = advance(w, cmd(10, "green", "open"), (10, "green", at_s(0.3)), elapsed_s=0.35, timeout_s=5, before_seq=9)
    assert out == StepResult("back", True, "green", 10, 0.3)
    # a technician's override back in place may be a new override command, or the same as the test's off
    assert advance(w, cmd(10, "blue"), None, elapsed_s=0.1, timeout_s=5, before_seq=9).want == (10, "blue")
    same = advance(w, off, (9, "off", T0), elapsed_s=0.1, timeout_s=5, before_seq=9, restored_color="off")
    assert same.ok and same.color == "off"
    out = advance(Waiting("back", T0, want=(10, "green")), cmd(10, "green", "open"), (9, "off", T0),
                  elapsed_s=5, timeout_s=5)
    assert out.problem == "no ack for green (back) within 5 s (last ack: seq 9, off)"


def test_a_fixture_passes_only_with_every_step_passed():
    steps = [StepResult(step, True, step, 3 + i, 0.1) for i, step in enumerate(("blue", "green", "off"))]
    assert not FixtureResult("B01", tuple(steps)).ok
    assert FixtureResult("B01", tuple(steps)).problem == "the test stopped before its last step"
    passed = FixtureResult("B01", (*steps, StepResult("back", True, "green", 6, 0.1)))
    assert passed.ok and passed.problem is None
    off = StepResult("off", False, "off", 5, problem="no ack for off within 5 s")
    failed = FixtureResult("B01", (steps[0], steps[1], off, StepResult("back", True, "green", 6, 0.1)))
    assert not failed.ok and failed.problem == "no ack for off within 5 s"
    assert not FixtureResult("B01", skipped="not tested: why").ok


# ---- the request ---------------------------------------------------------------------------


def test_the_request_names_bays_of_the_config_in_config_order():
    ids = ["B01", "B02", "B03"]
    assert parse_request({}, ids) == (ids, 1.0, "")
    assert parse_request({"bays": ["B03", "B01", "B03"], "hold_s": 0, "who": "jan"}, ids) == (["B01", "B03"], 0.0, "jan")
    with pytest.raises(UnknownBay, match="B99"):
        parse_request({"bays": ["B01", "B99"]}, ids)
    for bad in ({"bays": "B01"}, {"bays": []}, {"bays": [1]}, {"hold_s": -1}, {"hold_s": 31}, {"hold_s": True},
                {"who": 3}):
        with pytest.raises(ValueError):
            parse_request(bad, ids)


# ---- the walk against the real state and cycle -------------------------------------------

CONFIG = """
[site]
id = "t"
timezone = "Europe/Amsterdam"
[grid]
limit_a = 80
[signage]
min_free_ev_bays = 0
min_dwell_s = 30
ack_timeout_s = 5
language = "{language}"
[[chargers]]
id = "CP01"
max_current_a = 32
connectors = 2
[[chargers]]
id = "CP02"
max_current_a = 32
connectors = 1
[[bays]]
id = "B01"
charger = "CP01"
connector = 1
sensor = false
[[bays]]
id = "B02"
charger = "CP01"
connector = 2
sensor = false
[[bays]]
id = "B03"
charger = "CP02"
connector = 1
sensor = false
"""


class Square:
    """SquareState and Cycle on a fake clock; fixtures that ack every command on the next tick."""

    def __init__(self, cfg, store: Store) -> None:
        self.now = T0
        self.state = state = SquareState(cfg, store, clock=lambda: self.now)
        self.mono = 0.0
        self.connected = True
        self.published: list[tuple[str, dict]] = []
        self.unacked: list[tuple[str, dict]] = []
        self.fixture: dict[str, str] = {}  # bay -> "no_ack" | "wrong_color"
        self.cycle = Cycle(state, self)
        self.on_tick = None

    # LightPublisher
    def publish_light(self, bay_id: str, command: dict) -> None:
        self.published.append((bay_id, dict(command)))
        self.unacked.append((bay_id, dict(command)))

    def publish_state(self, snapshot: dict) -> None:
        pass

    def published_at(self, bay_id: str) -> datetime | None:
        return self.now

    async def sleep(self, s: float) -> None:
        self.now += timedelta(seconds=s)
        self.mono += s
        acks, self.unacked = self.unacked, []
        for bay, c in acks:
            mode = self.fixture.get(bay)
            if mode != "no_ack":
                color = ("green" if c["color"] == "off" else "off") if mode == "wrong_color" else c["color"]
                self.state.record(LightAcked(bay_id=bay, seq=c["seq"], color=color, at=self.now))
        if self.state.wake.is_set():
            self.state.wake.clear()
            await self.cycle.run_once(self.now)
        if self.on_tick is not None:
            self.on_tick()
        await asyncio.sleep(0)

    def lights(self, bay: str) -> list[dict]:
        return [c for b, c in self.published if b == bay]


@pytest.fixture
async def store(tmp_path: Path):
    async with await Store.open(tmp_path / "state" / "laadplein.db", TagVault(bytes(range(32)))) as s:
        yield s


async def make_square(store: Store, language: str = "nl") -> tuple[Square, LightsTester]:
    cfg = load_config_text(CONFIG.format(language=language))
    square = Square(cfg, store)
    state = square.state
    state.record(BrokerConnected(at=T0))
    for charger, n in (("CP01", 1), ("CP01", 2), ("CP02", 1)):
        state.record(ChargerConnected(charger_id=charger, ocpp_version="ocpp1.6", at=T0))
        state.record(ConnectorStatusChanged(charger_id=charger, connector_id=n, status="Available", at=T0))
    state.record(ConnectorStatusChanged(charger_id="CP02", connector_id=1, status="Charging", at=T0))
    await square.sleep(0.1)  # the first cycle: every bay decided and acked
    await square.sleep(0.1)
    square.published.clear()
    return square, LightsTester(state, sleep=square.sleep, monotonic=lambda: square.mono)


async def test_every_fixture_walks_blue_green_off_and_back_in_parallel(store):
    square, tester = await make_square(store)
    result = await tester.run(["B01", "B02", "B03"], hold_s=0)
    assert result["ok"] and result["problem"] is None and result["started"] == "2026-11-28T13:00:00.200Z"
    assert [f["bay"] for f in result["fixtures"]] == ["B01", "B02", "B03"]
    for f in result["fixtures"]:
        assert f["ok"] and f["problem"] is None
        assert [(s["step"], s["ok"]) for s in f["steps"]] == [("blue", True), ("green", True), ("off", True), ("back", True)]
        assert all(0 <= s["ack_s"] <= 0.2 for s in f["steps"])
    assert result["fixtures"][0]["steps"][3]["color"] == "green" and result["fixtures"][2]["steps"][3]["color"] == "blue"
    # every bay got the same three test commands, with the configured language's texts, then its own light
    for bay, back in (("B01", ("green", "open")), ("B02", ("green", "open")), ("B03", ("blue", "charging"))):
        shown = [(c["color"], c["reason"], c["text"], c["pictogram"]) for c in square.lights(bay)]
        assert shown[:3] == [("blue", "override", "Alleen elektrisch laden", "charging"),
                             ("green", "override", "Parkeren toegestaan", "parking"),
                             ("off", "override", "", "none")]
        assert [s[:2] for s in shown[3:]] == [back]
        seqs = [c["seq"] for c in square.lights(bay)]
        assert seqs == sorted(set(seqs))
        assert (await store.light_commands())[bay]["seq"] == seqs[-1]  # persisted as always
    # in memory only, and gone afterwards; the min dwell did not hold the light back
    assert square.state.overrides == {} and await store.overrides() == {}
    assert result["took_s"] < 1.0
    await square.sleep(0.1)  # the cycle writes the queued events
    kinds = [e["kind"] for e in await store.events(since=None, limit=1000)]
    assert kinds.count("lights_test") == 2
    assert tester.progress() == {"running": False, **result}


async def test_a_hold_keeps_each_colour_on_for_people_to_see(store):
    _, tester = await make_square(store)
    result = await tester.run(["B01"], hold_s=2.0)
    assert result["ok"] and 6.0 <= result["took_s"] <= 6.5


async def test_english_texts_when_the_square_speaks_english(store):
    square, tester = await make_square(store, "en")
    assert (await tester.run(["B01"], hold_s=0))["ok"]
    assert [c["text"] for c in square.lights("B01")][:3] == ["Electric vehicles only", "Parking allowed", ""]


async def test_silent_and_wrong_fixtures_are_reported_and_every_bay_still_comes_back(store):
    square, tester = await make_square(store)
    square.fixture = {"B02": "no_ack", "B03": "wrong_color"}
    result = await tester.run(["B01", "B02", "B03"], hold_s=0)
    assert not result["ok"]
    b01, b02, b03 = result["fixtures"]
    assert b01["ok"] and not b02["ok"] and not b03["ok"]
    assert b02["problem"] == "no ack for blue within 5 s (last ack: seq 1, green); green, off and back failed too"
    assert [s["ok"] for s in b02["steps"]] == [False] * 4
    assert b02["steps"][3]["problem"] == "no ack for green (back) within 5 s (last ack: seq 1, green)"
    assert [s["problem"] for s in b03["steps"]] == [
        "acked off while blue was asked (seq 2)", "acked off while green was asked (seq 3)",
        "acked green while off was asked (seq 4)", "acked off while blue was asked (seq 5)"]
    assert 20.0 <= result["took_s"] <= 21.0  # four steps of the 5 s ack timeout, the bays in parallel
    assert square.lights("B02")[-1]["reason"] == "open" and square.lights("B03")[-1]["reason"] == "charging"
    assert square.state.overrides == {}
    await square.sleep(0.1)
    events = await store.events(since=None, limit=1000)
    last = [e for e in events if e["kind"] == "lights_test"][-1]
    assert "2 of 3 fixture(s) failed" in last["message"] and "B02 (no ack for blue" in last["message"]


async def test_a_technicians_override_is_kept_aside_and_comes_back(store):
    square, tester = await make_square(store)
    theirs = Override("blue", T0 + timedelta(hours=1), who="piet", why="works")
    await store.set_override("B01", "blue", theirs.until, "piet", "works", T0)
    square.state.overrides["B01"] = theirs
    await square.sleep(0.1)
    await square.sleep(0.1)
    result = await tester.run(["B01", "B02"], hold_s=0)
    assert result["ok"]
    assert square.state.overrides == {"B01": theirs}
    assert list(await store.overrides()) == ["B01"]
    back = result["fixtures"][0]["steps"][3]
    assert back["color"] == "blue" and square.lights("B01")[-1]["reason"] == "override"


async def test_a_technicians_off_override_comes_back_without_a_new_command(store):
    square, tester = await make_square(store)
    theirs = Override("off", T0 + timedelta(hours=1), who="piet")
    square.state.overrides["B01"] = theirs
    await square.sleep(0.1)
    await square.sleep(0.1)
    result = await tester.run(["B01"], hold_s=0)
    assert result["ok"] and result["fixtures"][0]["steps"][3]["color"] == "off"
    assert square.state.overrides["B01"] is theirs


async def test_an_override_set_or_ended_during_the_test_is_what_holds_afterwards(store):
    square, tester = await make_square(store)
    theirs = Override("green", T0 + timedelta(hours=1), who="piet")
    square.state.overrides["B02"] = Override("blue", T0 + timedelta(hours=1), who="kees")

    def technician() -> None:
        # during the green step: piet puts his own override on B01, kees ends his on B02
        ours = square.state.overrides.get("B01")
        if ours is not None and ours.color == "green" and ours.who == "lights-test":
            square.state.overrides["B01"] = theirs
            square.state.overrides.pop("B02")
            square.on_tick = None

    square.on_tick = technician
    result = await tester.run(["B01", "B02"], hold_s=0)
    assert square.state.overrides == {"B01": theirs}
    assert result["fixtures"][0]["steps"][3]["color"] == "green" and square.lights("B01")[-1]["reason"] == "override"
    assert square.lights("B02")[-1]["reason"] == "open"


async def test_one_test_at_a_time_with_its_progress_meanwhile(store):
    square, tester = await make_square(store)
    square.fixture = {"B02": "no_ack"}
    seen: list[dict] = []
    square.on_tick = lambda: seen.append(tester.progress())
    task = asyncio.create_task(tester.run(["B01", "B02", "B03"], hold_s=0))
    while not tester.running or not seen:
        await asyncio.sleep(0)
    with pytest.raises(LightsTestBusy) as busy:
        await tester.run(["B01"])
    assert busy.value.progress["running"]
    await asyncio.wait_for(task, timeout=10)
    first = next(p for p in seen if p["acked"] == 2)
    assert first["step"] == 1 and first["step_name"] == "blue" and first["bays"] == 3 and first["failed"] == 0
    assert first["done"] == 2 and first["total"] == 12
    assert describe_progress(first) == "step 1/4: blue, 2/3 acked"
    later = next(p for p in seen if p["step"] == 2 and p["acked"] == 2)
    assert later["done"] == 5 and describe_progress(later) == "step 2/4: green, 2/3 acked"
    assert [f["steps_done"] for f in later["fixtures"]] == [2, 1, 2]
    assert not later["fixtures"][1]["ok"]


async def test_a_stopped_test_leaves_no_test_override_behind(store):
    square, tester = await make_square(store)
    theirs = Override("green", T0 + timedelta(hours=1))
    square.state.overrides["B02"] = theirs
    square.fixture = {"B01": "no_ack"}
    task = asyncio.create_task(tester.run(["B01", "B02"], hold_s=0))
    while square.state.overrides.get("B01") is None:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert square.state.overrides == {"B02": theirs} and not tester.running


async def test_broker_down_is_reported_up_front_and_nothing_is_touched(store):
    square, tester = await make_square(store)
    square.state.broker_online = False
    result = await tester.run(["B01", "B02"])
    assert not result["ok"] and result["took_s"] == 0
    assert result["problem"] == "the MQTT broker is not connected: no light can be reached"
    assert all(f["problem"].startswith("not tested: the MQTT broker") and f["steps"] == [] for f in result["fixtures"])
    assert square.published == [] and square.state.overrides == {}
    assert summary(result).startswith("2 of 2 fixture(s) FAILED")


async def test_a_bay_not_decided_yet_is_not_tested(store):
    cfg = load_config_text(CONFIG.format(language="nl"))
    clock = {"now": T0}
    state = SquareState(cfg, store, clock=lambda: clock["now"])
    state.broker_online = True
    tester = LightsTester(state, sleep=lambda s: asyncio.sleep(0), monotonic=lambda: 0.0)
    result = await tester.run(["B01"])
    assert result["fixtures"] == [{"bay": "B01", "ok": False, "steps": [], "problem": NOT_DECIDED}]
    assert state.overrides == {}


async def test_the_cli_table_says_in_words_what_passed_and_what_failed(store):
    square, tester = await make_square(store)
    square.fixture = {"B02": "no_ack"}
    result = await tester.run(["B01", "B02"], hold_s=0)
    console = Console(record=True, width=200, color_system=None)
    console.print(result_table(result))
    text = console.export_text()
    b01 = next(line for line in text.splitlines() if "B01" in line)
    b02 = next(line for line in text.splitlines() if "B02" in line)
    assert "PASSED" in b01 and b01.count("ok") == 4 and "green: ok" in b01
    assert "FAILED" in b02 and "no ack for blue within 5 s" in b02
    assert summary(result) == "1 of 2 fixture(s) FAILED: B02"


async def test_a_narrow_screen_gets_the_problems_under_the_table(store, capsys, monkeypatch):
    square, tester = await make_square(store)
    square.fixture = {"B02": "wrong_color"}
    result = await tester.run(["B01", "B02"], hold_s=0)
    monkeypatch.setenv("COLUMNS", "80")
    print_result(result, "Europe/Amsterdam")
    out = capsys.readouterr().out
    assert "lights test started 2026-11-28 14:00:00 (Europe/Amsterdam)" in out
    assert "problem" not in out.splitlines()[2]
    assert "B02 FAILED: acked off while blue was asked (seq 2); green, off and back failed too" in " ".join(out.split())
    assert out.rstrip().endswith("1 of 2 fixture(s) FAILED: B02")
    assert max(len(line) for line in out.splitlines()) <= 80


def test_bays_not_tested_say_so_in_words():
    answer = {"ok": False, "started": "2026-11-28T13:00:00.000Z", "took_s": 0, "problem": "broker down",
              "fixtures": [{"bay": "B01", "ok": False, "steps": [], "problem": "not tested: broker down"}]}
    console = Console(record=True, width=200, color_system=None)
    console.print(result_table(answer))
    assert "NOT TESTED" in console.export_text() and summary(answer) == "1 of 1 fixture(s) FAILED: B01"

