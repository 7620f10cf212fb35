"""Reads a SunSpec battery (models 1, 802 or 713/714, 124) over Modbus TCP and reports whether to trust it.

The shell around `battery.trust`: it finds the model chain, polls SoC, power and state under a
timeout, and hands every result (or the link failure) to `on_reading` as a `BatteryStatus`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from battery.sunspec_map import (
    BASE_ADDRESSES,
    END_MODEL_ID,
    SUNS_MARKER,
    Layout,
    ModelBlock,
    PointAddr,
    SunSpecMapError,
    get_point,
    load_model_def,
)
from battery.trust import BatteryRatings, Reading, TrustTracker

log = logging.getLogger(__name__)

ILLEGAL_DATA_ADDRESS = 2
MAX_READ_REGS = 125  # Modbus limit for one read of holding registers
MAX_CHAIN_MODELS = 200  # a longer chain means we are walking garbage
MAX_RETRY_S = 10.0  # control.md: an untrusted battery is retried at least every 10 s
# SunSpec 802 describes W only as "Total power flowing to/from the battery bank". Batteries and
# integrations (evcc reads 802 W as-is) report discharging as positive, like the inverter models
# count power out of the device; our convention is the same, so the sign is kept. A vendor that
# counts the other way gets -1 here, keyed by model 1's Mn.
POWER_SIGN_BY_MANUFACTURER: Mapping[str, int] = {}
_EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure",
    5: "acknowledge", 6: "device busy", 10: "gateway path unavailable", 11: "gateway target failed to respond",
}


class BatteryLinkError(Exception):
    """The battery could not be read: no answer, a Modbus exception, a refused connection or a bad map."""


class BatteryExceptionAnswer(BatteryLinkError):
    """The battery answered a request with a Modbus exception `code`."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class _Undecodable(Exception):
    """The battery answered, but with registers that do not decode (a scale factor out of range)."""


@dataclass(frozen=True)
class BatteryStatus:
    """One poll's result: link and trust, SoC (%), power (W, positive = discharging), state and why.

    `since` is the loop time (s) at which the current combination of `online` and `trusted` began.
    """

    online: bool
    trusted: bool
    soc_pct: float | None
    power_w: float | None
    state: str | None
    reason: str
    since: float


@dataclass(frozen=True)
class _Identity:
    manufacturer: str
    model: str
    serial: str


@dataclass(frozen=True)
class _Map:
    """Where the points we poll live: one single-model layout per model found."""

    models: Mapping[int, Layout]

    def has(self, model_id: int) -> bool:
        return model_id in self.models


@lru_cache(maxsize=None)
def _symbols(model_id: int, point: str) -> Mapping[int, str]:
    """Enum symbols of a top-level point, from pysunspec2's JSON definition."""
    path = resources.files("sunspec2") / "models" / "json" / f"model_{model_id}.json"
    group = json.loads(path.read_text(encoding="utf-8"))["group"]
    for p in group.get("points", []):
        if p["name"] == point:
            return {int(s["value"]): s["name"] for s in p.get("symbols", [])}
    raise SunSpecMapError(f"model {model_id} has no point {point!r}")


def _state_name(model_id: int, point: str, value: int | None) -> str | None:
    if value is None:
        return None
    return _symbols(model_id, point).get(value, f"vendor state {value}")


def _model_layout(block: ModelBlock) -> Layout:
    """A layout of one model starting at its ID register, for decoding that model's registers alone.

    Points beyond the model's L are left out (older devices carry shorter models); asking for one
    raises KeyError.
    """
    mdef = load_model_def(block.model_id)
    points = {
        (block.model_id, p.name): PointAddr(
            block.model_id, p.name, block.address + p.offset, p.type, p.size, p.sf, p.writable
        )
        for p in mdef.points
        if p.offset + p.size <= block.length + 2
    }
    return Layout(block.address, (block,), points, block.address + block.length + 2)


class SunSpecBattery:
    """A SunSpec battery on Modbus TCP; `run` polls it until cancelled and reports each poll.

    Every network wait is bounded by `timeout_s`; after a failure the link is rebuilt every
    `retry_s` seconds, and `on_reading` hears of the failure at once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        unit_id: int,
        ratings: BatteryRatings,
        *,
        on_reading: Callable[[BatteryStatus], None],
        timeout_s: float = 1.0,
        poll_s: float = 1.0,
        retry_s: float = 2.0,
        stuck_after_s: float = 900.0,
    ) -> None:
        if not 0 < timeout_s <= MAX_RETRY_S:
            raise ValueError(f"timeout_s must be within (0, {MAX_RETRY_S}] s, got {timeout_s!r}")
        if not 0 < poll_s <= MAX_RETRY_S:
            raise ValueError(f"poll_s must be within (0, {MAX_RETRY_S}] s, got {poll_s!r}")
        if not 0 < retry_s <= MAX_RETRY_S:
            raise ValueError(f"retry_s must be within (0, {MAX_RETRY_S}] s, got {retry_s!r}")
        self.host, self.port, self.unit_id = host, port, unit_id
        self.ratings = ratings
        self.timeout_s, self.poll_s, self.retry_s = timeout_s, poll_s, retry_s
        self._on_reading = on_reading
        self._tracker = TrustTracker(ratings, stuck_after_s=stuck_after_s)
        self._setpoint_changed = False
        self._status: BatteryStatus | None = None
        self._identity: _Identity | None = None
        self._logged_distrust: str | None = None

    @property
    def where(self) -> str:
        """The battery's address as a technician would type it: host:port unit N."""
        return f"{self.host}:{self.port} unit {self.unit_id}"

    @property
    def status(self) -> BatteryStatus | None:
        """The last status reported (None before the first poll)."""
        return self._status

    def note_setpoint_change(self) -> None:
        """The setpoint now asks the battery for a change: the next reading is judged with that in mind."""
        self._setpoint_changed = True

    async def run(self) -> None:
        """Connect, find the models and poll until cancelled; failures are reported, then retried."""
        loop = asyncio.get_running_loop()
        while True:
            # our own asyncio timeout is the one that counts; pymodbus's only backs it up
            client = AsyncModbusTcpClient(
                self.host, port=self.port, timeout=2 * self.timeout_s, retries=0, reconnect_delay=0
            )
            try:
                await self._connect(client)
                sunspec_map = await self._discover(client)
                await self._poll_forever(client, sunspec_map)
            except BatteryLinkError as exc:
                self._report_failure(loop.time(), str(exc))
            finally:
                client.close()
            await asyncio.sleep(self.retry_s)

    async def _connect(self, client: AsyncModbusTcpClient) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                connected = await client.connect()
        except TimeoutError:
            raise BatteryLinkError(f"no connection to {self.host}:{self.port} within {self.timeout_s} s") from None
        except OSError as exc:
            raise BatteryLinkError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        if not connected:
            raise BatteryLinkError(f"cannot connect to {self.host}:{self.port}: refused or unreachable")

    async def _read(self, client: AsyncModbusTcpClient, address: int, count: int) -> list[int]:
        """`count` holding registers from `address`, in reads of at most 125, all under one timeout."""
        last = address + count - 1
        regs: list[int] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                for start in range(address, address + count, MAX_READ_REGS):
                    n = min(MAX_READ_REGS, address + count - start)
                    rr = await client.read_holding_registers(start, count=n, device_id=self.unit_id)
                    if rr.isError():
                        code = getattr(rr, "exception_code", None)
                        name = _EXCEPTION_NAMES.get(code, "unknown") if code is not None else "error"
                        # the registers matter for an address or value complaint, not for a device failure
                        regs_asked = f" to a read of {start}-{start + n - 1}" if code in (2, 3) else ""
                        raise BatteryExceptionAnswer(
                            f"{self.where} answered Modbus exception {code} ({name}){regs_asked}", code
                        )
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
                f"no valid answer from {self.where} to a read of registers {address}-{last}: {exc}"
            ) from None
        return regs

    async def _discover(self, client: AsyncModbusTcpClient) -> _Map:
        """Find `SunS`, walk the model chain and read model 1's identity."""
        base = await self._find_marker(client)
        blocks: dict[int, ModelBlock] = {}
        address = base + 2
        for _ in range(MAX_CHAIN_MODELS):
            model_id, length = await self._read(client, address, 2)
            if model_id == END_MODEL_ID:
                break
            blocks.setdefault(model_id, ModelBlock(model_id, address, length))
            address += length + 2
            if address > 0xFFFF:
                raise BatteryLinkError(f"{self.where}: the SunSpec model chain from {base} runs past register 65535")
        else:
            raise BatteryLinkError(f"{self.where}: no end of the SunSpec model chain after {MAX_CHAIN_MODELS} models")
        wanted = [m for m in (1, 802, 713, 714, 124) if m in blocks]
        if 802 not in blocks and 713 not in blocks:
            found = ", ".join(str(m) for m in blocks) or "none"
            raise BatteryLinkError(
                f"{self.where} has no SunSpec battery model (802 or 713) at base {base}; models found: {found}"
            )
        try:
            layouts = {m: _model_layout(blocks[m]) for m in wanted}
        except SunSpecMapError as exc:
            raise BatteryLinkError(f"{self.where}: {exc}") from None
        sunspec_map = _Map(layouts)
        identity = await self._read_identity(client, sunspec_map)
        if identity != self._identity:
            used = ", ".join(str(m) for m in wanted if m != 714 or 802 not in blocks)
            log.info(
                "battery: %s %s SN %s at %s:%s, models %s",
                identity.manufacturer, identity.model, identity.serial, self.host, self.port, used,
            )
            if 124 not in blocks:
                log.warning("battery at %s has no model 124: it can be read but not steered", self.where)
            self._identity = identity
        return sunspec_map

    async def _find_marker(self, client: AsyncModbusTcpClient) -> int:
        for base in BASE_ADDRESSES:
            try:
                regs = await self._read(client, base, 2)
            except BatteryExceptionAnswer as exc:
                if exc.code == ILLEGAL_DATA_ADDRESS:
                    continue  # nothing mapped there: try the next base
                raise
            if tuple(regs) == SUNS_MARKER:
                return base
        where = ", ".join(str(b) for b in BASE_ADDRESSES)
        raise BatteryLinkError(f"no SunSpec marker 'SunS' at {where} on {self.where}")

    async def _read_identity(self, client: AsyncModbusTcpClient, sunspec_map: _Map) -> _Identity:
        if not sunspec_map.has(1):
            return _Identity("?", "?", "?")
        image = await self._read_model(client, sunspec_map.models[1])
        layout = sunspec_map.models[1]
        values = [
            get_point(image, layout, 1, name) if (1, name) in layout.points else None for name in ("Mn", "Md", "SN")
        ]
        return _Identity(*(str(v) if v is not None else "?" for v in values))

    async def _read_model(self, client: AsyncModbusTcpClient, layout: Layout) -> list[int]:
        block = layout.models[0]
        return await self._read(client, block.address, block.length + 2)

    async def _poll_forever(self, client: AsyncModbusTcpClient, sunspec_map: _Map) -> None:
        loop = asyncio.get_running_loop()
        sign = POWER_SIGN_BY_MANUFACTURER.get(self._identity.manufacturer if self._identity else "", 1)
        next_at = loop.time()
        while True:
            try:
                soc_pct, power_w, state = await self._read_values(client, sunspec_map)
            except _Undecodable as exc:
                at_s = loop.time()
                verdict = self._tracker.failure(at_s, str(exc))
                self._report(at_s, True, verdict.trusted, None, None, None, verdict.reason)
            else:
                soc_pct = float(soc_pct) if soc_pct is not None else None
                power_w = float(sign * power_w) if power_w is not None else None
                at_s = loop.time()
                changed, self._setpoint_changed = self._setpoint_changed, False
                verdict = self._tracker.observe(Reading(at_s, soc_pct, power_w, state), changed)
                self._report(at_s, True, verdict.trusted, soc_pct, power_w, state, verdict.reason)
            next_at = max(next_at + self.poll_s, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async def _read_values(
        self, client: AsyncModbusTcpClient, sunspec_map: _Map
    ) -> tuple[float | None, float | None, str | None]:
        """SoC (%), power (W, as the battery counts it) and state from 802, or from 713 and 714."""
        try:
            if sunspec_map.has(802):
                layout = sunspec_map.models[802]
                image = await self._read_model(client, layout)
                soc = get_point(image, layout, 802, "SoC")
                power = get_point(image, layout, 802, "W")
                state = _state_name(802, "State", get_point(image, layout, 802, "State"))
                return soc, power, state
            layout = sunspec_map.models[713]
            image = await self._read_model(client, layout)
            soc = get_point(image, layout, 713, "SoC")
            state = _state_name(713, "Sta", get_point(image, layout, 713, "Sta"))
            power = None
            if sunspec_map.has(714):
                dc = sunspec_map.models[714]
                power = get_point(await self._read_model(client, dc), dc, 714, "DCW")
            return soc, power, state
        except (SunSpecMapError, KeyError) as exc:
            raise _Undecodable(f"{self.where} reports values that cannot be decoded: {exc}") from None

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
                log.warning("battery at %s offline: %s; retrying every %s s", self.where, now.reason, self.retry_s)
            self._logged_distrust = None
            return
        if before is not None and not before.online:
            log.info("battery at %s answers again", self.where)
        if now.trusted:
            if before is None or not before.trusted:
                log.info(
                    "battery at %s trusted: SoC %s %%, power %s W, %s (%s)",
                    self.where, now.soc_pct, now.power_w, now.state, now.reason,
                )
            self._logged_distrust = None
        elif self._tracker.good_in_row == 0 and now.reason != self._logged_distrust:
            log.warning("battery at %s not trusted: %s", self.where, now.reason)
            self._logged_distrust = now.reason
