"""Scenarios of a square's life, run on the simulator or on real equipment; each reports what it saw.

Every wait is bounded; a scenario takes well under a minute on the simulator.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from hil_tests.conftest import skip_unless
from hil_tests.rig import ROOT
from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration


def light_of(rig, bay: str) -> dict | None:
    return rig.watcher.last_light(bay)


async def settle(rig, report) -> None:
    """Wait until every bay has a light, and note what the square shows."""
    for bay in rig.bays():
        s = await rig.watcher.wait_for(lambda s, b=bay: s.topic == f"{ROOT}/bays/{b}/light", 20, f"a light on {bay}")
        report.saw(f"{bay} first light", "a command", f"{s.json()['color']} ({s.json()['reason']})")


async def test_ev_arrives_charges_and_leaves(rig, report):
    await settle(rig, report)
    bay = rig.bays()[0]
    await rig.park(bay)
    t0 = time.monotonic()
    await skip_unless(rig.plug_in(bay))
    blue = await rig.watcher.wait_light(bay, "blue", after=t0, timeout_s=5)
    report.saw(f"{bay} after plug-in", "blue within 5 s", f"blue ({blue.json()['reason']}) after {blue.at - t0:.2f} s")
    t1 = time.monotonic()
    await skip_unless(rig.stop_and_unplug(bay))
    done = await rig.watcher.wait_light(bay, "blue", reason="finished", after=t1, timeout_s=5)
    report.saw(f"{bay} session over", "blue (finished)", f"blue (finished) after {done.at - t1:.2f} s")
    green = await rig.watcher.wait_light(bay, "green", reason="finished", after=t1, timeout_s=15)
    report.saw(f"{bay} grace over, car still there", "green (finished) after grace_s = 3 s",
               f"green (finished) {green.at - t1:.2f} s after the stop")
    assert 2.5 <= green.at - t1 <= 12
    t2 = time.monotonic()
    await rig.leave(bay)
    after = await rig.watcher.wait_for(
        lambda s: s.at >= t2 and s.topic == f"{ROOT}/bays/{bay}/light", 10, f"{bay} after the car left")
    cmd = after.json()
    report.saw(f"{bay} car gone", "open (green) or held for EVs (blue reserved)", f"{cmd['color']} ({cmd['reason']})")
    assert cmd["reason"] in ("open", "reserved")
    status, sessions = await rig.api("GET", "/api/sessions")
    stopped = [s for s in sessions if s["bay"] == bay and s["stopped"]]
    report.saw("session in /api/sessions", "stopped, with energy", f"{len(stopped)} stopped, energy {stopped[-1]['energy_wh'] if stopped else '-'} Wh")
    assert stopped


async def test_non_ev_in_a_green_bay_never_turns_blue(rig, report):
    await settle(rig, report)
    bays = rig.bays()
    # Every other bay empty: the reserve has room, so the parked car's bay is never needed blue.
    for b in bays[1:]:
        await rig.leave(b)
    target = bays[0]
    await rig.park(target)
    t0 = time.monotonic()
    await asyncio.sleep(2)
    # The reserve is free to move, charger statuses come and go: the occupied green bay stays green.
    for b in bays[1:]:
        await rig.park(b)
        await asyncio.sleep(0.3)
        await rig.leave(b)
    await asyncio.sleep(3)
    colours = [c["color"] for s in rig.watcher.seen if s.at >= t0 and s.topic.endswith(f"/{target}/light")
               for c in [s.json()]]
    report.saw(f"{target} occupied by a non-EV", "never blue", f"commands since parking: {colours or 'none (stayed as it was)'}")
    assert "blue" not in colours
    last = light_of(rig, target)
    report.saw(f"{target} shows", "green", f"{last['color']} ({last['reason']})")
    assert last["color"] == "green"


async def test_reserve_kept_while_bays_are_free(rig, report):
    await settle(rig, report)
    bays = rig.bays()
    for b in bays:
        await rig.leave(b)

    def reserved() -> list[str]:
        return [b for b in bays if (light_of(rig, b) or {}).get("reason") == "reserved"]

    await wait_until(lambda: len(reserved()) == 1, 10, "one bay held for EVs")
    held = reserved()[0]
    report.saw("all bays empty", "1 bay held blue (min_free_ev_bays = 1)", f"{held} blue (reserved)")
    await asyncio.sleep(1.0)
    blue = reserved()
    report.saw("bays held", "exactly 1", ", ".join(blue))
    assert blue == [held]
    t1 = time.monotonic()
    await rig.park(held)
    other = await rig.watcher.wait_for(
        lambda s: s.at >= t1 and s.topic.endswith("/light") and s.json()["reason"] == "reserved", 10, "the reserve moving")
    moved = other.topic.split("/")[-2]
    report.saw(f"a car parks on {held}", "another empty bay takes the reserve", f"{moved} blue after {other.at - t1:.2f} s")
    assert moved != held
    await wait_until(lambda: (light_of(rig, held) or {}).get("color") == "green", 10, f"{held} green")
    report.saw(f"{held} with the car", "green", "green")


async def test_battery_link_lost_and_back(rig, report):
    await settle(rig, report)

    async def battery() -> dict | None:
        return (await rig.api("GET", "/api/status"))[1]["battery"]

    await wait_until(lambda: _online(battery), 15, "the battery online")
    report.saw("battery before", "online", json.dumps(await battery()))
    t0 = time.monotonic()
    await skip_unless(rig.cut_battery())
    await wait_until(lambda: _offline(battery), 10, "the battery offline")
    report.saw("link cut", "offline within 3 s + a cycle", f"offline after {time.monotonic() - t0:.1f} s")
    alarms = (await rig.api("GET", "/api/alarms"))[1]
    battery_alarms = [a for a in alarms if a["key"].startswith("battery")]
    report.saw("alarm", "battery alarm with what was done", battery_alarms[0]["message"] if battery_alarms else "none")
    assert battery_alarms
    t1 = time.monotonic()
    await skip_unless(rig.restore_battery())
    await wait_until(lambda: _online(battery), 15, "the battery online again")
    report.saw("link back", "online again (3 good readings)", f"online after {time.monotonic() - t1:.1f} s")
    await wait_until(_no_battery_alarm(rig), 5, "the battery alarm cleared")
    report.saw("alarm", "cleared", "cleared")


async def _online(battery) -> bool:
    b = await battery()
    return bool(b and b["online"])


async def _offline(battery) -> bool:
    b = await battery()
    return bool(b and not b["online"])


def _no_battery_alarm(rig):
    async def check() -> bool:
        return not any(a["key"].startswith("battery") for a in (await rig.api("GET", "/api/alarms"))[1])

    return check


async def test_charger_connection_lost_and_back(rig, report):
    await settle(rig, report)
    bay = rig.bays()[0]
    charger, _ = rig.bay_of(bay)
    await rig.park(bay)
    await skip_unless(rig.plug_in(bay))
    await rig.watcher.wait_light(bay, "blue", timeout_s=5)
    t0 = time.monotonic()
    await skip_unless(rig.disconnect_charger(charger))
    green = await rig.watcher.wait_light(bay, "green", reason="fault", after=t0, timeout_s=15)
    report.saw(f"{charger} gone", "bay green (fault) after offline_after_s = 2 s", f"after {green.at - t0:.1f} s")
    key = f"charger_offline:{charger}"

    async def alarm_raised() -> bool:
        return any(a["key"] == key for a in (await rig.api("GET", "/api/alarms"))[1])

    await wait_until(alarm_raised, 5, "the charger alarm")  # raised in the same cycle as the light, just after it
    alarms = (await rig.api("GET", "/api/alarms"))[1]
    report.saw("alarm", f"charger {charger} offline", [a["message"] for a in alarms if a["key"] == key][0])
    t1 = time.monotonic()
    await skip_unless(rig.reconnect_charger(charger))
    back = await rig.watcher.wait_light(bay, "blue", after=t1, timeout_s=15)
    report.saw(f"{charger} back", "bay blue again (car still plugged in)", f"blue ({back.json()['reason']}) after {back.at - t1:.1f} s")
    await wait_until(_no_alarm(rig, key), 5, "the charger alarm cleared")
    report.saw("alarm", "cleared", "cleared")


def _no_alarm(rig, key: str):
    async def check() -> bool:
        return not any(a["key"] == key for a in (await rig.api("GET", "/api/alarms"))[1])

    return check


async def test_broker_restart_restores_lights(rig, report):
    await settle(rig, report)
    before = {b: light_of(rig, b) for b in rig.bays()}
    t0 = time.monotonic()
    await skip_unless(rig.restart_broker(down_s=2.0))
    report.saw("broker", "down 2 s, then back (no persistence)", f"back after {time.monotonic() - t0:.1f} s")
    t_back = time.monotonic()
    for b, cmd in before.items():
        s = await rig.watcher.wait_for(
            lambda s, b=b: s.at >= t_back and s.topic == f"{ROOT}/bays/{b}/light", 5, f"{b} republished")
        again = s.json()
        report.saw(f"{b} after broker return", f"seq {cmd['seq']} {cmd['color']} within 5 s",
                   f"seq {again['seq']} {again['color']} after {s.at - t_back:.2f} s")
        assert again["seq"] >= cmd["seq"] and s.at - t_back <= 5
    online = await rig.watcher.wait_for(
        lambda s: s.at >= t_back and s.topic == f"{ROOT}/gateway/status" and s.payload == b"online", 5, "online")
    report.saw("gateway status", "online", online.payload.decode())


async def test_daemon_killed_and_restarted(rig, report):
    await settle(rig, report)
    bay = rig.bays()[1]
    await rig.park(bay)
    tx = None
    try:
        tx = await rig.plug_in(bay)
    except Exception as exc:  # an Unsupported plug-in still lets the rest of the scenario run
        report.saw("plug-in", "a session", f"skipped: {exc}")
    before = light_of(rig, bay)
    t0 = time.monotonic()
    await rig.kill_daemon()
    will = await rig.watcher.wait_for(
        lambda s: s.at >= t0 and s.topic == f"{ROOT}/gateway/status" and s.payload == b"offline", 10, "the Last Will")
    report.saw("SIGKILL", "Last Will offline", f"offline after {will.at - t0:.2f} s")
    t1 = time.monotonic()
    await rig.start_daemon()
    await rig.watcher.wait_for(
        lambda s: s.at >= t1 and s.topic == f"{ROOT}/gateway/status" and s.payload == b"online", 10, "online")
    again = await rig.watcher.wait_for(lambda s: s.at >= t1 and s.topic == f"{ROOT}/bays/{bay}/light", 15, "the light")
    report.saw(f"{bay} after restart", f"{before['color']} seq >= {before['seq']}",
               f"{again.json()['color']} seq {again.json()['seq']} after {again.at - t1:.1f} s")
    assert again.json()["seq"] >= before["seq"]
    if tx:
        sessions = (await rig.api("GET", "/api/sessions"))[1]
        found = [s for s in sessions if s["id"] == tx]
        report.saw("session", f"transaction {tx} in /api/sessions", "found" if found else "MISSING", bool(found))
        assert found
