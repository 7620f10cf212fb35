"""The SunSpec battery driver against the simulated battery over Modbus TCP: readings, faults, recovery."""

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from battery.model import BatteryModel
from battery.trust import BatteryRatings
from drivers.batteries.sunspec import SunSpecBattery
from drivers.contract.devices import BatteryStatus
from drivers.sim.battery import SimBattery
from tests.integration.harness import Recorder

pytestmark = pytest.mark.integration

MAX_CHARGE_W = 10_000.0
MAX_DISCHARGE_W = 20_000.0
RATINGS = BatteryRatings(max_charge_w=MAX_CHARGE_W, max_discharge_w=MAX_DISCHARGE_W)
FAST = {"timeout_s": 0.5, "poll_s": 0.2, "retry_s": 0.5}


@asynccontextmanager
async def running(coro_fn, name: str) -> AsyncIterator[asyncio.Task]:
    task = asyncio.create_task(coro_fn(), name=name)
    try:
        yield task
    finally:
        task.cancel()
        async with asyncio.timeout(5):
            await asyncio.gather(task, return_exceptions=True)
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()


@pytest.fixture
async def sim() -> AsyncIterator[SimBattery]:
    model = BatteryModel(
        capacity_wh=50_000.0, max_charge_w=MAX_CHARGE_W, max_discharge_w=MAX_DISCHARGE_W, soc_pct=62.5
    )
    battery = SimBattery(port=0, unit_id=1, model=model, serial="SIM-7", step_s=0.1)
    ready = asyncio.Event()
    async with running(lambda: battery.run(ready), "sim-battery"):
        async with asyncio.timeout(5):
            await ready.wait()
        yield battery


@asynccontextmanager
async def driver(port: int, **kwargs) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    battery = SunSpecBattery("127.0.0.1", port, 1, RATINGS, on_reading=recorder, **{**FAST, **kwargs})
    async with running(battery.run, "battery-sunspec"):
        yield recorder


def trusted(s: BatteryStatus) -> bool:
    return s.online and s.trusted


async def test_reads_soc_and_power_with_the_right_sign(sim, caplog):
    caplog.set_level(logging.INFO, logger="laadplein.battery")
    async with driver(sim.port) as rec:
        status = await rec.wait_for(trusted, 3)
        assert status.soc_pct == pytest.approx(sim.model.soc_pct, abs=0.05)
        assert status.power_w == 0 and status.state == "STANDBY"
        assert f"battery: laadplein SimBattery SN SIM-7 at 127.0.0.1:{sim.port}, models 1, 802, 124" in caplog.text

        sim.model.command(8_000.0)
        status = await rec.wait_for(lambda s: s.power_w is not None and s.power_w > 0, 3)
        assert status.power_w == pytest.approx(8_000.0, abs=1.0) and status.trusted
        assert status.state == "CONNECTED"

        sim.model.command(-5_000.0)
        status = await rec.wait_for(lambda s: s.power_w is not None and s.power_w < 0, 3)
        assert status.power_w == pytest.approx(-5_000.0, abs=1.0) and status.trusted
        assert status.soc_pct == pytest.approx(sim.model.soc_pct, abs=0.1)


async def test_first_trusted_after_three_readings(sim):
    async with driver(sim.port) as rec:
        await rec.wait_for(trusted, 3)
    online = [s for s in rec.seen if s.online]
    assert [s.trusted for s in online[:3]] == [False, False, True]
    assert online[1].reason == "2 of 3 plausible readings since: no reading yet"


async def test_silent_battery_is_offline_within_3_s_with_default_timings(sim, caplog):
    caplog.set_level(logging.INFO, logger="laadplein.battery")
    async with driver(sim.port, timeout_s=1.0, poll_s=1.0, retry_s=2.0) as rec:
        await rec.wait_for(lambda s: s.online, 3)
        loop = asyncio.get_running_loop()
        sim.set_fault("silent")
        silent_at = loop.time()
        status = await rec.wait_for(lambda s: not s.online, 3.5)
        assert loop.time() - silent_at <= 3.0
    assert status.reason == f"no answer from 127.0.0.1:{sim.port} unit 1 within 1.0 s"
    assert not status.trusted and status.soc_pct is None and status.power_w is None
    assert "offline: no answer from" in caplog.text


async def test_silent_battery_is_retried_logged_once_and_trusted_again_after_3_readings(sim, caplog):
    caplog.set_level(logging.INFO, logger="laadplein.battery")
    async with driver(sim.port, timeout_s=0.3, poll_s=0.2, retry_s=0.2) as rec:
        await rec.wait_for(trusted, 3)
        sim.set_fault("silent")
        await rec.wait_for(lambda s: not s.online, 2)
        await asyncio.sleep(1.0)  # a few retries, all failing
        assert len([s for s in rec.seen if not s.online]) >= 2
        assert caplog.text.count("offline: no answer") == 1

        sim.set_fault("none")
        back = len(rec.seen)
        await rec.wait_for(trusted, 3)
    online_again = [s for s in rec.seen[back:] if s.online]
    assert [s.trusted for s in online_again[:3]] == [False, False, True]
    assert "2 of 3 plausible readings since: no answer from" in online_again[1].reason
    assert online_again[2].since > online_again[1].since
    assert caplog.text.count("answers again") == 1


async def test_modbus_exception_means_offline(sim):
    async with driver(sim.port) as rec:
        await rec.wait_for(trusted, 3)
        sim.set_fault("exception")
        status = await rec.wait_for(lambda s: not s.online, 3)
        assert status.reason == f"127.0.0.1:{sim.port} unit 1 answered Modbus exception 4 (device failure)"
        sim.set_fault("none")
        await rec.wait_for(trusted, 4)


async def test_garbage_is_online_but_not_trusted_and_names_the_values(sim):
    async with driver(sim.port) as rec:
        await rec.wait_for(trusted, 3)
        sim.set_fault("garbage")
        status = await rec.wait_for(lambda s: not s.trusted, 3)
        assert status.online
        assert "SoC not implemented" in status.reason
        assert "discharge power 60000 W beyond the rating 20000 W x 1.1" in status.reason
        await asyncio.sleep(1.0)  # stays untrusted while the garbage lasts
        assert rec.seen[-1].online and not rec.seen[-1].trusted
        sim.set_fault("none")
        await rec.wait_for(trusted, 3)


async def test_refused_connection_is_offline_with_a_reason():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on leaving: nobody listens there
    async with driver(port) as rec:
        status = await rec.wait_for(lambda s: not s.online, 3)
    assert status.reason.startswith(f"cannot connect to 127.0.0.1:{port}")
    assert not status.trusted
