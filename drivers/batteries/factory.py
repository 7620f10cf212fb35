"""Builds the battery driver a `[battery]` config section asks for, behind the `BatteryDriver` Protocol.

Every preset takes `poll_s`, `timeout_s`, `stuck_after_s` and `revert_timeout_s` from the config.
For `victron` a unit id left at the schema's default of 1 becomes the GX's system unit 100: on a GX
unit 1 is a VE.Can device instance that never serves the system registers (100, or 0 on some
firmware, does), so a 1 there can only be the default carried over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from battery.trust import BatteryRatings
from config.schema_devices import BatteryConfig
from drivers.batteries.registers import RegisterBattery
from drivers.batteries.sunspec import SunSpecBattery
from drivers.batteries.victron import SYSTEM_UNIT_ID, VictronBattery
from drivers.contract.devices import BatteryDriver, BatteryStatus

log = logging.getLogger("laadplein.battery")

SCHEMA_DEFAULT_UNIT_ID = 1


def timings(cfg: BatteryConfig) -> dict[str, float | int]:
    """The poll and timeout settings every preset takes from the config."""
    return {
        "poll_s": cfg.poll_s, "timeout_s": cfg.timeout_s, "stuck_after_s": cfg.stuck_after_s,
        "revert_timeout_s": cfg.revert_timeout_s,
    }


def victron_unit_id(cfg: BatteryConfig) -> int:
    """The GX unit id to use: the config's, or the system unit 100 where the schema default of 1 was left."""
    return SYSTEM_UNIT_ID if cfg.unit_id == SCHEMA_DEFAULT_UNIT_ID else cfg.unit_id


SimulatedFactory = Callable[[BatteryConfig, Callable[[BatteryStatus], None]], BatteryDriver]


def make_battery(
    cfg: BatteryConfig, on_reading: Callable[[BatteryStatus], None], *, simulated: SimulatedFactory | None = None
) -> BatteryDriver:
    """The driver for `cfg.driver` (sunspec, victron, registers, simulated), reporting through `on_reading`.

    The `simulated` preset is built by `simulated` (the composition root passes
    `drivers.sim.in_process.SimulatedBattery`): no real driver depends on a simulator.
    """
    ratings = BatteryRatings(cfg.max_charge_w, cfg.max_discharge_w)
    if cfg.driver == "sunspec":
        return SunSpecBattery(cfg.host, cfg.port, cfg.unit_id, ratings, on_reading=on_reading, **timings(cfg))
    if cfg.driver == "victron":
        unit_id = victron_unit_id(cfg)
        if unit_id != cfg.unit_id:
            log.info("battery: Victron GX, unit_id %s taken as the GX's system unit %s", cfg.unit_id, unit_id)
        return VictronBattery(
            cfg.host, cfg.port, unit_id, ratings, setpoint_register=cfg.setpoint_register,
            on_reading=on_reading, **timings(cfg),
        )
    if cfg.driver == "registers":
        return RegisterBattery(
            cfg.host, cfg.port, cfg.unit_id, ratings, cfg.registers, on_reading=on_reading, **timings(cfg)
        )
    if cfg.driver == "simulated":
        if simulated is None:
            raise ValueError('battery driver "simulated" is for the demo; this program cannot simulate a battery')
        return simulated(cfg, on_reading)
    raise ValueError(f"unknown battery driver {cfg.driver!r}")

