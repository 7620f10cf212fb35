"""Reads and steers a SunSpec battery (models 1, 802 or 713/714, 124) over Modbus TCP.

The SunSpec preset of the Modbus battery shell (`drivers.batteries.registers`): it finds the model
chain, polls SoC, power and state, and after every poll writes the held setpoint through model 124
the way the maker reads it (`battery.vendors`), revert timeout included, so a battery whose
controller goes silent falls back by itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

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
from battery.trust import BatteryRatings
from battery.vendors import idle_points, storage_points, storage_writes, vendor_for
from drivers.batteries.registers import (
    BatteryExceptionAnswer,
    BatteryLinkError,
    CannotSteer,
    ModbusBattery,
    ModbusLink,
    Sample,
    Undecodable,
)
from drivers.contract.devices import BatteryStatus

__all__ = ["BatteryExceptionAnswer", "BatteryLinkError", "SunSpecBattery"]

log = logging.getLogger("laadplein.battery")

ILLEGAL_DATA_ADDRESS = 2
MAX_CHAIN_MODELS = 200  # a longer chain means we are walking garbage
MAX_REVERT_S = 0xFFFE  # InOutWRte_RvrtTms is a uint16 and 0xFFFF means "not implemented"


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


class SunSpecBattery(ModbusBattery):
    """A SunSpec battery on Modbus TCP; `run` polls it until cancelled, reports each poll and writes the setpoint.

    Every network wait is bounded by `timeout_s`; after a failure (of a read or a write) the link is
    rebuilt every `retry_s` seconds, and `on_reading` hears of the failure at once.
    `revert_timeout_s` (s) is written with every command (InOutWRte_RvrtTms): the battery drops
    the command by itself when it is not renewed within that time.
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
        revert_timeout_s: int = 60,
    ) -> None:
        if not isinstance(revert_timeout_s, int) or not 0 < revert_timeout_s <= MAX_REVERT_S:
            raise ValueError(
                f"revert_timeout_s must be a whole number within 1-{MAX_REVERT_S} s, got {revert_timeout_s!r}"
            )
        super().__init__(
            host, port, unit_id, ratings, on_reading=on_reading, timeout_s=timeout_s, poll_s=poll_s,
            retry_s=retry_s, stuck_after_s=stuck_after_s, revert_timeout_s=revert_timeout_s, logger=log,
        )
        self._identity: _Identity | None = None
        self._map = _Map({})
        self._vendor = vendor_for("")
        self._w_discha_max_w: float | None = None  # 802 WDisChaRteMax: what OutWRte is a share of

    async def _start(self, link: ModbusLink) -> None:
        self._map = await self._discover(link)
        self._vendor = vendor_for(self._identity.manufacturer if self._identity else "")

    async def _discover(self, link: ModbusLink) -> _Map:
        """Find `SunS`, walk the model chain and read model 1's identity."""
        base = await self._find_marker(link)
        blocks: dict[int, ModelBlock] = {}
        address = base + 2
        for _ in range(MAX_CHAIN_MODELS):
            model_id, length = await link.read(address, 2)
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
        identity = await self._read_identity(link, sunspec_map)
        if identity != self._identity:
            used = ", ".join(str(m) for m in wanted if m != 714 or 802 not in blocks)
            log.info(
                "battery: %s %s SN %s at %s:%s, models %s",
                identity.manufacturer, identity.model, identity.serial, self.host, self.port, used,
            )
            if 124 not in blocks:
                log.warning("battery at %s has no model 124: it can be read but not steered", self.where)
            elif (storage := vendor_for(identity.manufacturer).storage) != "plain":
                log.info("battery at %s: model 124 written the %s way", self.where, storage)
            self._identity = identity
        return sunspec_map

    async def _find_marker(self, link: ModbusLink) -> int:
        for base in BASE_ADDRESSES:
            try:
                regs = await link.read(base, 2)
            except BatteryExceptionAnswer as exc:
                if exc.code == ILLEGAL_DATA_ADDRESS:
                    continue  # nothing mapped there: try the next base
                raise
            if tuple(regs) == SUNS_MARKER:
                return base
        where = ", ".join(str(b) for b in BASE_ADDRESSES)
        raise BatteryLinkError(f"no SunSpec marker 'SunS' at {where} on {self.where}")

    async def _read_identity(self, link: ModbusLink, sunspec_map: _Map) -> _Identity:
        if not sunspec_map.has(1):
            return _Identity("?", "?", "?")
        image = await self._read_model(link, sunspec_map.models[1])
        layout = sunspec_map.models[1]
        values = [
            get_point(image, layout, 1, name) if (1, name) in layout.points else None for name in ("Mn", "Md", "SN")
        ]
        return _Identity(*(str(v) if v is not None else "?" for v in values))

    async def _read_model(self, link: ModbusLink, layout: Layout) -> list[int]:
        block = layout.models[0]
        return await link.read(block.address, block.length + 2)

    async def _sample(self, link: ModbusLink) -> Sample:
        soc_pct, power_w, state = await self._read_values(link)
        return Sample(
            float(soc_pct) if soc_pct is not None else None,
            float(self._vendor.power_sign * power_w) if power_w is not None else None,
            state,
        )

    async def _read_values(self, link: ModbusLink) -> tuple[float | None, float | None, str | None]:
        """SoC (%), power (W, as the battery counts it) and state from 802, or from 713 and 714."""
        sunspec_map = self._map
        try:
            if sunspec_map.has(802):
                layout = sunspec_map.models[802]
                image = await self._read_model(link, layout)
                soc = get_point(image, layout, 802, "SoC")
                power = get_point(image, layout, 802, "W")
                state = _state_name(802, "State", get_point(image, layout, 802, "State"))
                if (802, "WDisChaRteMax") in layout.points:
                    self._w_discha_max_w = get_point(image, layout, 802, "WDisChaRteMax")
                return soc, power, state
            layout = sunspec_map.models[713]
            image = await self._read_model(link, layout)
            soc = get_point(image, layout, 713, "SoC")
            state = _state_name(713, "Sta", get_point(image, layout, 713, "Sta"))
            power = None
            if sunspec_map.has(714):
                dc = sunspec_map.models[714]
                power = get_point(await self._read_model(link, dc), dc, 714, "DCW")
            return soc, power, state
        except (SunSpecMapError, KeyError) as exc:
            raise Undecodable(f"{self.where} reports values that cannot be decoded: {exc}") from None

    async def _write_points(self, link: ModbusLink, points_for: Callable[[float, float], dict]) -> dict:
        """Read model 124, turn `points_for(WChaMax, discharge maximum)` into registers and write them."""
        if not self._map.has(124):
            raise CannotSteer("it has no model 124")
        layout = self._map.models[124]
        image = await self._read_model(link, layout)
        try:
            w_cha_max_w = get_point(image, layout, 124, "WChaMax")
            if w_cha_max_w is None:
                raise SunSpecMapError("WChaMax is not implemented")
            # without 802's discharge rating, OutWRte counts in % of WChaMax (as Fronius has it)
            w_discha_max_w = self._w_discha_max_w if self._w_discha_max_w is not None else w_cha_max_w
            points = points_for(w_cha_max_w, w_discha_max_w)
            writes = storage_writes(layout, image, points)
        except (SunSpecMapError, KeyError) as exc:
            raise CannotSteer(f"model 124: {exc}") from None
        for address, regs in writes:
            await link.write(address, regs)
        return points

    async def _steer(self, link: ModbusLink, setpoint_w: float, sample: Sample | None) -> str:
        def points_for(w_cha_max_w: float, w_discha_max_w: float) -> dict:
            return storage_points(self._vendor, setpoint_w, w_cha_max_w, w_discha_max_w, self.revert_timeout_s)

        points = await self._write_points(link, points_for)
        return (
            f"StorCtl_Mod {points['StorCtl_Mod']}, OutWRte {points['OutWRte']:.1f} %, InWRte {points['InWRte']:.1f} %,"
            f" revert after {self.revert_timeout_s} s"
        )

    async def _release(self, link: ModbusLink) -> str:
        await self._write_points(link, lambda cha_w, discha_w: idle_points(self.revert_timeout_s))
        return "StorCtl_Mod 0, rates 0 %: back under its own control"
