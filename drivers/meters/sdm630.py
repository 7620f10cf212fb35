"""Reads an Eastron SDM630 grid meter over Modbus TCP and reports each poll as a `GridReading`.

Per-phase current and total power come from the meter's input registers (float32, high word
first); a link failure or an implausible value is reported as an offline reading at once and the
link is rebuilt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Callable, Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.contract.devices import GridReading
from drivers.meters.sdm630_registers import CURRENT_A, TOTAL_POWER_W
from drivers.support.aio import cancel_count, raise_if_cancelled

log = logging.getLogger("laadplein.meter")

MAX_CURRENT_A = 10_000.0  # no grid connection this controller serves carries more per phase
# Power cannot exceed what the largest plausible current carries at a generous phase voltage.
MAX_POWER_W = 3 * MAX_CURRENT_A * 300.0
MAX_WAIT_S = 60.0
_EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure",
    5: "acknowledge", 6: "device busy", 10: "gateway path unavailable", 11: "gateway target failed to respond",
}


class MeterLinkError(Exception):
    """The meter could not be read: no answer, a Modbus exception, a refused connection or nonsense."""


def float32_from_regs(high: int, low: int) -> float:
    """A float32 from two registers as the SDM630 sends it: IEEE 754 big-endian, high word first."""
    return struct.unpack(">f", struct.pack(">HH", high, low))[0]


def implausible(current_a: Sequence[float], power_w: float) -> str | None:
    """Why per-phase currents (A) and total power (W) cannot be right, or None when they are plausible."""
    for phase, value in enumerate(current_a, start=1):
        if not math.isfinite(value):
            return f"L{phase} current is not a number ({value})"
        if value < 0:
            return f"L{phase} current is negative ({value:.1f} A)"
        if value > MAX_CURRENT_A:
            return f"L{phase} current {value:.0f} A is above {MAX_CURRENT_A:.0f} A"
    if not math.isfinite(power_w):
        return f"total power is not a number ({power_w})"
    if abs(power_w) > MAX_POWER_W:
        return f"total power {power_w:.0f} W is beyond {MAX_POWER_W:.0f} W"
    return None


class Sdm630Meter:
    """An SDM630 on Modbus TCP; `run` polls it every `poll_s` until cancelled and reports each poll.

    Every network wait is bounded by `timeout_s`; after a failure the link is rebuilt every
    `retry_s` seconds (default: `poll_s`), and `on_reading` hears of the failure at once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        unit_id: int,
        *,
        on_reading: Callable[[GridReading], None],
        poll_s: float = 1.0,
        timeout_s: float = 1.0,
        retry_s: float | None = None,
    ) -> None:
        retry_s = poll_s if retry_s is None else retry_s
        for name, value in (("poll_s", poll_s), ("timeout_s", timeout_s), ("retry_s", retry_s)):
            if not 0 < value <= MAX_WAIT_S:
                raise ValueError(f"{name} must be within (0, {MAX_WAIT_S}] s, got {value!r}")
        self.host, self.port, self.unit_id = host, port, unit_id
        self.poll_s, self.timeout_s, self.retry_s = poll_s, timeout_s, retry_s
        self._on_reading = on_reading
        self._last: GridReading | None = None

    @property
    def where(self) -> str:
        """The meter's address as a technician would type it: host:port unit N."""
        return f"{self.host}:{self.port} unit {self.unit_id}"

    @property
    def last(self) -> GridReading | None:
        """The last reading reported (None before the first poll)."""
        return self._last

    async def run(self) -> None:
        """Connect and poll until cancelled; failures are reported at once, then the link is rebuilt."""
        loop = asyncio.get_running_loop()
        base = self._cancel_base = cancel_count()
        while True:
            # our own asyncio timeout is the one that counts; pymodbus's only backs it up
            client = AsyncModbusTcpClient(
                self.host, port=self.port, timeout=2 * self.timeout_s, retries=0, reconnect_delay=0
            )
            try:
                await self._connect(client)
                await self._poll_forever(client)
            except MeterLinkError as exc:
                raise_if_cancelled(base)
                self._report(GridReading(False, None, None, loop.time(), str(exc)))
            finally:
                client.close()
            await asyncio.sleep(self.retry_s)

    async def _connect(self, client: AsyncModbusTcpClient) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                connected = await client.connect()
        except TimeoutError:
            raise MeterLinkError(f"no connection to {self.host}:{self.port} within {self.timeout_s} s") from None
        except OSError as exc:
            raise MeterLinkError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        if not connected:
            raise MeterLinkError(f"cannot connect to {self.host}:{self.port}: refused or unreachable")

    async def _poll_forever(self, client: AsyncModbusTcpClient) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            current_a, power_w = await self._read_values(client)
            why = implausible(current_a, power_w)
            if why is not None:
                raise MeterLinkError(f"{self.where} reports implausible values: {why}")
            self._report(GridReading(True, current_a, power_w, loop.time()))
            next_at = max(next_at + self.poll_s, loop.time())
            raise_if_cancelled(self._cancel_base)  # pymodbus's wait_for may have swallowed our cancel
            await asyncio.sleep(next_at - loop.time())

    async def _read_values(self, client: AsyncModbusTcpClient) -> tuple[tuple[float, float, float], float]:
        """Per-phase currents (A) and total power (W, import positive), both reads under one timeout."""
        first, count = CURRENT_A[0], CURRENT_A[-1] + 2 - CURRENT_A[0]
        try:
            async with asyncio.timeout(self.timeout_s):
                # two reads rather than one spanning the gaps between them, which meters need not map
                currents = await self._read(client, first, count)
                power = await self._read(client, TOTAL_POWER_W, 2)
        except TimeoutError:
            raise MeterLinkError(f"no answer from {self.where} within {self.timeout_s} s") from None
        except ModbusException as exc:
            raise MeterLinkError(f"no valid answer from {self.where}: {exc}") from None
        current_a = tuple(
            float32_from_regs(currents[a - first], currents[a - first + 1]) for a in CURRENT_A
        )
        return (current_a[0], current_a[1], current_a[2]), float32_from_regs(power[0], power[1])

    async def _read(self, client: AsyncModbusTcpClient, address: int, count: int) -> list[int]:
        rr = await client.read_input_registers(address, count=count, device_id=self.unit_id)
        if rr.isError():
            code = getattr(rr, "exception_code", None)
            name = _EXCEPTION_NAMES.get(code, "unknown") if code is not None else "error"
            raise MeterLinkError(
                f"{self.where} answered Modbus exception {code} ({name}) to a read of {address}-{address + count - 1}"
            )
        if len(rr.registers) < count:
            raise MeterLinkError(f"{self.where} answered {len(rr.registers)} registers where {count} were asked")
        return list(rr.registers[:count])

    def _report(self, reading: GridReading) -> None:
        before, self._last = self._last, reading
        self._log_change(before, reading)
        self._on_reading(reading)

    def _log_change(self, before: GridReading | None, now: GridReading) -> None:
        """Log going offline (or a new reason for it) and coming back, never a repeated state."""
        if not now.online:
            if before is None or before.online or before.reason != now.reason:
                log.warning("grid meter at %s offline: %s; retrying every %s s", self.where, now.reason, self.retry_s)
        elif before is None or not before.online:
            log.info(
                "grid meter at %s online: %s A, %.0f W",
                self.where, "/".join(f"{a:.1f}" for a in now.current_a or ()), now.power_w,
            )
