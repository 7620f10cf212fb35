"""A cancellation that pymodbus turns into an error of its own must still stop a driver's loop."""

from __future__ import annotations

import asyncio

import pytest

from battery.trust import BatteryRatings
from config.schema_devices import RegisterConfig
from drivers.batteries.registers import BatteryLinkError, RegisterBattery
from drivers.support.aio import cancel_count, raise_if_cancelled

TABLE = [
    RegisterConfig(name="soc_pct", address=1, unit="%"),
    RegisterConfig(name="power_w", address=2, unit="W"),
]


async def test_a_battery_loop_ends_when_pymodbus_swallows_the_cancellation(monkeypatch):
    async def connect_swallowing(self) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise BatteryLinkError("request cancelled") from None  # what pymodbus may do

    monkeypatch.setattr("drivers.batteries.registers.ModbusLink.connect", connect_swallowing)
    battery = RegisterBattery("127.0.0.1", 1, 1, BatteryRatings(1000.0, 1000.0), TABLE, on_reading=lambda s: None,
                              timeout_s=0.5, poll_s=0.5, retry_s=0.5)
    task = asyncio.create_task(battery.run())
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    try:
        assert done and task.cancelled(), "the driver kept retrying after it was cancelled"
    finally:
        task.cancel()


async def test_raise_if_cancelled():
    raise_if_cancelled(cancel_count())  # not cancelled: nothing happens

    async def swallowed() -> None:
        base = cancel_count()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass
        raise_if_cancelled(base)

    task = asyncio.create_task(swallowed())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_battery_loop_ends_when_a_successful_read_swallows_the_cancellation(monkeypatch):
    async def connect(self) -> None:
        return None

    async def read_swallowing(self, address, count, table="holding"):
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass  # the answer came with the cancel: wait_for returns it (Python 3.11)
        return [50] * count

    monkeypatch.setattr("drivers.batteries.registers.ModbusLink.connect", connect)
    monkeypatch.setattr("drivers.batteries.registers.ModbusLink.read", read_swallowing)
    battery = RegisterBattery("127.0.0.1", 1, 1, BatteryRatings(1000.0, 1000.0), TABLE, on_reading=lambda s: None,
                              timeout_s=0.5, poll_s=0.2, retry_s=0.5)
    task = asyncio.create_task(battery.run())
    await asyncio.sleep(0.005)
    task.cancel()  # once, while the first read is in flight
    await asyncio.wait({task}, timeout=1.0)
    try:
        assert task.done() and task.cancelled(), "the driver kept polling after it was cancelled"
    finally:
        task.cancel()
