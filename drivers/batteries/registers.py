"""The shell every Modbus battery driver shares, and the `registers` preset built on it.

`ModbusBattery` owns the link (every call under `timeout_s`), the trust verdicts of `battery.trust`,
the reports to `on_reading`, the held setpoint (written after every poll, let go of on the way out)
and the log lines; a preset says how to start, read, steer and let go. `RegisterBattery` is the
preset for a battery that speaks neither SunSpec nor Victron: a register table from the config.

Kept in one file past 400 lines: the poll loop, the trust verdicts and the held setpoint are one
state machine over one link; the presets that differ live in `sunspec.py` and `victron.py`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from battery.trust import BatteryRatings, Reading, TrustTracker, implausibility
from battery.vendors import (
    asks_change,
    decode_register,
    encode_register,
    register_count,
    register_raw,
    register_value,
    worth_logging,
)
from config.schema_devices import RegisterConfig
from drivers.contract.devices import BatteryStatus
from drivers.support.aio import cancel_count, raise_if_cancelled
from drivers.support.fault_log import FaultLog

log = logging.getLogger("laadplein.battery")

MAX_READ_REGS = 125  # Modbus limit for one read of registers
MAX_RETRY_S = 10.0  # control.md: an untrusted battery is retried at least every 10 s
FAULT_LOG_EVERY_S = 60.0  # a battery that fails every poll gets a line per kind a minute, not one per poll
EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure",
    5: "acknowledge", 6: "device busy", 10: "gateway path unavailable", 11: "gateway target failed to respond",
}


class BatteryLinkError(Exception):
    """The battery could not be read or written: no answer, a Modbus exception, a refused connection or a bad map."""


class BatteryExceptionAnswer(BatteryLinkError):
    """The battery answered a request with a Modbus exception `code`."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class Undecodable(Exception):
    """The battery answered, but with registers that do not decode (a scale factor out of range)."""


class CannotSteer(Exception):
    """The setpoint cannot be put into registers (no setpoint register, no usable reading, out of range)."""




@dataclass(frozen=True)
class Sample:
    """One poll's values in our units: SoC (%), power (W, positive = discharging), state.

    `grid_w` is the grid power (W, positive = import) for presets that steer through the grid.
    """

    soc_pct: float | None
    power_w: float | None
    state: str | None
    grid_w: float | None = None


class ModbusLink:
    """One Modbus TCP connection to a battery; every call is bounded by `timeout_s` and fails as BatteryLinkError."""

    def __init__(self, host: str, port: int, unit_id: int, timeout_s: float) -> None:
        self.host, self.port, self.unit_id, self.timeout_s = host, port, unit_id, timeout_s
        # our own asyncio timeout is the one that counts; pymodbus's only backs it up
        self._client = AsyncModbusTcpClient(host, port=port, timeout=2 * timeout_s, retries=0, reconnect_delay=0)

    @property
    def where(self) -> str:
        """host:port unit N."""
        return f"{self.host}:{self.port} unit {self.unit_id}"

    async def connect(self) -> None:
        """Open the connection within `timeout_s`."""
        try:
            async with asyncio.timeout(self.timeout_s):
                connected = await self._client.connect()
        except TimeoutError:
            raise BatteryLinkError(f"no connection to {self.host}:{self.port} within {self.timeout_s} s") from None
        except OSError as exc:
            raise BatteryLinkError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        if not connected:
            raise BatteryLinkError(f"cannot connect to {self.host}:{self.port}: refused or unreachable")

    def close(self) -> None:
        """Close the connection (at once, no wait)."""
        self._client.close()

    def _refusal(self, rr, what: str, address_matters: bool) -> BatteryExceptionAnswer:
        code = getattr(rr, "exception_code", None)
        name = EXCEPTION_NAMES.get(code, "unknown") if code is not None else "error"
        # the registers matter for an address or value complaint, not for a device failure
        suffix = f" to {what}" if address_matters or code in (2, 3) else ""
        return BatteryExceptionAnswer(f"{self.where} answered Modbus exception {code} ({name}){suffix}", code)

    async def read(self, address: int, count: int, table: Literal["holding", "input"] = "holding") -> list[int]:
        """`count` registers from `address`, in reads of at most 125, all under one timeout."""
        read = self._client.read_holding_registers if table == "holding" else self._client.read_input_registers
        regs: list[int] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                for start in range(address, address + count, MAX_READ_REGS):
                    n = min(MAX_READ_REGS, address + count - start)
                    rr = await read(start, count=n, device_id=self.unit_id)
                    if rr.isError():
                        raise self._refusal(rr, f"a read of {start}-{start + n - 1}", False)
                    if len(rr.registers) < n:
                        raise BatteryLinkError(
                            f"{self.where} answered {len(rr.registers)} registers where {n} were asked "
                            f"({start}-{start + n - 1})"
                        )
                    regs.extend(rr.registers[:n])
        except TimeoutError:
            raise BatteryLinkError(f"no answer from {self.where} within {self.timeout_s} s") from None
        except ModbusException as exc:
            raise BatteryLinkError(
                f"no valid answer from {self.where} to a read of registers {address}-{address + count - 1}: {exc}"
            ) from None
        return regs

    async def write(self, address: int, regs: Sequence[int]) -> None:
        """Write `regs` from `address` (function 16) under the timeout; no answer or a refusal is a link failure."""
        span = f"a write of {address}-{address + len(regs) - 1}"
        try:
            async with asyncio.timeout(self.timeout_s):
                rr = await self._client.write_registers(address, list(regs), device_id=self.unit_id)
        except TimeoutError:
            raise BatteryLinkError(f"no answer from {self.where} within {self.timeout_s} s to {span}") from None
        except ModbusException as exc:
            raise BatteryLinkError(f"no valid answer from {self.where} to {span}: {exc}") from None
        if rr.isError():
            raise self._refusal(rr, span, True)


class ModbusBattery:
    """A battery on Modbus TCP; `run` polls it until cancelled, reports each poll and writes the held setpoint.

    After a failure (of a read or a write) the link is rebuilt every `retry_s` seconds and
    `on_reading` hears of the failure at once. A preset overrides `_start`, `_sample`, `_steer` and
    `_release`; `revert_timeout_s` is for presets that can tell the battery when to drop a command.
    """

    def __init__(
        self, host: str, port: int, unit_id: int, ratings: BatteryRatings, *,
        on_reading: Callable[[BatteryStatus], None], timeout_s: float = 1.0, poll_s: float = 1.0,
        retry_s: float = 2.0, stuck_after_s: float = 900.0, revert_timeout_s: int = 60, logger: logging.Logger = log,
    ) -> None:
        for name, value in (("timeout_s", timeout_s), ("poll_s", poll_s), ("retry_s", retry_s)):
            if not 0 < value <= MAX_RETRY_S:
                raise ValueError(f"{name} must be within (0, {MAX_RETRY_S}] s, got {value!r}")
        if not revert_timeout_s > 0:
            raise ValueError(f"revert_timeout_s must be > 0 s, got {revert_timeout_s!r}")
        self.host, self.port, self.unit_id = host, port, unit_id
        self.ratings = ratings
        self.timeout_s, self.poll_s, self.retry_s = timeout_s, poll_s, retry_s
        self.revert_timeout_s = revert_timeout_s
        self._on_reading = on_reading
        self._log = logger
        self._tracker = TrustTracker(ratings, stuck_after_s=stuck_after_s)
        self._setpoint_changed = False
        self._status: BatteryStatus | None = None
        self._logged_distrust: str | None = None
        self._fault_lines = FaultLog(FAULT_LOG_EVERY_S)  # one line per kind a minute
        self._setpoint_w: float | None = None  # held: written after every poll
        self._written_w: float | None = None
        self._logged_setpoint_w: float | None = None
        self._logged_write_problem: str | None = None

    @property
    def where(self) -> str:
        """The battery's address as a technician would type it: host:port unit N."""
        return f"{self.host}:{self.port} unit {self.unit_id}"

    @property
    def status(self) -> BatteryStatus | None:
        """The last status reported (None before the first poll)."""
        return self._status

    def command(self, setpoint_w: float) -> None:
        """Hold this setpoint (W, positive = discharging): written after the next poll and after every poll."""
        if not math.isfinite(setpoint_w):
            raise ValueError(f"setpoint_w must be a number of W, got {setpoint_w!r}")
        self._setpoint_w = float(setpoint_w)

    def note_setpoint_change(self) -> None:
        """The setpoint now asks the battery for a change: the next reading is judged with that in mind."""
        self._setpoint_changed = True

    # ---- what a preset says ---------------------------------------------------------------

    async def _start(self, link: ModbusLink) -> None:
        """Once per connection, before the first poll (find the map, say what was found)."""

    async def _sample(self, link: ModbusLink) -> Sample:
        """Read SoC, power and state; raise Undecodable for registers that make no sense."""
        raise NotImplementedError

    async def _steer(self, link: ModbusLink, setpoint_w: float, sample: Sample | None) -> str:
        """Write `setpoint_w` (W); `sample` is this poll's reading when plausible. Return what was written."""
        raise NotImplementedError

    async def _release(self, link: ModbusLink) -> str:
        """Leave the battery idle (bounded by the caller); return what was written."""
        raise NotImplementedError

    # ---- the shell --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and poll until cancelled; failures are reported, then retried.

        On cancellation a battery that was steered is left idle (one try, within `timeout_s`)
        before the link closes.
        """
        loop = asyncio.get_running_loop()
        base = self._cancel_base = cancel_count()
        while True:
            link = ModbusLink(self.host, self.port, self.unit_id, self.timeout_s)
            started = False
            try:
                await link.connect()
                await self._start(link)
                started = True
                await self._poll_forever(link)
            except BatteryLinkError as exc:
                if cancel_count() > base:
                    # pymodbus turned our cancellation into an error: leave as if it had arrived
                    link.close()
                    if started and self._written_w is not None:
                        await self._leave()
                    raise asyncio.CancelledError from None
                self._report_failure(loop.time(), str(exc))
            except asyncio.CancelledError:
                link.close()
                if started and self._written_w is not None:
                    await self._leave()
                raise
            finally:
                link.close()
            await asyncio.sleep(self.retry_s)

    async def _poll_forever(self, link: ModbusLink) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            usable: Sample | None = None
            try:
                sample = await self._sample(link)
            except Undecodable as exc:
                at_s = loop.time()
                verdict = self._tracker.failure(at_s, str(exc))
                self._report(at_s, True, verdict.trusted, None, None, None, verdict.reason)
            else:
                at_s = loop.time()
                changed, self._setpoint_changed = self._setpoint_changed, False
                reading = Reading(at_s, sample.soc_pct, sample.power_w, sample.state)
                verdict = self._tracker.observe(reading, changed)
                self._report(at_s, True, verdict.trusted, sample.soc_pct, sample.power_w, sample.state, verdict.reason)
                usable = self._plausible(sample)
            if self._setpoint_w is not None:
                await self._write_held(link, self._setpoint_w, usable)
            # pymodbus's wait_for (Python 3.11) may have returned an answer and swallowed our cancel
            raise_if_cancelled(self._cancel_base)
            next_at = max(next_at + self.poll_s, loop.time())
            await asyncio.sleep(next_at - loop.time())

    def _plausible(self, sample: Sample) -> Sample | None:
        """`sample` when its values are plausible on their own (trust aside), else None."""
        reading = Reading(0.0, sample.soc_pct, sample.power_w, sample.state)
        return sample if implausibility(reading, self.ratings, self._tracker.margin) is None else None

    async def _write_held(self, link: ModbusLink, setpoint_w: float, sample: Sample | None) -> None:
        try:
            detail = await self._steer(link, setpoint_w, sample)
        except CannotSteer as exc:
            problem = f"battery at {self.where}: cannot write the setpoint: {exc}"
            if problem != self._logged_write_problem:
                self._log_fault("steer", logging.WARNING, "%s", problem)
                self._logged_write_problem = problem
            return
        self._logged_write_problem = None
        if asks_change(self._written_w, setpoint_w, self.ratings):
            self.note_setpoint_change()
        if worth_logging(self._logged_setpoint_w, setpoint_w):
            self._log.info("battery at %s: setpoint %+.0f W: %s", self.where, setpoint_w, detail)
            self._logged_setpoint_w = setpoint_w
        self._written_w = setpoint_w

    async def _leave(self) -> None:
        # a fresh connection: the cancelled one may still owe the answer to a request cut short
        link = ModbusLink(self.host, self.port, self.unit_id, self.timeout_s)
        try:
            async with asyncio.timeout(self.timeout_s):
                await link.connect()
                detail = await self._release(link)
        except (BatteryLinkError, Undecodable, CannotSteer, TimeoutError) as exc:
            why = str(exc) or f"no answer within {self.timeout_s} s"
            self._log.warning("battery at %s not left idle (%s): it keeps %+.0f W until it drops it by itself",
                              self.where, why, self._written_w)
            return
        finally:
            link.close()
        self._log.info("battery at %s left idle: %s", self.where, detail)

    def _report_failure(self, at_s: float, why: str) -> None:
        verdict = self._tracker.failure(at_s, why)
        self._report(at_s, False, verdict.trusted, None, None, None, verdict.reason)

    def _report(
        self, at_s: float, online: bool, trusted: bool, soc_pct: float | None, power_w: float | None,
        state: str | None, reason: str,
    ) -> None:
        before = self._status
        since = at_s
        if before is not None and (before.online, before.trusted) == (online, trusted):
            since = before.since
        status = BatteryStatus(online, trusted, soc_pct, power_w, state, reason, since)
        self._status = status
        self._log_change(before, status)
        self._on_reading(status)

    def _log_change(self, before: BatteryStatus | None, now: BatteryStatus) -> None:
        """Log changes of link and trust (and a new reason for either), never a repeated state."""
        if not now.online:
            if before is None or before.online or before.reason != now.reason:
                self._log_fault(
                    "offline", logging.WARNING, "battery at %s offline: %s; retrying every %s s",
                    self.where, now.reason, self.retry_s,
                )
            self._logged_distrust = None
            return
        if before is not None and not before.online:
            self._log_fault("back", logging.INFO, "battery at %s answers again", self.where)
        if now.trusted:
            if before is None or not before.trusted:
                self._log_fault(
                    "trusted", logging.INFO, "battery at %s trusted: SoC %s %%, power %s W, %s (%s)",
                    self.where, now.soc_pct, now.power_w, now.state, now.reason,
                )
            self._logged_distrust = None
        elif self._tracker.good_in_row == 0 and now.reason != self._logged_distrust:
            self._log_fault("distrust", logging.WARNING, "battery at %s not trusted: %s", self.where, now.reason)
            self._logged_distrust = now.reason

    def _log_fault(self, kind: str, level: int, message: str, *args: object) -> None:
        """Log a line of this kind at most once per FAULT_LOG_EVERY_S, saying how many were held back since."""
        self._fault_lines.log(self._log, level, self.where, kind, message, *args)


class RegisterBattery(ModbusBattery):
    """A battery read (soc_pct, power_w) and steered (setpoint_w, when present) through a register table.

    Values are raw * scale in the register's unit (kW becomes W); power is positive when the battery
    discharges. The state is told from the power's sign. Such a battery has no standard revert
    timeout: the setpoint is refreshed every poll, and what the battery does when that stops is up
    to its own watchdog.
    """

    def __init__(self, host: str, port: int, unit_id: int, ratings: BatteryRatings,
                 registers: Sequence[RegisterConfig], **options) -> None:
        super().__init__(host, port, unit_id, ratings, **options)
        self.registers = {r.name: r for r in registers}
        missing = [n for n in ("soc_pct", "power_w") if n not in self.registers]
        if missing:
            raise ValueError(f"the register table needs {' and '.join(missing)}")
        self._described = False

    async def _start(self, link: ModbusLink) -> None:
        if not self._described:
            table = "; ".join(
                f"{r.name} {r.table} {r.address} {r.type} x{r.scale:g} {r.unit}" for r in self.registers.values()
            )
            self._log.info("battery at %s: register table %s", self.where, table)
            self._described = True

    async def _value(self, link: ModbusLink, reg: RegisterConfig) -> float:
        regs = await link.read(reg.address, register_count(reg.type), reg.table)
        return register_value(decode_register(regs, reg.type, reg.word_order), reg.scale, reg.unit)

    async def _sample(self, link: ModbusLink) -> Sample:
        soc_pct = await self._value(link, self.registers["soc_pct"])
        power_w = await self._value(link, self.registers["power_w"])
        state = "discharging" if power_w > 0 else "charging" if power_w < 0 else "idle"
        return Sample(soc_pct, power_w, state)

    async def _steer(self, link: ModbusLink, setpoint_w: float, sample: Sample | None) -> str:
        reg = self.registers.get("setpoint_w")
        if reg is None:
            raise CannotSteer("the register table has no setpoint_w: the battery can be read but not steered")
        raw = register_raw(setpoint_w, reg.scale, reg.unit)
        try:
            regs = encode_register(raw, reg.type, reg.word_order)
        except ValueError as exc:
            raise CannotSteer(f"setpoint_w register {reg.address}: {exc}") from None
        await link.write(reg.address, regs)
        return f"register {reg.address} = {raw:g} ({reg.type}, x{reg.scale:g} {reg.unit})"

    async def _release(self, link: ModbusLink) -> str:
        return await self._steer(link, 0.0, None)

