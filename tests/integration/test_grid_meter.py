"""The grid meter drivers over real links: SDM630 against the simulated meter, P1 against the simulated
port (TCP) and a pseudo-terminal (serial): readings, silence, garbage, refusal and cancellation."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from pymodbus.constants import ExcCodes

from config.schema_devices import GridMeterConfig
from drivers.contract.devices import GridReading
from drivers.meters.factory import make_grid_meter
from drivers.meters.p1 import P1Meter
from drivers.meters.sdm630 import Sdm630Meter, float32_from_regs
from drivers.sim.modbus import serve_registers
from drivers.sim.p1 import EQUIPMENT_ID, SimP1Meter, build_telegram
from drivers.sim.sdm630 import LAST_REGISTER, SimGridMeter, float_regs
from tests.integration.harness import Recorder

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
VOLTAGE_V = 230.0


class Draw:
    """Per-phase currents (A, negative = export) a simulator reads; tests set them."""

    def __init__(self, l1: float, l2: float, l3: float) -> None:
        self.current_a = (l1, l2, l3)

    def __call__(self) -> tuple[float, float, float]:
        return self.current_a


@asynccontextmanager
async def running(coro_fn, name: str) -> AsyncIterator[asyncio.Task]:
    """Run `coro_fn()` as a task for the block; on the way out it must end by cancellation, within 2 s."""
    task = asyncio.create_task(coro_fn(), name=name)
    try:
        yield task
    finally:
        task.cancel()
        async with asyncio.timeout(2):
            await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled(), f"{name} ended with {task.exception()!r} instead of by cancellation"


@asynccontextmanager
async def started(sim, name: str) -> AsyncIterator:
    """Serve `sim` for the block, once it listens."""
    ready = asyncio.Event()
    async with running(lambda: sim.run(ready), name):
        async with asyncio.timeout(5):
            await ready.wait()
        yield sim


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def online(r: GridReading) -> bool:
    return r.online


def offline(r: GridReading) -> bool:
    return not r.online


@pytest.fixture
def draw() -> Draw:
    return Draw(12.5, 7.0, 3.25)


@pytest.fixture
async def sdm(draw) -> AsyncIterator[SimGridMeter]:
    async with started(SimGridMeter(draw, HOST, 0, refresh_s=0.05), "sim-sdm630") as sim:
        yield sim


@pytest.fixture
async def p1(draw) -> AsyncIterator[SimP1Meter]:
    async with started(SimP1Meter(draw, HOST, 0, interval_s=0.25), "sim-p1") as sim:
        yield sim


def sdm630_config(port: int) -> GridMeterConfig:
    return GridMeterConfig(driver="sdm630", host=HOST, port=port, poll_s=0.2, timeout_s=0.5)


@asynccontextmanager
async def meter(cfg: GridMeterConfig) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    driver = make_grid_meter(cfg, recorder)
    async with running(driver.run, f"grid-meter-{cfg.driver}"):
        yield recorder


# ---- SDM630 over Modbus TCP -------------------------------------------------------------------


def test_float32_decoding_is_the_simulators_encoding_reversed():
    for value in (0.0, 12.5, -4600.0, 1e-3, 9999.75):
        assert float32_from_regs(*float_regs(value)) == pytest.approx(value, rel=1e-7)
    assert math.isnan(float32_from_regs(*float_regs(math.nan)))


def test_make_grid_meter_builds_the_configured_driver():
    sdm = make_grid_meter(GridMeterConfig(driver="sdm630", host="meter.local", unit_id=7), print)
    assert isinstance(sdm, Sdm630Meter) and sdm.where == "meter.local:502 unit 7"
    serial = make_grid_meter(GridMeterConfig(driver="p1", serial_port="/dev/ttyUSB0", dsmr_version="4"), print)
    assert isinstance(serial, P1Meter) and serial.where == "/dev/ttyUSB0" and serial.stale_after_s == 30.0
    tcp = make_grid_meter(GridMeterConfig(driver="p1", host="p1.local", port=2001, timeout_s=2.0), print)
    assert isinstance(tcp, P1Meter) and tcp.where == "p1.local:2001" and tcp.stale_after_s == 6.0


async def test_sdm630_readings_follow_the_meter(sdm, draw, caplog):
    caplog.set_level(logging.INFO, logger="laadplein.meter")
    async with meter(sdm630_config(sdm.port)) as rec:
        first = await rec.wait_for(online, 3)
        assert first.current_a == (12.5, 7.0, 3.25)
        assert first.power_w == pytest.approx(VOLTAGE_V * 22.75, rel=1e-6)
        draw.current_a = (-10.0, 0.0, 31.5)
        r = await rec.wait_for(lambda r: r.current_a == (10.0, 0.0, 31.5), 3)
        assert r.online and r.power_w == pytest.approx(VOLTAGE_V * 21.5, rel=1e-6) and r.reason == ""
        await asyncio.sleep(0.5)
    assert all(r.online for r in rec.seen) and len(rec.seen) >= 4
    assert [r.at_s for r in rec.seen] == sorted(r.at_s for r in rec.seen)
    assert caplog.text.count("online:") == 1


@pytest.mark.parametrize(
    ("bad", "words"),
    [((math.nan, 1.0, 1.0), "L1 current is not a number"), ((1.0, 1.0, 20_000.0), "L3 current 20000 A is above")],
)
async def test_sdm630_implausible_values_are_offline_logged_once_and_recover(sdm, draw, caplog, bad, words):
    caplog.set_level(logging.INFO, logger="laadplein.meter")
    async with meter(sdm630_config(sdm.port)) as rec:
        await rec.wait_for(online, 3)
        draw.current_a = bad
        r = await rec.wait_for(offline, 2)
        assert words in r.reason and r.current_a is None and r.power_w is None
        await asyncio.sleep(0.7)  # a few retries, each rebuilding the link and failing the same way
        assert len([r for r in rec.seen if not r.online]) >= 2
        draw.current_a = (5.0, 5.0, 5.0)
        r = await rec.wait_for(online, 3)
        assert r.current_a == (5.0, 5.0, 5.0)
    assert caplog.text.count("offline:") == 1 and caplog.text.count("online:") == 2


async def test_sdm630_that_does_not_answer_is_offline_within_its_timeout():
    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(accept_and_say_nothing, HOST, 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        async with meter(sdm630_config(port)) as rec:
            loop = asyncio.get_running_loop()
            started_at = loop.time()
            r = await rec.wait_for(offline, 2)
            assert r.reason == f"no answer from {HOST}:{port} unit 1 within 0.5 s"
            assert r.at_s - started_at <= 0.5 + 0.3
            await rec.wait_for(lambda r: len(rec.seen) >= 2, 2)  # and it keeps trying


async def test_sdm630_exception_answer_is_offline_with_the_code():
    async def device_failure(*_args) -> ExcCodes:
        return ExcCodes.DEVICE_FAILURE

    ports: list[int | None] = []
    ready = asyncio.Event()

    async def serve() -> None:
        await serve_registers(
            unit_id=1, start=0, count=LAST_REGISTER + 1, action=device_failure, host=HOST, port=0, period_s=1.0,
            step=lambda: None, listening=ports.append, ready=ready, name="failing-meter-step",
        )

    async with running(serve, "failing-meter"):
        await asyncio.wait_for(ready.wait(), 5)
        async with meter(sdm630_config(ports[0])) as rec:
            r = await rec.wait_for(offline, 2)
    assert r.reason == f"{HOST}:{ports[0]} unit 1 answered Modbus exception 4 (device failure) to a read of 6-11"


async def test_sdm630_refused_then_found_when_the_meter_comes_up(draw):
    port = free_port()
    async with meter(sdm630_config(port)) as rec:
        r = await rec.wait_for(offline, 2)
        assert r.reason.startswith(f"cannot connect to {HOST}:{port}")
        async with started(SimGridMeter(draw, HOST, port, refresh_s=0.05), "sim-sdm630-late"):
            r = await rec.wait_for(online, 3)
            assert r.current_a == (12.5, 7.0, 3.25)
            gone_at = asyncio.get_running_loop().time()
        # the meter went away again: reported at the next poll, not after a timeout
        r = await rec.wait_for(offline, 1)
        assert r.reason.startswith(f"no valid answer from {HOST}:{port} unit 1") and r.at_s - gone_at < 0.5


# ---- P1 over TCP ------------------------------------------------------------------------------


def p1_config(port: int) -> GridMeterConfig:
    return GridMeterConfig(driver="p1", host=HOST, port=port, dsmr_version="5", timeout_s=0.5)


async def test_p1_readings_follow_the_meter_in_whole_amperes(p1, draw):
    async with meter(p1_config(p1.port)) as rec:
        r = await rec.wait_for(online, 2)
        assert r.current_a == (13.0, 7.0, 3.0)  # DSMR 5 sends whole amperes
        assert r.power_w == pytest.approx(VOLTAGE_V * 22.75, abs=1.0)
        draw.current_a = (-8.0, 0.4, 40.0)
        r = await rec.wait_for(lambda r: r.current_a == (8.0, 0.0, 40.0), 2)
        assert r.power_w == pytest.approx(VOLTAGE_V * 32.4, abs=1.0)
        await asyncio.sleep(0.6)
    assert all(r.online for r in rec.seen) and len(rec.seen) >= 4


async def test_p1_silence_is_offline_within_three_intervals_and_recovers(p1, draw, caplog):
    caplog.set_level(logging.INFO, logger="laadplein.meter")
    async with meter(p1_config(p1.port)) as rec:
        await rec.wait_for(online, 2)
        await asyncio.sleep(3.5)  # longer than the silence allowed: telegrams keep it online
        assert all(r.online for r in rec.seen) and len(rec.seen) >= 12
        p1.set_fault("silent")
        r = await rec.wait_for(offline, 3 * 1.0 + 1.5)
        last_online = [x for x in rec.seen if x.online][-1]
        assert r.at_s - last_online.at_s <= 3 * 1.0 + 1.0  # DSMR 5: a telegram a second
        assert r.reason == f"no valid telegram from {HOST}:{p1.port} for 3 s"
        draw.current_a = (20.0, 21.0, 22.0)
        p1.set_fault("none")
        r = await rec.wait_for(online, 2.5)
        assert r.current_a == (20.0, 21.0, 22.0)
    assert caplog.text.count("offline:") == 1 and caplog.text.count("online:") == 2


async def test_p1_garbage_is_counted_logged_once_per_kind_and_never_fatal(p1, caplog):
    caplog.set_level(logging.DEBUG)
    async with meter(p1_config(p1.port)) as rec:
        await rec.wait_for(online, 2)
        p1.set_fault("garbage")
        r = await rec.wait_for(offline, 4.5)
        assert r.reason.endswith("(telegrams arrive but are rejected: bad CRC, does not parse)")
        p1.set_fault("none")
        await rec.wait_for(online, 2.5)
    tallies = [x.getMessage() for x in caplog.records if "telegram(s) rejected" in x.getMessage()]
    assert sum("bad CRC" in m for m in tallies) == 1  # some 8 of each kind arrived: said once
    assert sum("not ASCII" in m for m in tallies) == 1
    assert len(tallies) == 2
    assert EQUIPMENT_ID not in caplog.text


async def test_p1_garbage_counts_reach_the_driver(p1):
    recorder = Recorder()
    driver = P1Meter(host=HOST, port=p1.port, on_reading=recorder, timeout_s=0.5)
    p1.set_fault("garbage")
    async with running(driver.run, "p1-garbage"):
        async with asyncio.timeout(3):
            while driver.rejected.get("crc", 0) < 4:
                await asyncio.sleep(0.05)
    assert driver.rejected["unparsable"] >= 3
    assert not any(r.online for r in recorder.seen)


async def test_p1_closed_by_the_adapter_is_offline_at_once_then_reconnects(draw):
    port = free_port()
    async with meter(p1_config(port)) as rec:
        r = await rec.wait_for(offline, 2)
        assert r.reason.startswith(f"cannot open {HOST}:{port}: ")
        async with started(SimP1Meter(draw, HOST, port, interval_s=0.25), "sim-p1-late") as sim:
            await rec.wait_for(online, 3)
            assert sim.clients == 1
            gone_at = asyncio.get_running_loop().time()
        r = await rec.wait_for(offline, 1)
        assert r.reason == f"{HOST}:{port} closed the connection" and r.at_s - gone_at < 0.5


async def test_p1_cancelled_while_waiting_closes_its_connection(p1):
    p1.set_fault("silent")
    driver = P1Meter(host=HOST, port=p1.port, on_reading=Recorder(), timeout_s=0.5)
    async with running(driver.run, "p1-cancel"):
        async with asyncio.timeout(2):
            while p1.clients == 0:
                await asyncio.sleep(0.02)
    async with asyncio.timeout(2):
        while p1.clients:
            await asyncio.sleep(0.02)


# ---- P1 over a serial port (a pseudo-terminal) --------------------------------------------------


async def test_p1_over_a_serial_port_reads_telegrams_and_cancels_cleanly(caplog):
    caplog.set_level(logging.DEBUG)
    main_fd, tty_fd = os.openpty()
    os.set_blocking(main_fd, False)
    try:
        recorder = Recorder()
        driver = P1Meter(serial_port=os.ttyname(tty_fd), on_reading=recorder, timeout_s=0.5)

        async def meter_side() -> None:
            while True:
                telegram = build_telegram((16.0, 9.6, 0.4), 5750.0, datetime.now(UTC))
                os.write(main_fd, telegram.encode("ascii"))
                await asyncio.sleep(0.2)

        async with running(meter_side, "pty-meter"), running(driver.run, "p1-serial"):
            r = await recorder.wait_for(online, 3)
            assert (r.current_a, r.power_w) == ((16.0, 10.0, 0.0), 5750.0)
            await recorder.wait_for(lambda _r: len(recorder.seen) >= 3, 2)
        assert all(r.online for r in recorder.seen)
        assert EQUIPMENT_ID not in caplog.text  # the serial layer logs what it reads at DEBUG
    finally:
        os.close(main_fd)
        os.close(tty_fd)
