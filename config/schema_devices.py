"""Config sections for the devices behind the grid connection: the buffer battery and the grid meter.

Split from `config.schema` (which re-exports them) because each preset brings its own keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.issues import CrossCheckError, field_value, number_text

__all__ = [
    "BatteryConfig",
    "GridMeterConfig",
    "RegisterConfig",
    "ReserveWindow",
    "battery_issues",
    "minutes_of_day",
]

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
REGISTER_NAMES = ("soc_pct", "power_w", "setpoint_w")
_REGISTER_UNITS = {"soc_pct": ("%",), "power_w": ("W", "kW"), "setpoint_w": ("W", "kW")}


def minutes_of_day(hhmm: str) -> int:
    """Minutes after local midnight of an "HH:MM" time (00:00-23:59)."""
    match = _HHMM.match(hhmm)
    if match is None:
        raise ValueError(f"{hhmm!r} is not a time of day as HH:MM (00:00-23:59)")
    return int(match[1]) * 60 + int(match[2])


class RegisterConfig(BaseModel):
    """One register of the `registers` battery preset: what it holds, where, how it is encoded and scaled.

    The value in `unit` is raw * scale; power is positive when the battery discharges unless `scale`
    is negative.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: Literal["soc_pct", "power_w", "setpoint_w"]
    address: int = Field(ge=0, le=65535)
    type: Literal["int16", "uint16", "int32", "uint32", "float32"] = "int16"
    scale: float = 1.0
    unit: Literal["%", "W", "kW"]
    table: Literal["holding", "input"] = "holding"
    word_order: Literal["big", "little"] = "big"

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("scale must not be 0")
        return value

    @model_validator(mode="after")
    def _unit_fits(self) -> RegisterConfig:
        allowed = _REGISTER_UNITS[self.name]
        if self.unit not in allowed:
            raise ValueError(f"unit {self.unit!r} does not fit {self.name} (use {' or '.join(allowed)})")
        if self.name == "setpoint_w" and self.table != "holding":
            raise ValueError("setpoint_w is written, so it must be a holding register")
        return self


class ReserveWindow(BaseModel):
    """A time of day (local, from-to; may pass midnight) in which the battery keeps `soc_pct` for later."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    start: str = Field(alias="from")
    end: str = Field(alias="to")
    soc_pct: float = Field(ge=0, le=100)

    @field_validator("start", "end")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        minutes_of_day(value)
        return value


class BatteryConfig(BaseModel):
    """The buffer battery: Modbus endpoint, capacity in kWh, power ratings in W, state-of-charge window in %."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    driver: Literal["sunspec", "victron", "registers", "simulated"]
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255)
    capacity_kwh: float = Field(gt=0, le=100_000)
    max_charge_w: float = Field(ge=0, le=10_000_000)
    max_discharge_w: float = Field(ge=0, le=10_000_000)
    soc_min_pct: float = Field(10, ge=0, le=100)
    soc_max_pct: float = Field(95, ge=0, le=100)
    revert_timeout_s: int = Field(60, ge=10, le=3600)
    stuck_after_s: int = Field(900, ge=60, le=86400)
    poll_s: float = Field(1.0, ge=0.2, le=10)
    timeout_s: float = Field(1.0, ge=0.1, le=10)
    setpoint_register: Literal[2716, 2700] = 2716
    registers: list[RegisterConfig] = Field(default_factory=list)
    reserve: list[ReserveWindow] = Field(default_factory=list)

    @model_validator(mode="after")
    def _soc_window(self) -> BatteryConfig:
        issues = battery_issues(self.model_dump(by_alias=True))
        if issues:
            raise CrossCheckError(issues)
        return self


class GridMeterConfig(BaseModel):
    """The meter at the grid connection (optional): an SDM630 on Modbus TCP, or a DSMR P1 port (serial or TCP).

    `margin_a` (A per phase) is kept free while the meter is missing and the load behind the fuse is
    estimated from the chargers' and the battery's own readings.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    driver: Literal["sdm630", "p1"]
    host: str | None = Field(None, min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255)
    serial_port: str | None = Field(None, min_length=1)
    baudrate: int = Field(115200, ge=300, le=921600)
    # 2.2 and Q3D telegrams carry no current per phase, which the fuse needs
    dsmr_version: Literal["4", "5", "5B", "5L", "5S"] = "5"
    poll_s: float = Field(1.0, ge=0.2, le=60)
    timeout_s: float = Field(1.0, ge=0.1, le=10)
    margin_a: float = Field(2, ge=0, le=1000)

    @model_validator(mode="after")
    def _where(self) -> GridMeterConfig:
        if self.driver == "sdm630":
            if self.serial_port is not None:
                raise ValueError("serial_port is for driver \"p1\"; an SDM630 is read over Modbus TCP (host, port)")
            if self.host is None:
                raise ValueError("driver \"sdm630\" needs host (and port, default 502)")
        elif (self.serial_port is None) == (self.host is None):
            raise ValueError("driver \"p1\" needs either serial_port (e.g. \"/dev/ttyUSB0\") or host and port")
        elif self.host is not None and self.port is None:
            raise ValueError("driver \"p1\" over TCP needs port")
        return self

    @property
    def tcp_port(self) -> int:
        """The TCP port to use (502 for an SDM630 when none is given)."""
        return self.port if self.port is not None else 502


def battery_issues(battery: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field problems of a raw (or dumped) [battery] table, each with its key path in the table."""
    issues: list[tuple[tuple[str | int, ...], str]] = []
    soc_min_pct = field_value(BatteryConfig, "soc_min_pct", battery)
    soc_max_pct = field_value(BatteryConfig, "soc_max_pct", battery)
    if soc_min_pct is not None and soc_max_pct is not None and soc_min_pct >= soc_max_pct:
        issues.append((("soc_min_pct",), f"{number_text(soc_min_pct)} must be below soc_max_pct ({number_text(soc_max_pct)})"))
    registers = battery.get("registers")
    if battery.get("driver") == "registers":
        names = {r.get("name") for r in registers if isinstance(r, Mapping)} if isinstance(registers, list | tuple) else set()
        missing = [n for n in ("soc_pct", "power_w") if n not in names]
        if missing:
            issues.append(
                (("registers",), f"driver \"registers\" needs [[battery.registers]] for {' and '.join(missing)}")
            )
    if isinstance(registers, list | tuple):
        seen: dict[str, int] = {}
        for index, r in enumerate(registers):
            if isinstance(r, Mapping) and isinstance(r.get("name"), str):
                if r["name"] in seen:
                    issues.append((("registers", index, "name"), f"{r['name']} is given twice (also registers.{seen[r['name']]})"))
                seen.setdefault(r["name"], index)
    reserve = battery.get("reserve")
    if isinstance(reserve, list | tuple) and soc_max_pct is not None:
        for index, w in enumerate(reserve):
            if isinstance(w, Mapping) and isinstance(w.get("soc_pct"), int | float) and w["soc_pct"] > soc_max_pct:
                issues.append(
                    (("reserve", index, "soc_pct"), f"{number_text(w['soc_pct'])} is above soc_max_pct ({number_text(soc_max_pct)})")
                )
    return issues
