"""The Victron driver against the simulated GX over Modbus TCP: readings, ESS grid setpoint, faults, idle on exit."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from battery.model import BatteryModel
from battery.trust import BatteryRatings
from battery.vendors import decode_register
from drivers.batteries.victron import VictronBattery
from drivers.sim.victron import SimVictronGx
from tests.integration.harness import Recorder
from tests.integration.test_battery_sunspec import running, trusted

pytestmark = pytest.mark.integration

MAX_W = 10_000.0
RATINGS = BatteryRatings(max_charge_w=MAX_W, max_discharge_w=MAX_W)
LOAD_W = 12_000.0
OVERRIDE_TIMEOUT_S = 1.5
FAST = {"timeout_s": 0.5, "poll_s": 0.2, "retry_s": 0.5}
LOGGER = "laadplein.battery"


@pytest.fixture
async def gx() -> AsyncIterator[SimVictronGx]:
    model = BatteryModel(capacity_wh=50_000.0, max_charge_w=MAX_W, max_discharge_w=MAX_W, soc_pct=60.0)
    sim = SimVictronGx(port=0, model=model, load_w=LOAD_W, override_timeout_s=OVERRIDE_TIMEOUT_S, step_s=0.1)
    ready = asyncio.Event()
    async with running(lambda: sim.run(ready), "sim-victron"):
        async with asyncio.timeout(5):
            await ready.wait()
        yield sim


@asynccontextmanager
async def driver(port: int, **kwargs) -> AsyncIterator[tuple[VictronBattery, Recorder]]:
    recorder = Recorder()
    battery = VictronBattery("127.0.0.1", port, 100, RATINGS, on_reading=recorder, **{**FAST, **kwargs})
    async with running(battery.run, "battery-victron"):
        yield battery, recorder


def power_near(target_w: float):
    return lambda s: s.online and s.power_w is not None and abs(s.power_w - target_w) <= 3.0


def override_w(gx: SimVictronGx) -> int:
    return int(decode_register([gx.register(2716), gx.register(2717)], "int32"))


async def settled(gx: SimVictronGx, battery_w: float, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while gx.model.power_w != battery_w:
            await asyncio.sleep(0.05)


async def test_reads_the_battery_and_steers_it_through_the_grid_setpoint_with_signs_right(gx, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with driver(gx.port) as (battery, rec):
        status = await rec.wait_for(trusted, 3)
        assert status.soc_pct == 60 and status.power_w == 0 and status.state == "idle"
        assert gx.grid_setpoint_w() is None  # nothing written before a command

        battery.command(6_000.0)
        status = await rec.wait_for(power_near(6_000.0), 3)
        assert status.state == "discharging" and status.trusted
        assert gx.model.power_w == 6_000.0
        assert decode_register([gx.register(842)], "int16") == -6_000  # Victron: charging positive
        assert override_w(gx) == LOAD_W - 6_000.0  # the grid carries the rest

        battery.command(-3_000.0)
        status = await rec.wait_for(power_near(-3_000.0), 3)
        assert status.state == "charging"
        assert override_w(gx) == LOAD_W + 3_000.0

        gx.load_w = 7_000.0  # the chargers draw less: the grid setpoint follows, the battery stays
        async with asyncio.timeout(3):
            while override_w(gx) != 7_000.0 + 3_000.0:
                await asyncio.sleep(0.05)
        assert gx.model.power_w == -3_000.0
    where = f"127.0.0.1:{gx.port} unit 100"
    assert f"battery: Victron GX at {where}, ESS grid setpoint through register 2716" in caplog.text


async def test_the_override_is_renewed_every_poll_and_lapses_when_the_link_goes_silent(gx):
    async with driver(gx.port) as (battery, rec):
        await rec.wait_for(trusted, 3)
        battery.command(5_000.0)
        await rec.wait_for(power_near(5_000.0), 3)
        await asyncio.sleep(2 * OVERRIDE_TIMEOUT_S)  # only the renewals keep it in force
        # the GX's whole watts per phase make it dither by a watt or two
        assert gx.grid_setpoint_w() == pytest.approx(LOAD_W - 5_000.0, abs=3)
        assert gx.model.power_w == pytest.approx(5_000.0, abs=3)

        loop = asyncio.get_running_loop()
        gx.set_fault("silent")
        silent_at = loop.time()
        status = await rec.wait_for(lambda s: not s.online, 2)
        assert loop.time() - silent_at <= 2.0
        assert status.reason.startswith(f"no answer from 127.0.0.1:{gx.port} unit 100 within 0.5 s")
        await settled(gx, 0.0, OVERRIDE_TIMEOUT_S + 1.0)  # the GX dropped the override: passthru
        assert gx.grid_setpoint_w() is None

        gx.set_fault("none")
        back = len(rec.seen)
        await rec.wait_for(trusted, 3)
        assert [s.trusted for s in rec.seen[back:] if s.online][:3] == [False, False, True]
        await rec.wait_for(power_near(5_000.0), 3)  # still held: steered again once it answers


async def test_garbage_is_not_trusted_and_not_steered_on(gx, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with driver(gx.port) as (battery, rec):
        await rec.wait_for(trusted, 3)
        battery.command(4_000.0)
        await rec.wait_for(power_near(4_000.0), 3)
        gx.set_fault("garbage")
        status = await rec.wait_for(lambda s: not s.trusted, 3)
        assert status.online
        assert "SoC 250 % outside 0-100 %" in status.reason
        assert "charge power 30000 W beyond the rating 10000 W x 1.1" in status.reason
        # no grid setpoint is made from nonsense: the override lapses and the battery idles
        await settled(gx, 0.0, OVERRIDE_TIMEOUT_S + 1.5)
        assert "cannot write the setpoint: no plausible reading of the grid and battery power" in caplog.text
        gx.set_fault("none")
        await rec.wait_for(lambda s: trusted(s) and power_near(4_000.0)(s), 4)


async def test_a_setpoint_for_a_battery_at_0_w_is_written_on_cancellation(gx, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with driver(gx.port) as (battery, rec):
        await rec.wait_for(trusted, 3)
        battery.command(-6_000.0)
        await rec.wait_for(power_near(-6_000.0), 3)
    assert override_w(gx) == LOAD_W  # the grid carries the load, the battery nothing
    await settled(gx, 0.0, 1.0)
    assert f"battery at 127.0.0.1:{gx.port} unit 100 left idle: ESS grid setpoint +12000 W" in caplog.text


async def test_register_2700_is_a_stored_setting_that_does_not_lapse(gx, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with driver(gx.port, setpoint_register=2700) as (battery, rec):
        await rec.wait_for(trusted, 3)
        battery.command(3_000.0)
        await rec.wait_for(power_near(3_000.0), 3)
        assert decode_register([gx.register(2700)], "int16") == LOAD_W - 3_000.0
        assert gx.register(2716) == gx.register(2717) == 0  # the override is left alone
    assert "register 2700 is a stored setting" in caplog.text
    assert decode_register([gx.register(2700)], "int16") == LOAD_W  # idle on the way out
    await asyncio.sleep(OVERRIDE_TIMEOUT_S + 0.5)
    assert gx.grid_setpoint_w() == LOAD_W  # kept: a setting never lapses
