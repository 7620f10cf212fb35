"""Measured currents are claims, not facts (control.md rule 1), end to end: the real daemon, a simulated
grid meter over Modbus TCP and simulated chargers over OCPP, one of which reports +9999 A, then -9999 A,
then a believable 18 A, for a car that draws nothing.

What counts for the fuse is what the chargers hold: each simulated charger's profile stack gives the
limit in force on every connector (`held_a`), read here every 50 ms, plus the site's other load.
"""

from __future__ import annotations

import asyncio

import pytest

from drivers.sim.sdm630 import SimGridMeter
from tests.integration.harness import Daemon, chargers, square_toml, wait_until
from tests.integration.ports import free_port
from tests.integration.test_power_sharing import applied_a, held_a

pytestmark = pytest.mark.integration

GRID_A = 50.0
OTHER_A = 20.0  # the rest of the site, per phase, as the meter sees it
CONTROL = "period_s = 0.5\nreaction_s = 2\nlease_s = 60\nmeter_interval_s = 1\n"
ATTACK_S = 12.0  # longer than the 10 s between two rises of one connector
BELIEVABLE_A = 18.0  # A per phase: above the hostile connector's limit, below the meter's reading
DISOBEY_S = 36.0  # longer than the 30 s a connector's reading must stay above its limit to be alarmed


async def test_a_charger_reporting_absurd_currents_moves_no_other_cars_limit_past_the_fuse(tmp_path, mosquitto):
    box: dict = {}

    def site_draw() -> tuple[float, float, float]:
        # The hostile charger's car draws nothing, whatever its charger says.
        cars = sum(box["sims"]["CP01"].current_a(c) for c in (1, 2)) if "sims" in box else 0.0
        return (OTHER_A + cars,) * 3

    meter = SimGridMeter(site_draw)
    ready = asyncio.Event()
    meter_task = asyncio.create_task(meter.run(ready), name="sim-meter")
    await asyncio.wait_for(ready.wait(), 10)
    ocpp_port, api_port = free_port(), free_port()
    extra = f'\n[grid_meter]\ndriver = "sdm630"\nhost = "127.0.0.1"\nport = {meter.port}\npoll_s = 0.5\ntimeout_s = 0.5\nmargin_a = 2\n'
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, grid_limit_a=GRID_A,
                       control=CONTROL, extra=extra, signage={"min_free_ev_bays": 0})
    d = Daemon(tmp_path / "d", text, api_port=api_port, ocpp_port=ocpp_port)
    d.start()
    worst = {"+9999": 0.0, "-9999": 0.0, "believable": 0.0}
    phase: dict = {"name": None}
    try:
        async with chargers(d, "CP01", "CP02", reaction_s=1.0) as sims:
            box["sims"] = sims
            hostile = sims["CP02"]
            honest_reading = hostile._reading
            fake: dict = {"a": None}
            # The hostile charger's meter says what the test wants on connector 1.
            hostile._reading = lambda c: (0.0, (fake["a"],) * 3) if c == 1 and fake["a"] is not None else honest_reading(c)

            async def watch() -> None:
                while True:
                    if phase["name"] is not None:
                        worst[phase["name"]] = max(worst[phase["name"]], held_a(sims) + OTHER_A)
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch(), name="watch-limits")
            try:
                await wait_until(lambda: all(len(s.profiles.profiles(1)) >= 1 for s in sims.values()), 10, "safe defaults")
                await sims["CP01"].plug_in(1, car_max_a=32.0)
                await sims["CP01"].plug_in(2, car_max_a=32.0)
                await hostile.plug_in(1, car_max_a=0.0)  # a car that takes nothing, honestly reported at first
                # The safe defaults (12.5 A each) overshoot for a moment on plug-in; then within the fuse.
                await wait_until(lambda: len(applied_a(sims)) == 3 and held_a(sims) + OTHER_A <= GRID_A + 0.05, 40,
                                 "three cars within the fuse")
                before = [sims["CP01"].applied_a(c) for c in (1, 2)]

                fake["a"], phase["name"] = 9999.0, "+9999"
                await asyncio.sleep(ATTACK_S)
                _, snap = await d.aapi("GET", "/api/status")
                bay = next(b for b in snap["bays"] if (b["charger"], b["connector"]) == ("CP02", 1))
                assert bay["current_a"] is not None and bay["current_a"] <= 32 * 1.1, bay  # at its limit, not 9999
                assert snap["power"]["grid_source"] == "meter", snap["power"]
                _, alarms = await d.aapi("GET", "/api/alarms")
                assert any(a["key"] == "implausible_current:CP02/1" for a in alarms), alarms

                fake["a"], phase["name"] = -9999.0, "-9999"
                await asyncio.sleep(ATTACK_S)
                after = [sims["CP01"].applied_a(c) for c in (1, 2)]
                assert min(after) >= 6.0, f"the honest cars were stopped: {after} (before the attack {before})"

                # A believable lie: 18 A, within what the charger can give and below the meter's reading
                # (so the meter stays trusted), for a car that draws nothing. It comes off the meter's
                # reading like a true current; the connector then counts at it.
                fake["a"], phase["name"] = BELIEVABLE_A, "believable"
                await asyncio.sleep(DISOBEY_S)
                _, snap = await d.aapi("GET", "/api/status")
                assert snap["power"]["grid_source"] == "meter", snap["power"]
                _, alarms = await d.aapi("GET", "/api/alarms")
                assert any(a["key"] == "current_over_limit:CP02/1" for a in alarms), alarms
                fake["a"] = None
                phase["name"] = None

                # The honest car on CP01/2 finishes; its cable stays in: no current is shown for it.
                await sims["CP01"].stop(2)

                async def finishing_shows_nothing() -> bool:
                    _, snap = await d.aapi("GET", "/api/status")
                    b = next(b for b in snap["bays"] if (b["charger"], b["connector"]) == ("CP01", 2))
                    return b["status"] == "Finishing" and b["current_a"] is None

                await wait_until(finishing_shows_nothing, 10, "a Finishing connector without a current")
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            print(f"\nfuse {GRID_A:g} A, other load {OTHER_A:g} A: most ever held with a charger reporting +9999 A "
                  f"{worst['+9999']:.1f} A, with -9999 A {worst['-9999']:.1f} A, with a believable {BELIEVABLE_A:g} A"
                  f" {worst['believable']:.1f} A; honest cars {before} -> {after} A")
            for name, held in worst.items():
                assert held <= GRID_A + 0.05, f"{name}: {held:.1f} A held with the other load, fuse {GRID_A:g} A"
            assert "reported current 9999" in d.log() and "CP02/1" in d.log()
    finally:
        meter_task.cancel()
        await asyncio.gather(meter_task, return_exceptions=True)
        d.stop()
