"""Fuzzing the battery drivers: a Modbus TCP server whose registers turn to garbage, exceptions and drops.

Each poll of the driver meets one scripted fate drawn by hypothesis: good values, garbage registers
(sometimes the SunSpec model chain itself), a Modbus exception, a dropped connection or silence.
Whatever comes, the driver never trusts an implausible reading nor one before three plausible ones
in a row, its task never dies, and it is trusted again three good readings after the last fault.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from battery.sunspec_map import blank_image, build_layout, set_point
from battery.trust import BatteryRatings
from battery.vendors import encode_register
from config.schema_devices import RegisterConfig
from drivers.batteries.registers import ModbusBattery, RegisterBattery
from drivers.batteries.sunspec import SunSpecBattery
from drivers.batteries.victron import (
    BATTERY,
    GRID_POWER,
    OVERRIDE_SETPOINT,
    VictronBattery,
)
from drivers.contract.devices import BatteryStatus
from tests.integration.fuzz_strategies import ModbusPoll, drawn, modbus_scripts
from tests.integration.harness import Recorder
from tests.integration.test_fuzz_ocpp import FAULT_LINES_MAX, fault_kind

pytestmark = pytest.mark.integration

RATINGS = BatteryRatings(max_charge_w=10_000.0, max_discharge_w=10_000.0)
MARGIN = 1.1  # battery.trust: power up to the rating x 1.1 is plausible
FAST = {"timeout_s": 0.1, "poll_s": 0.05, "retry_s": 0.1}
STALL_REQUESTS = 20  # requests without a poll: the driver is lost in a garbage map; give it the good one back
SCRIPT_RUN = 10  # fates per hypothesis example


def plausible(s: BatteryStatus) -> bool:
    """The reading of `s` could be a real battery's (control.md "Battery dispatch"), trust aside."""
    soc, power = s.soc_pct, s.power_w
    return (
        s.online and s.state is not None and soc is not None and power is not None
        and math.isfinite(soc) and 0 <= soc <= 100
        and math.isfinite(power) and -RATINGS.max_charge_w * MARGIN <= power <= RATINGS.max_discharge_w * MARGIN
    )


def good_values(i: int) -> tuple[float, float]:
    """The i-th good reading: SoC (%) and power (W, positive = discharging), varied so that nothing looks stuck."""
    return 20.0 + (i * 7) % 60, float((i * 1373) % 16_000 - 8_000)


class ScriptedBattery:
    """A Modbus TCP server whose registers meet one scripted fate per poll (a read at `poll_address`)."""

    def __init__(self, *, unit_id: int, start: int, count: int, poll_address: int,
                 good: Callable[[int], dict[int, int]], garbage: Callable[[tuple[int, ...]], dict[int, int]],
                 script: list[ModbusPoll]) -> None:
        self.unit_id, self.start, self.count, self.poll_address = unit_id, start, count, poll_address
        self.regs = {a: 0 for a in range(start, start + count)}
        self.good, self.garbage = good, garbage
        self.script = script
        self.polls = 0
        self.fates: Counter[str] = Counter()
        self._exception: int | None = None
        self._since_poll = 0
        self._server: ModbusTcpServer | None = None
        self.regs.update(good(0))

    @property
    def done(self) -> bool:
        return self.polls >= len(self.script)

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending:
            return pdu
        self._since_poll += 1
        if self._since_poll > STALL_REQUESTS:
            self.regs.update(self.good(self.polls))
            self._since_poll = 0
        if pdu.function_code not in (3, 4) or pdu.address != self.poll_address:
            return pdu
        self._since_poll = 0
        fate = self.script[self.polls] if not self.done else ModbusPoll("good")
        self.polls += 1
        self.fates[fate.kind] += 1
        if fate.kind == "good":
            self.regs.update(self.good(self.polls))
        elif fate.kind == "garbage":
            self.regs.update(self.garbage(fate.regs))
        elif fate.kind == "exception":
            self._exception = fate.code
        elif fate.kind == "drop":
            asyncio.get_running_loop().call_soon(self._drop)
            return None
        elif fate.kind == "silent":
            return None  # pymodbus answers nothing to a request it gets no PDU for
        return pdu

    def _drop(self) -> None:
        assert self._server is not None
        for connection in list(self._server.active_connections.values()):
            connection.close()

    async def _action(self, function_code, start_address, address, count, registers, set_values):
        if self._exception is not None:
            code, self._exception = self._exception, None
            return ExcCodes(code)
        span = range(address, address + count)
        if any(a not in self.regs for a in span):
            return ExcCodes.ILLEGAL_ADDRESS
        if set_values is None:
            registers[address - start_address : address - start_address + count] = [self.regs[a] for a in span]
        else:
            self.regs.update(zip(span, (int(v) for v in set_values), strict=True))
        return None

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        device = SimDevice(id=self.unit_id, simdata=[SimData(self.start, count=self.count, values=0, datatype=DataType.REGISTERS)],
                           action=self._action)
        self._server = ModbusTcpServer(device, address=("127.0.0.1", 0), trace_pdu=self._trace)
        await self._server.serve_forever(background=True)
        try:
            yield self._server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        finally:
            await self._server.shutdown()


# ---------------------------------------------------------------- the three presets' register maps

SUNSPEC = build_layout((1, 802, 124))


def _sunspec_image(i: int) -> list[int]:
    soc_pct, power_w = good_values(i)
    image = blank_image(SUNSPEC)
    for point in SUNSPEC.points.values():
        if point.type == "sunssf":
            set_point(image, SUNSPEC, point.model_id, point.name, {"SoC_SF": -1, "InOutWRte_SF": -2}.get(point.name, 0))
    values = {
        1: {"Mn": "Fuzz", "Md": "Battery", "SN": "F-1"},
        802: {"WChaRteMax": 10_000, "WDisChaRteMax": 10_000, "SoC": soc_pct, "W": power_w, "State": 3},
        124: {"WChaMax": 10_000, "StorCtl_Mod": 0, "InWRte": 0, "OutWRte": 0, "InOutWRte_RvrtTms": 60},
    }
    for model_id, points in values.items():
        for name, value in points.items():
            set_point(image, SUNSPEC, model_id, name, value)
    return image


def _sunspec_good(i: int) -> dict[int, int]:
    return dict(enumerate(_sunspec_image(i), SUNSPEC.base))


def _sunspec_garbage(regs: tuple[int, ...]) -> dict[int, int]:
    """Garbage over models 802 and 124; one time in eight over the whole model chain (the marker stays)."""
    if regs[0] % 8 == 0:
        return dict(enumerate(regs, SUNSPEC.base + 2))
    start = SUNSPEC.models[1].address + 2
    return dict(enumerate(regs[: SUNSPEC.end_address - start], start))


VICTRON_START, VICTRON_COUNT = 817, OVERRIDE_SETPOINT + 2 - 817


def _victron_good(i: int) -> dict[int, int]:
    soc_pct, power_w = good_values(i)
    regs = dict.fromkeys(range(GRID_POWER, GRID_POWER + 3), encode_register(500, "int16")[0])
    regs.update(zip(range(BATTERY, BATTERY + 5), [512, 0, encode_register(-power_w, "int16")[0], round(soc_pct), 2], strict=True))
    return regs


def _victron_garbage(regs: tuple[int, ...]) -> dict[int, int]:
    return dict(zip([*range(GRID_POWER, GRID_POWER + 3), *range(BATTERY, BATTERY + 5)], regs, strict=False))


TABLE = [
    RegisterConfig(name="soc_pct", address=30, type="uint16", scale=0.1, unit="%", table="input"),
    RegisterConfig(name="power_w", address=100, type="float32", unit="kW", word_order="little"),
    RegisterConfig(name="setpoint_w", address=200, type="int32", unit="W"),
]


def _table_good(i: int) -> dict[int, int]:
    soc_pct, power_w = good_values(i)
    return {30: round(soc_pct * 10), **dict(zip((100, 101), encode_register(power_w / 1000, "float32", "little"), strict=True))}


def _table_garbage(regs: tuple[int, ...]) -> dict[int, int]:
    return dict(zip((30, 100, 101), regs, strict=False))


# preset: (the driver for a port and a report callback, the server's map, garbage registers per poll, polls)
PRESETS = {
    "sunspec": (lambda port, report: SunSpecBattery("127.0.0.1", port, 1, RATINGS, on_reading=report, **FAST),
                dict(unit_id=1, start=SUNSPEC.base, count=SUNSPEC.size, poll_address=SUNSPEC.models[1].address,
                     good=_sunspec_good, garbage=_sunspec_garbage), SUNSPEC.size - 2, 70),
    "victron": (lambda port, report: VictronBattery("127.0.0.1", port, 100, RATINGS, on_reading=report, **FAST),
                dict(unit_id=100, start=VICTRON_START, count=VICTRON_COUNT, poll_address=GRID_POWER,
                     good=_victron_good, garbage=_victron_garbage), 8, 40),
    "registers": (lambda port, report: RegisterBattery("127.0.0.1", port, 7, RATINGS, TABLE, on_reading=report, **FAST),
                  dict(unit_id=7, start=0, count=256, poll_address=30, good=_table_good, garbage=_table_garbage), 3, 40),
}


def check_trust(seen: list[BatteryStatus]) -> int:
    """Trusted only when plausible and the third plausible reading in a row, or later; returns how many were trusted."""
    in_row = trusted = 0
    for s in seen:
        in_row = in_row + 1 if plausible(s) else 0
        if s.trusted:
            trusted += 1
            assert plausible(s), f"trusted an implausible reading: {s}"
            assert in_row >= 3, f"trusted after {in_row} plausible readings in a row: {s}"
    return trusted


@pytest.mark.parametrize("preset", sorted(PRESETS))
async def test_garbage_exceptions_and_drops_never_make_a_reading_trusted(preset, caplog):
    caplog.set_level(logging.INFO, logger="drivers")
    make, server_options, garbage_regs, polls = PRESETS[preset]
    script = [fate for run in drawn(modbus_scripts(garbage_regs, SCRIPT_RUN), polls // SCRIPT_RUN) for fate in run]
    script.append(ModbusPoll("exception", code=4))  # the last fault: trust is lost, then must come back
    battery_server = ScriptedBattery(**server_options, script=script)
    recorder = Recorder()
    async with battery_server.serving() as port:
        driver: ModbusBattery = make(port, recorder)
        driver.command(2_000.0)  # so that every plausible poll also writes (model 124, 2716, the setpoint register)
        task = asyncio.create_task(driver.run(), name=f"battery-{preset}")
        try:
            async with asyncio.timeout(60):
                while not battery_server.done:
                    await asyncio.sleep(0.05)
                    assert not task.done(), f"the driver's task ended: {task}"
            faults_end = len(recorder.seen)
            back = await recorder.wait_for(lambda s: s.trusted, 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled(), f"the driver's task ended otherwise: {task}"
    trusted = check_trust(recorder.seen)
    after = [s for s in recorder.seen[faults_end:] if s.online]
    assert after.index(back) == 2, f"trusted again after {after.index(back) + 1} good readings"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("laadplein.battery")]
    kinds = Counter(fault_kind(line) for line in lines)
    print(f"\nfuzz modbus {preset}: {battery_server.polls} polls ({dict(battery_server.fates)}), "
          f"{len(recorder.seen)} reports, {trusted} trusted, 0 driver deaths, {len(lines)} log lines over {len(kinds)} kinds")
    worst = kinds.most_common(3)
    assert not worst or worst[0][1] <= FAULT_LINES_MAX, f"logged per poll: {worst}"
