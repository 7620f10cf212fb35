"""The SunSpec battery driver steering the simulated battery over Modbus TCP: setpoint, revert timeout, idle on exit."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from battery.model import BatteryModel
from battery.trust import BatteryRatings
from config.schema_devices import BatteryConfig
from drivers.batteries.factory import make_battery
from drivers.batteries.sunspec import SunSpecBattery
from drivers.sim.battery import SimBattery
from drivers.sim.in_process import SimulatedBattery
from tests.integration.harness import Recorder
from tests.integration.test_battery_sunspec import running, trusted

pytestmark = pytest.mark.integration

MAX_CHARGE_W = 10_000.0
MAX_DISCHARGE_W = 20_000.0
RATINGS = BatteryRatings(max_charge_w=MAX_CHARGE_W, max_discharge_w=MAX_DISCHARGE_W)
FAST = {"timeout_s": 0.5, "poll_s": 0.2, "retry_s": 0.5}
LOGGER = "laadplein.battery"


@pytest.fixture
async def sim() -> AsyncIterator[SimBattery]:
    model = BatteryModel(
        capacity_wh=50_000.0, max_charge_w=MAX_CHARGE_W, max_discharge_w=MAX_DISCHARGE_W, soc_pct=62.5
    )
    battery = SimBattery(port=0, unit_id=1, model=model, serial="SIM-W", step_s=0.1)
    ready = asyncio.Event()
    async with running(lambda: battery.run(ready), "sim-battery"):
        async with asyncio.timeout(5):
            await ready.wait()
        yield battery


@asynccontextmanager
async def driver(port: int, **kwargs) -> AsyncIterator[tuple[SunSpecBattery, Recorder]]:
    recorder = Recorder()
    battery = SunSpecBattery("127.0.0.1", port, 1, RATINGS, on_reading=recorder, **{**FAST, **kwargs})
    async with running(battery.run, "battery-sunspec"):
        yield battery, recorder


def power_near(target_w: float):
    return lambda s: s.online and s.power_w is not None and abs(s.power_w - target_w) <= 1.0


async def next_polls(rec: Recorder, n: int, timeout_s: float) -> None:
    """Wait for `n` more statuses (so the held setpoint has been written again after each)."""
    count = len(rec.seen)
    await rec.wait_for(lambda _s: len(rec.seen) >= count + n, timeout_s)


async def test_setpoint_makes_the_battery_discharge_and_charge(sim):
    async with driver(sim.port) as (battery, rec):
        await rec.wait_for(trusted, 3)
        battery.command(8_000.0)
        status = await rec.wait_for(power_near(8_000.0), 3)
        assert status.state == "CONNECTED" and status.trusted
        assert sim.model.power_w == pytest.approx(8_000.0)
        assert sim.point(124, "StorCtl_Mod") == 2  # discharge bit
        assert sim.point(124, "OutWRte") == pytest.approx(40.0)  # % of 20 kW
        assert sim.point(124, "InOutWRte_RvrtTms") == 60

        battery.command(-5_000.0)
        await rec.wait_for(power_near(-5_000.0), 3)
        assert sim.model.power_w == pytest.approx(-5_000.0)
        assert sim.point(124, "StorCtl_Mod") == 1  # charge bit
        assert sim.point(124, "InWRte") == pytest.approx(50.0)  # % of WChaMax, 10 kW

        battery.command(0.0)
        await rec.wait_for(power_near(0.0), 3)
        assert sim.point(124, "StorCtl_Mod") == 3  # both limits at 0 %: hold still
        assert sim.model.setpoint_w == 0


async def test_revert_timeout_is_refreshed_every_poll_and_the_battery_reverts_when_commands_stop(sim):
    async with driver(sim.port, revert_timeout_s=2) as (battery, rec):
        await rec.wait_for(trusted, 3)
        battery.command(6_000.0)
        await rec.wait_for(power_near(6_000.0), 3)
        assert sim.point(124, "InOutWRte_RvrtTms") == 2
        await asyncio.sleep(3.0)  # longer than the revert timeout: only the refresh keeps it going
        assert sim.model.setpoint_w == 6_000.0 and not sim.model.reverted

        sim.set_fault("silent")  # the commands stop reaching the battery
        async with asyncio.timeout(3.5):
            while not (sim.model.reverted and sim.model.power_w == 0):
                await asyncio.sleep(0.1)
        assert sim.model.setpoint_w == 0
        assert sim.point(124, "StorCtl_Mod") == 0
        sim.set_fault("none")
        await rec.wait_for(power_near(6_000.0), 4)  # still held: back as soon as it answers


async def test_idle_is_written_once_on_cancellation(sim, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with driver(sim.port) as (battery, rec):
        await rec.wait_for(trusted, 3)
        battery.command(-4_000.0)
        await rec.wait_for(power_near(-4_000.0), 3)
    # the revert timeout is 60 s: only the idle write can have stopped it this soon
    assert sim.point(124, "StorCtl_Mod") == 0
    assert sim.point(124, "InWRte") == 0 and sim.point(124, "OutWRte") == 0
    assert sim.model.setpoint_w == 0 and not sim.model.reverted
    assert f"battery at 127.0.0.1:{sim.port} unit 1 left idle: StorCtl_Mod 0" in caplog.text


async def test_nothing_is_written_before_a_command_nor_on_the_way_out(sim):
    async with driver(sim.port) as (_battery, rec):
        await rec.wait_for(trusted, 3)
        sim.model.command(3_000.0)  # the battery's own doing
        await rec.wait_for(power_near(3_000.0), 3)
    assert sim.point(124, "StorCtl_Mod") == 0 and sim.model.setpoint_w == 3_000.0


async def test_a_battery_that_does_not_follow_a_new_setpoint_is_stuck_and_not_trusted():
    # empty (SoC at its minimum): it cannot discharge, so SoC and power stay as they were
    model = BatteryModel(
        capacity_wh=50_000.0, max_charge_w=MAX_CHARGE_W, max_discharge_w=MAX_DISCHARGE_W, soc_pct=10.0,
        soc_min_pct=10.0,
    )
    battery_sim = SimBattery(port=0, unit_id=1, model=model, step_s=0.1)
    ready = asyncio.Event()
    async with running(lambda: battery_sim.run(ready), "sim-battery"):
        await ready.wait()
        async with driver(battery_sim.port, stuck_after_s=1.0) as (battery, rec):
            await rec.wait_for(trusted, 3)
            await asyncio.sleep(1.5)  # unchanged, but nobody asked for a change: still trusted
            assert rec.seen[-1].trusted
            battery.command(8_000.0)
            status = await rec.wait_for(lambda s: not s.trusted, 3)
    assert status.online and "unchanged for" in status.reason and "the setpoint asked for a change" in status.reason


async def test_a_refused_write_is_a_link_failure(sim):
    async with driver(sim.port) as (battery, rec):
        await rec.wait_for(trusted, 3)
        sim.model.max_charge_w = 5_000.0  # below the WChaMax it reports: it refuses every command now
        battery.command(2_000.0)
        status = await rec.wait_for(lambda s: not s.online, 3)
        assert status.reason.startswith(f"127.0.0.1:{sim.port} unit 1 answered Modbus exception 3 (illegal data value)")
        assert "to a write of" in status.reason and not status.trusted


async def test_setpoints_are_logged_only_for_a_big_step_or_a_new_direction(sim, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with driver(sim.port) as (battery, rec):
        await rec.wait_for(trusted, 3)
        for setpoint_w in (8_000.0, 8_300.0, 8_600.0, 9_500.0, -200.0):
            battery.command(setpoint_w)
            await rec.wait_for(power_near(setpoint_w), 3)
            await next_polls(rec, 2, 2)
    logged = [r.getMessage() for r in caplog.records if ": setpoint " in r.getMessage()]
    assert [m.split(": setpoint ")[1].split(" W")[0] for m in logged] == ["+8000", "+9500", "-200"]


async def test_the_simulated_preset_takes_a_setpoint_given_before_it_started():
    cfg = BatteryConfig.model_validate({
        "driver": "simulated", "capacity_kwh": 50.0, "max_charge_w": 10_000.0, "max_discharge_w": 20_000.0,
        "poll_s": 0.2, "timeout_s": 0.5,
    })
    rec = Recorder()
    battery = make_battery(cfg, rec, simulated=SimulatedBattery)
    battery.command(7_000.0)  # the controller may command before the battery task runs
    async with running(battery.run, "battery-simulated"):
        status = await rec.wait_for(lambda s: trusted(s) and power_near(7_000.0)(s), 5)
        assert battery.status == status and battery.where.startswith("simulated in process at 127.0.0.1:")
        battery.command(-2_000.0)
        await rec.wait_for(power_near(-2_000.0), 3)
