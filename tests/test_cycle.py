"""The cycle with a fake clock and a fake light publisher: events in, light commands and alarms out."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from config.loader import load_config_text
from controller.shell.cycle import Cycle
from controller.shell.state import SquareState
from controller.store.database import Store
from controller.store.secrets import TagVault
from drivers.contract import events as ev

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=timezone.utc)

SQUARE = """
[site]
id = "t"
[grid]
limit_a = 80
[signage]
min_free_ev_bays = 1
grace_s = 60
min_dwell_s = 10
startup_wait_s = 30
offline_after_s = 30
[[chargers]]
id = "CP01"
max_current_a = 32
connectors = 2
[[bays]]
id = "B01"
charger = "CP01"
connector = 1
sensor = true
[[bays]]
id = "B02"
charger = "CP01"
connector = 2
sensor = false
"""


class FakeLink:
    def __init__(self) -> None:
        self.connected = True
        self.sent: list[tuple[str, dict]] = []
        self.states: list[dict] = []
        self.sent_at: dict[str, datetime] = {}
        self.now = T0

    def publish_light(self, bay_id: str, command: dict) -> None:
        self.sent.append((bay_id, command))
        self.sent_at[bay_id] = self.now

    def publish_state(self, snapshot: dict) -> None:
        self.states.append(snapshot)

    def published_at(self, bay_id: str):
        return self.sent_at.get(bay_id)

    def last(self, bay: str) -> dict | None:
        mine = [c for b, c in self.sent if b == bay]
        return mine[-1] if mine else None


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def square(tmp_path):
    cfg = load_config_text(SQUARE, "square.toml", base_dir=tmp_path)
    store = await Store.open(tmp_path / "db.sqlite", TagVault(b"k" * 32))
    clock = Clock()
    state = SquareState(cfg, store, clock=clock)
    await state.restore()
    link = FakeLink()
    cycle = Cycle(state, link)

    async def step(seconds: float = 0.0, *events):
        clock.now += timedelta(seconds=seconds)
        link.now = clock.now
        for e in events:
            state.record(e(clock.now) if callable(e) else e)
        await cycle.run_once(clock.now)

    yield state, cycle, link, clock, step
    await store.close()


def status(n: int, word: str, at: datetime | None = None):
    """A StatusNotification received at `at`, or at the step's time when none is given."""
    if at is None:
        return lambda now: ev.ConnectorStatusChanged("CP01", n, word, now)
    return ev.ConnectorStatusChanged("CP01", n, word, at)


async def test_nothing_published_until_a_bay_is_known_then_green(square):
    state, cycle, link, clock, step = square
    await step(0)
    assert link.sent == []
    await step(1, ev.ChargerConnected("CP01", "ocpp1.6", T0), status(1, "Available", T0), status(2, "Available", T0))
    assert link.last("B01")["color"] == "green" and link.last("B02")["color"] == "green"
    assert link.last("B01")["seq"] == 1


async def test_table_of_cycles_plug_charge_finish_grace(square):
    state, cycle, link, clock, step = square
    await step(0, ev.ChargerConnected("CP01", "ocpp1.6", T0), status(1, "Available", T0), status(2, "Available", T0))
    table = [
        # (seconds later, events, bay, expected colour, expected reason)
        (1, [status(2, "Preparing")], "B02", "blue", "plugged"),
        (1, [status(2, "Charging")], "B02", "blue", "charging"),
        (600, [status(2, "SuspendedEV")], "B02", "blue", "finished"),
        (59, [], "B02", "blue", "finished"),
        (2, [], "B02", "green", "finished"),
        (5, [status(2, "Available")], "B02", "green", "open"),
    ]
    for seconds, events, bay, color, reason in table:
        await step(seconds, *events)
        cmd = link.last(bay)
        assert (cmd["color"], cmd["reason"]) == (color, reason), (seconds, events)
    seqs = [c["seq"] for b, c in link.sent if b == "B02"]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_bays_current_goes_when_its_car_leaves(square):
    state, cycle, link, clock, step = square
    await step(0, ev.ChargerConnected("CP01", "ocpp1.6", T0), status(1, "Charging", T0))
    await step(1, lambda now: ev.MeterSample("CP01", 1, now, 7, (12.3, 12.1, 12.2)))
    assert cycle.snapshot(clock.now)["bays"][0]["current_a"] == 12.3
    await step(1, status(1, "Finishing"))
    snap = cycle.snapshot(clock.now)
    assert snap["bays"][0]["current_a"] is None  # the session is over: the sample is the old one's
    assert snap["grid"]["current_a"] == [0.0, 0.0, 0.0]  # and it no longer counts on the grid either
    await step(1, status(1, "Available"))
    await step(1, lambda now: ev.MeterSample("CP01", 1, now, None, (0.2, 0.0, 0.0)))
    assert cycle.snapshot(clock.now)["bays"][0]["current_a"] is None  # no car: a reading is no car's current
    await step(1, status(1, "Preparing"))
    await step(1, lambda now: ev.MeterSample("CP01", 1, now, None, (0.4, 0.0, 0.0)))
    assert cycle.snapshot(clock.now)["bays"][0]["current_a"] == 0.4  # a new car's reading, taken since, is shown
    await step(1, status(1, "Preparing"))  # the same status again (a charger asked for it) changes nothing
    assert cycle.snapshot(clock.now)["bays"][0]["current_a"] == 0.4


async def test_an_implausible_current_is_shown_at_the_limit_in_force_and_alarmed_once_per_connector(square):
    state, cycle, link, clock, step = square
    await step(0, ev.ChargerConnected("CP01", "ocpp1.6", T0), status(1, "Charging", T0), status(2, "Charging", T0))
    await step(1, lambda now: ev.MeterSample("CP01", 1, now, 7, (9999.0, 9999.0, 9999.0)),
               lambda now: ev.MeterSample("CP01", 2, now, 8, (-9999.0, 10.0, 10.0)))
    snap = cycle.snapshot(clock.now)
    # Without power sharing the limit in force is the charger's maximum (32 A): never 9999, never below 0.
    assert [b["current_a"] for b in snap["bays"]] == [32.0, 32.0]
    assert snap["grid"]["current_a"] == [64.0, 64.0, 64.0]
    alarms = {a["key"]: a for a in await state.store.active_alarms()}
    assert set(alarms) == {"implausible_current:CP01/1", "implausible_current:CP01/2"}
    one = alarms["implausible_current:CP01/1"]
    assert "charger CP01 connector 1 (bay B01)" in one["message"] and "9999 A" in one["message"]
    assert one["charger"] == "CP01" and one["bay"] == "B01"
    assert "-9999 A" in alarms["implausible_current:CP01/2"]["message"]
    for _ in range(5):  # a charger that keeps sending them raises it once
        await step(60, lambda now: ev.MeterSample("CP01", 1, now, 7, (9999.0, 9999.0, 9999.0)),
                   lambda now: ev.MeterSample("CP01", 1, now, 7, (12.0, 12.0, 12.0)))
    assert cycle.snapshot(clock.now)["bays"][0]["current_a"] == 12.0  # a plausible reading counts again
    assert len([a for a in await state.store.active_alarms() if a["key"] == "implausible_current:CP01/1"]) == 1
    await step(601)
    assert [a for a in await state.store.active_alarms() if a["key"].startswith("implausible")] == []


async def test_reserve_needs_an_empty_sensor_and_commands_are_not_repeated(square):
    state, cycle, link, clock, step = square
    await step(0, ev.ChargerConnected("CP01", "ocpp1.6", T0), status(1, "Available", T0), status(2, "Available", T0))
    await step(20, ev.OccupancyChanged("B01", False, clock.now))
    assert (link.last("B01")["color"], link.last("B01")["reason"]) == ("blue", "reserved")
    n = len(link.sent)
    await step(1)
    await step(1)
    assert len(link.sent) == n, "an unchanged light is not sent again"
    await step(1, ev.OccupancyChanged("B01", None, clock.now))  # sensor fault: counts as occupied
    await step(15)
    assert link.last("B01")["color"] == "green"


async def test_seq_and_commands_survive_a_restart(square, tmp_path):
    state, cycle, link, clock, step = square
    await step(0, ev.ChargerConnected("CP01", "ocpp1.6", T0), status(1, "Available", T0), status(2, "Preparing", T0))
    before = link.last("B02")
    assert before["color"] == "blue"
    # A new daemon on the same database: same command republished with the same seq once known.
    state2 = SquareState(state.cfg, state.store, clock=clock)
    await state2.restore()
    link2 = FakeLink()
    cycle2 = Cycle(state2, link2)
    clock.now += timedelta(seconds=1)
    state2.record(ev.ChargerConnected("CP01", "ocpp1.6", clock.now))
    state2.record(status(1, "Available", clock.now))
    state2.record(status(2, "Preparing", clock.now))
    await cycle2.run_once(clock.now)
    assert link2.last("B02") == before
    state2.record(status(2, "Charging", clock.now))
    await cycle2.run_once(clock.now)
    assert link2.last("B02")["seq"] == before["seq"] + 1


async def test_charger_offline_turns_green_with_alarm_after_offline_after_s(square):
    state, cycle, link, clock, step = square
    await step(0, ev.ChargerConnected("CP01", "ocpp1.6", T0), status(1, "Available", T0), status(2, "Charging", T0))
    assert link.last("B02")["color"] == "blue"
    await step(1, ev.ChargerDisconnected("CP01", clock.now + timedelta(seconds=1), "closed"))
    await step(10)
    assert link.last("B02")["color"] == "blue", "a quick reconnect changes no light"
    await step(25)
    assert (link.last("B02")["color"], link.last("B02")["reason"]) == ("green", "fault")
    alarms = await state.store.active_alarms()
    assert any(a["key"] == "charger_offline:CP01" for a in alarms)
    await step(1, ev.ChargerConnected("CP01", "ocpp1.6", clock.now))
    assert not any(a["key"] == "charger_offline:CP01" for a in await state.store.active_alarms())


async def test_fixture_without_ack_raises_an_alarm_and_a_good_ack_clears_it(square):
    state, cycle, link, clock, step = square
    await step(0, ev.ChargerConnected("CP01", "ocpp1.6", T0), status(1, "Available", T0), status(2, "Available", T0))
    await step(6)
    keys = {a["key"] for a in await state.store.active_alarms()}
    assert {"fixture_silent:B01", "fixture_silent:B02"} <= keys
    cmd = link.last("B01")
    await step(1, ev.LightAcked("B01", cmd["seq"], "blue", clock.now))
    alarms = {a["key"]: a for a in await state.store.active_alarms()}
    assert "shows blue" in alarms["fixture_wrong:B01"]["message"] and "fixture_silent:B01" not in alarms
    await step(1, ev.LightAcked("B01", cmd["seq"], cmd["color"], clock.now))
    keys = {a["key"] for a in await state.store.active_alarms()}
    assert "fixture_wrong:B01" not in keys and "fixture_silent:B02" in keys


async def test_light_changes_are_explained_in_the_event_log(square):
    state, cycle, link, clock, step = square
    await step(0, ev.ChargerConnected("CP01", "ocpp1.6", T0), status(1, "Available", T0), status(2, "Preparing", T0))
    lights = await state.store.events(kind="light")
    assert len(lights) == 2
    for e in lights:
        assert e["data"]["why"] and e["data"]["inputs"] and e["data"]["command"]["seq"] == 1


def test_clock_check_release_date_and_jumps():
    from datetime import datetime, timedelta, timezone

    from controller.shell.clock_check import ClockCheck

    c = ClockCheck()
    t = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    assert c.observe(datetime(2020, 1, 1, tzinfo=timezone.utc), 0.0) is False and "release" in c.why
    assert c.observe(t, 1.0) is False  # a jump of years: wait until the clock has run steadily
    assert c.observe(t + timedelta(seconds=299), 300.0) is False
    assert c.observe(t + timedelta(seconds=301), 302.0) is True
    assert c.observe(t + timedelta(seconds=302), 303.0) is True
    assert c.observe(t + timedelta(seconds=302 + 120), 304.0) is False and "jumped by +119 s" in c.why


async def test_low_disk_space_is_alarmed_and_looked_at_once_a_minute(square, monkeypatch):
    from types import SimpleNamespace

    from controller.shell import alarms as alarms_module

    state, _cycle, _link, _clock, step = square
    free_mb, asked = [50], []

    def disk_usage(path):
        asked.append(path)
        return SimpleNamespace(total=10_000 * 2**20, used=(10_000 - free_mb[0]) * 2**20, free=free_mb[0] * 2**20)

    monkeypatch.setattr(alarms_module.shutil, "disk_usage", disk_usage)
    assert state.cfg.storage.min_free_mb == 200  # the default
    await step(0)
    alarm = {a["key"]: a for a in await state.store.active_alarms()}["disk_low"]
    assert "50 MB free" in alarm["message"] and "200 MB" in alarm["message"]
    assert asked == [state.store.path.parent]
    free_mb[0] = 5000
    for _ in range(5):
        await step(10)  # every cycle checks alarms; the filesystem is asked only once a minute
    assert len(asked) == 1 and "disk_low" in {a["key"] for a in await state.store.active_alarms()}
    await step(20)
    assert len(asked) == 2 and "disk_low" not in {a["key"] for a in await state.store.active_alarms()}


async def test_a_charger_over_its_caps_is_alarmed_once_and_cleared_after_a_quiet_spell(square):
    state, _cycle, _link, _clock, step = square
    await step(0, ev.ChargerConnected("CP01", "ocpp1.6", T0))
    for _ in range(3):
        await step(30, lambda now: ev.ChargerOverLimit("CP01", "more than 10 messages/s", now))
    alarms = [a for a in await state.store.active_alarms() if a["key"].startswith("charger_over_limit:")]
    assert [a["key"] for a in alarms] == ["charger_over_limit:CP01"]
    assert "charger CP01" in alarms[0]["message"] and "10 messages/s" in alarms[0]["message"]
    await step(599)
    assert "charger_over_limit:CP01" in {a["key"] for a in await state.store.active_alarms()}
    await step(2)
    assert "charger_over_limit:CP01" not in {a["key"] for a in await state.store.active_alarms()}
