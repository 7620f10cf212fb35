"""Power sharing end to end: the real daemon, simulated chargers over OCPP, the simulated battery over
Modbus TCP and mosquitto. Four cars on a 3x32 A square with a 20 kW battery.

What counts for the fuse is what the chargers hold: each simulated charger's profile stack gives the
limit in force on every connector, read here every 50 ms.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import pytest

from battery.model import BatteryModel
from drivers.sim.battery import SimBattery
from tests.integration.harness import Daemon, chargers, square_toml, wait_until
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration

GRID_A = 32.0
BATTERY_W = 20_000.0
BATTERY_A = BATTERY_W / (3 * 230)  # 28.99 A per phase
REACTION_S = 1.0  # the simulated chargers'; the daemon is told 2 s
CONTROL = "period_s = 0.5\nreaction_s = 2\nlease_s = 60\nmeter_interval_s = 1\n"


def held_a(sims) -> float:
    """Sum over every connector of the limit its charger holds in force now (A per phase)."""
    now = datetime.now(timezone.utc)
    total = 0.0
    for sim in sims.values():
        for c in range(1, sim.connectors + 1):
            total += sim.profiles.limit_a(
                c, now, sim.transactions.get(c), sim._tx_start.get(c), sim.max_current_a, sim.phases
            ) if c in sim.transactions else 0.0
    return total


def applied_a(sims) -> list[float]:
    return [sim.applied_a(c) for sim in sims.values() for c in range(1, sim.connectors + 1) if c in sim.transactions]


@pytest.fixture
async def battery():
    model = BatteryModel(capacity_wh=40_000, max_charge_w=BATTERY_W, max_discharge_w=BATTERY_W, soc_pct=70.0,
                         soc_min_pct=10.0, soc_max_pct=95.0)
    sim = SimBattery(model=model)
    ready = asyncio.Event()
    task = asyncio.create_task(sim.run(ready), name="sim-battery")
    await asyncio.wait_for(ready.wait(), 10)
    yield sim
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_four_cars_share_grid_and_battery_and_fall_back_to_the_grid_when_the_battery_goes(tmp_path, mosquitto, battery):
    ocpp_port, api_port = free_port(), free_port()
    extra = (
        f'\n[battery]\ndriver = "sunspec"\nhost = "127.0.0.1"\nport = {battery.port}\nunit_id = 1\n'
        f"capacity_kwh = 40\nmax_charge_w = {BATTERY_W:g}\nmax_discharge_w = {BATTERY_W:g}\n"
        "poll_s = 0.5\ntimeout_s = 0.5\nrevert_timeout_s = 30\n"
    )
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, grid_limit_a=GRID_A,
                       control=CONTROL, extra=extra, signage={"min_free_ev_bays": 0})
    d = Daemon(tmp_path / "d", text, api_port=api_port, ocpp_port=ocpp_port)
    d.start()
    worst: dict[str, float] = {"with": 0.0, "without": 0.0}
    phase = {"name": "with"}
    try:
        async with chargers(d, "CP01", "CP02", reaction_s=REACTION_S) as sims:
            async def watch() -> None:
                while True:
                    worst[phase["name"]] = max(worst[phase["name"]], held_a(sims))
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch(), name="watch-limits")
            try:
                # The safe default arrives on connect: 32 A over 4 connectors = 8 A each.
                await wait_until(lambda: all(len(s.profiles.profiles(1)) >= 1 for s in sims.values()), 10, "safe defaults")
                for sim in sims.values():
                    for c in (1, 2):
                        await sim.plug_in(c, car_max_a=32.0)
                # All four charge, sharing grid and battery: 61 A per phase over 4 cars, about 15 A each.
                def shared() -> bool:
                    a = applied_a(sims)
                    return len(a) == 4 and 14.0 <= min(a) and max(a) <= 15.3

                await wait_until(shared, 40, "all four cars at about 15 A")
                shares = applied_a(sims)
                assert max(shares) - min(shares) <= 0.2, f"unfair shares {shares}"
                status, snap = await d.aapi("GET", "/api/status")
                assert all(b["limit_a"] and b["limit_a"] >= 14.0 for b in snap["bays"]), snap["bays"]
                assert snap["power"]["battery_setpoint_w"] > 0  # peak shaving
                status, chargers_seen = await d.aapi("GET", "/api/chargers")
                for c in chargers_seen:
                    assert c["profiles"] == "tx"
                    for k in c["connectors"]:
                        assert k["limit_a"] >= 14.0 and k["safe_default_a"] == 8.0 and k["lease_ends"].endswith("Z")
                # The battery link is cut: limits drop to the grid-only share.
                t_cut = time.monotonic()
                battery.set_fault("silent")
                phase["name"] = "without"
                await wait_until(lambda: sum(applied_a(sims)) <= GRID_A + 0.01, 15, "limits within the grid alone")
                dropped_s = time.monotonic() - t_cut
                # detection (<= 2 timeouts of 0.5 s + a poll) + one cycle (0.5 s) + the chargers' reaction (1 s)
                assert dropped_s <= 4.5, f"limits took {dropped_s:.1f} s to drop to the grid budget"
                held_after = held_a(sims)
                assert held_after <= GRID_A + 0.01, held_after
                # The battery comes back: limits rise again (3 good readings, then rises of >= 1 A every 10 s).
                phase["name"] = "with"
                battery.set_fault("none")
                await wait_until(lambda: sum(applied_a(sims)) >= GRID_A + 12, 40, "limits rising with the battery")
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            print(f"\nfour cars on 3x{GRID_A:g} A + {BATTERY_W / 1000:g} kW battery: shares {shares} A; limits at the "
                  f"grid share {dropped_s:.2f} s after the battery link was cut; most ever held "
                  f"{worst['with']:.1f} A of a {GRID_A + BATTERY_A:.1f} A budget")
            # Never more held than the budget: grid + battery while it served.
            assert worst["with"] <= GRID_A + BATTERY_A + 0.05, worst
            log = d.log()
            assert "limit" in log and "battery setpoint" in log
    finally:
        d.stop()


async def test_a_grid_meter_shows_the_rest_of_the_site_and_its_loss_keeps_a_margin(tmp_path, mosquitto):
    from drivers.sim.sdm630 import SimGridMeter

    other_a = 10.0
    sims_box: dict = {}

    def site_draw() -> tuple[float, float, float]:
        cars = sum(s.current_a(c) for s in sims_box.get("sims", {}).values() for c in s.transactions)
        return (cars + other_a,) * 3

    meter = SimGridMeter(site_draw)
    ready = asyncio.Event()
    meter_task = asyncio.create_task(meter.run(ready), name="sim-meter")
    await asyncio.wait_for(ready.wait(), 10)
    ocpp_port, api_port = free_port(), free_port()
    extra = f'\n[grid_meter]\ndriver = "sdm630"\nhost = "127.0.0.1"\nport = {meter.port}\npoll_s = 0.5\ntimeout_s = 0.5\nmargin_a = 2\n'
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, grid_limit_a=GRID_A,
                       control=CONTROL, extra=extra, signage={"min_free_ev_bays": 0}, chargers=1)
    d = Daemon(tmp_path / "d", text, api_port=api_port, ocpp_port=ocpp_port)
    d.start()
    try:
        async with chargers(d, "CP01", reaction_s=REACTION_S) as sims:
            sims_box["sims"] = sims
            await wait_until(lambda: len(sims["CP01"].profiles.profiles(1)) >= 1, 10, "safe defaults")
            for c in (1, 2):
                await sims["CP01"].plug_in(c, car_max_a=32.0)
            # 32 A less the 10 A the meter shows besides the cars: 11 A each.
            await wait_until(lambda: len(applied_a(sims)) == 2 and all(10.7 <= a <= 11.0 for a in applied_a(sims)), 30,
                             "two cars at 11 A")
            status, snap = await d.aapi("GET", "/api/status")
            assert snap["power"]["grid_source"] == "meter" and snap["power"]["grid_a"][0] == pytest.approx(22.0, abs=0.3)
            # The meter goes: the last measured load is held and a 2 A margin kept free: 10 A each.
            meter_task.cancel()
            await asyncio.gather(meter_task, return_exceptions=True)
            await wait_until(lambda: all(9.7 <= a <= 10.0 for a in applied_a(sims)), 15, "two cars at 10 A")
            status, alarms = await d.aapi("GET", "/api/alarms")
            assert any(a["key"] == "grid_meter" for a in alarms), alarms
    finally:
        meter_task.cancel()
        d.stop()
