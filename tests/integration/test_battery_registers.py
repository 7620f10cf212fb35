"""The `registers` battery preset against a small register image served over Modbus TCP (drivers.sim.modbus)."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from pymodbus.constants import ExcCodes

from battery.trust import BatteryRatings
from battery.vendors import decode_register, encode_register
from config.schema_devices import RegisterConfig
from drivers.batteries.registers import RegisterBattery
from drivers.sim.modbus import serve_registers
from tests.integration.harness import Recorder
from tests.integration.test_battery_sunspec import running, trusted

pytestmark = pytest.mark.integration

UNIT = 7
RATINGS = BatteryRatings(max_charge_w=8_000.0, max_discharge_w=8_000.0)
FAST = {"timeout_s": 0.5, "poll_s": 0.2, "retry_s": 0.5}
SOC, POWER, SETPOINT = 30, 100, 200
# SoC in tenths of a % in an input register; power in W as a little-endian int32 (low word first);
# the setpoint in kW as a float32 (high word first).
TABLE = [
    RegisterConfig(name="soc_pct", address=SOC, type="uint16", scale=0.1, unit="%", table="input"),
    RegisterConfig(name="power_w", address=POWER, type="int32", unit="W", word_order="little"),
    RegisterConfig(name="setpoint_w", address=SETPOINT, type="float32", unit="kW"),
]


class RegisterImage:
    """Holding and input registers of a battery that follows its setpoint register; may go silent."""

    def __init__(self, soc_raw: int = 623, power_w: int = 0) -> None:
        self.input = {SOC: soc_raw}
        self.holding = dict(zip((POWER, POWER + 1), encode_register(power_w, "int32", "little"), strict=True))
        self.holding.update(zip((SETPOINT, SETPOINT + 1), encode_register(0.0, "float32"), strict=True))
        self.writes: list[tuple[int, list[int]]] = []
        self.silent = False
        self.following = True
        self.port = 0

    @property
    def setpoint_kw(self) -> float:
        return decode_register([self.holding[SETPOINT], self.holding[SETPOINT + 1]], "float32")

    def follow(self) -> None:
        """The battery's power becomes its setpoint (kW to W), unless it is left to itself."""
        if not self.following:
            return
        power = encode_register(self.setpoint_kw * 1000, "int32", "little")
        self.holding[POWER], self.holding[POWER + 1] = power

    async def action(self, function_code, start_address, address, count, registers, set_values):
        table = self.input if function_code == 4 else self.holding
        addrs = range(address, address + count)
        if set_values is None:
            if any(a not in table for a in addrs):
                return ExcCodes.ILLEGAL_ADDRESS
            registers[address - start_address : address - start_address + count] = [table[a] for a in addrs]
            return None
        if address != SETPOINT or count != 2:
            return ExcCodes.ILLEGAL_ADDRESS
        self.holding[SETPOINT], self.holding[SETPOINT + 1] = (int(v) for v in set_values)
        self.writes.append((address, [int(v) for v in set_values]))
        return None

    def trace(self, sending: bool, pdu):
        return None if not sending and self.silent else pdu

    def listening(self, port: int | None) -> None:
        self.port = port or 0


@pytest.fixture
async def image() -> AsyncIterator[RegisterImage]:
    img = RegisterImage()
    ready = asyncio.Event()

    async def serve() -> None:
        await serve_registers(
            unit_id=UNIT, start=0, count=256, action=img.action, host="127.0.0.1", port=0, period_s=0.05,
            step=img.follow, listening=img.listening, ready=ready, name="register-battery", trace_pdu=img.trace,
        )

    async with running(serve, "register-image"):
        async with asyncio.timeout(5):
            await ready.wait()
        yield img


@asynccontextmanager
async def driver(port: int, table=TABLE, **kwargs) -> AsyncIterator[tuple[RegisterBattery, Recorder]]:
    recorder = Recorder()
    battery = RegisterBattery("127.0.0.1", port, UNIT, RATINGS, table, on_reading=recorder, **{**FAST, **kwargs})
    async with running(battery.run, "battery-registers"):
        yield battery, recorder


def power_near(target_w: float):
    return lambda s: s.online and s.power_w is not None and abs(s.power_w - target_w) <= 0.5


async def test_reads_types_word_order_and_scale(image):
    image.following = False  # a battery left to itself
    image.holding[POWER], image.holding[POWER + 1] = encode_register(-2_500, "int32", "little")
    assert image.holding[POWER] != 0xFFFF  # the low word first: a big-endian reading would be wrong
    async with driver(image.port) as (_battery, rec):
        status = await rec.wait_for(trusted, 10)
    assert status.soc_pct == pytest.approx(62.3)
    assert status.power_w == -2_500 and status.state == "charging"


async def test_setpoint_is_written_in_the_table_s_units_and_refreshed_every_poll(image):
    async with driver(image.port) as (battery, rec):
        await rec.wait_for(trusted, 10)
        assert image.writes == []  # nothing before a command
        battery.command(5_000.0)
        status = await rec.wait_for(power_near(5_000.0), 10)
        assert status.state == "discharging" and status.trusted
        assert image.setpoint_kw == pytest.approx(5.0)
        battery.command(-3_000.0)
        await rec.wait_for(power_near(-3_000.0), 10)
        assert image.setpoint_kw == pytest.approx(-3.0)
        before = len(image.writes)
        await asyncio.sleep(2.0)
        assert len(image.writes) - before >= 4  # every poll (0.2 s: 10 in 2 s), so the battery's watchdog stays fed


async def test_idle_is_written_on_cancellation(image, caplog):
    caplog.set_level(logging.INFO, logger="laadplein.battery")
    async with driver(image.port) as (battery, rec):
        await rec.wait_for(trusted, 10)
        battery.command(4_000.0)
        await rec.wait_for(power_near(4_000.0), 10)
    assert image.setpoint_kw == 0.0
    assert f"battery at 127.0.0.1:{image.port} unit {UNIT} left idle: register 200 = 0" in caplog.text


async def test_garbage_is_not_trusted(image):
    async with driver(image.port) as (_battery, rec):
        await rec.wait_for(trusted, 10)
        image.input[SOC] = 0xFFFF
        status = await rec.wait_for(lambda s: not s.trusted, 10)
        assert status.online and "SoC 6553.5 % outside 0-100 %" in status.reason
        image.input[SOC] = 500
        await rec.wait_for(trusted, 10)


async def test_silence_is_offline_within_2_s_and_back(image):
    async with driver(image.port) as (battery, rec):
        await rec.wait_for(trusted, 10)
        battery.command(2_000.0)
        loop = asyncio.get_running_loop()
        image.silent = True
        silent_at = loop.time()
        status = await rec.wait_for(lambda s: not s.online, 2)
        assert loop.time() - silent_at <= 2.0
        assert status.reason.startswith(f"no answer from 127.0.0.1:{image.port} unit {UNIT} within 0.5 s")
        image.silent = False
        await rec.wait_for(lambda s: trusted(s) and power_near(2_000.0)(s), 4)


async def test_a_table_without_a_setpoint_is_read_but_not_steered(image, caplog):
    caplog.set_level(logging.INFO, logger="laadplein.battery")
    negative_scale = [
        RegisterConfig(name="soc_pct", address=SOC, type="uint16", scale=0.1, unit="%", table="input"),
        # a battery that counts charging as positive, in kW hundredths
        RegisterConfig(name="power_w", address=POWER, type="int32", scale=-0.01, unit="kW", word_order="little"),
    ]
    image.following = False
    image.holding[POWER], image.holding[POWER + 1] = encode_register(-150, "int32", "little")
    async with driver(image.port, table=negative_scale) as (battery, rec):
        status = await rec.wait_for(trusted, 10)
        assert status.power_w == pytest.approx(1_500.0) and status.state == "discharging"
        battery.command(1_000.0)
        await asyncio.sleep(0.6)
    assert image.writes == []
    assert caplog.text.count("cannot write the setpoint: the register table has no setpoint_w") == 1
