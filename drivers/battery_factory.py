"""Builds the battery driver a `[battery]` config section asks for, behind the `BatteryDriver` Protocol.

Every preset takes `poll_s`, `timeout_s`, `stuck_after_s` and `revert_timeout_s` from the config.
For `victron` a unit id left at the schema's default of 1 becomes the GX's system unit 100: on a GX
unit 1 is a VE.Can device instance that never serves the system registers (100, or 0 on some
firmware, does), so a 1 there can only be the default carried over.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from battery.trust import BatteryRatings
from config.schema_devices import BatteryConfig
from drivers.battery_registers import BatteryStatus, RegisterBattery
from drivers.battery_sunspec import SunSpecBattery
from drivers.battery_victron import SYSTEM_UNIT_ID, VictronBattery
from drivers.devices import BatteryDriver
from drivers.sim_battery import SimBattery

log = logging.getLogger(__name__)

SCHEMA_DEFAULT_UNIT_ID = 1
SIM_START_TIMEOUT_S = 10.0
LOOPBACK = "127.0.0.1"


def _timings(cfg: BatteryConfig) -> dict[str, float | int]:
    return {
        "poll_s": cfg.poll_s, "timeout_s": cfg.timeout_s, "stuck_after_s": cfg.stuck_after_s,
        "revert_timeout_s": cfg.revert_timeout_s,
    }


def victron_unit_id(cfg: BatteryConfig) -> int:
    """The GX unit id to use: the config's, or the system unit 100 where the schema default of 1 was left."""
    return SYSTEM_UNIT_ID if cfg.unit_id == SCHEMA_DEFAULT_UNIT_ID else cfg.unit_id


def make_battery(cfg: BatteryConfig, on_reading: Callable[[BatteryStatus], None]) -> BatteryDriver:
    """The driver for `cfg.driver` (sunspec, victron, registers, simulated), reporting through `on_reading`."""
    ratings = BatteryRatings(cfg.max_charge_w, cfg.max_discharge_w)
    if cfg.driver == "sunspec":
        return SunSpecBattery(cfg.host, cfg.port, cfg.unit_id, ratings, on_reading=on_reading, **_timings(cfg))
    if cfg.driver == "victron":
        unit_id = victron_unit_id(cfg)
        if unit_id != cfg.unit_id:
            log.info("battery: Victron GX, unit_id %s taken as the GX's system unit %s", cfg.unit_id, unit_id)
        return VictronBattery(
            cfg.host, cfg.port, unit_id, ratings, setpoint_register=cfg.setpoint_register,
            on_reading=on_reading, **_timings(cfg),
        )
    if cfg.driver == "registers":
        return RegisterBattery(
            cfg.host, cfg.port, cfg.unit_id, ratings, cfg.registers, on_reading=on_reading, **_timings(cfg)
        )
    if cfg.driver == "simulated":
        return SimulatedBattery(cfg, on_reading)
    raise ValueError(f"unknown battery driver {cfg.driver!r}")


class SimulatedBattery:
    """The `simulated` preset: a simulated SunSpec battery on a loopback port, read and steered like a real one.

    For the demo only. The simulated battery lives as long as `run`; a setpoint commanded before
    the reader exists is handed to it when it starts.
    """

    def __init__(self, cfg: BatteryConfig, on_reading: Callable[[BatteryStatus], None]) -> None:
        self.cfg = cfg
        self._on_reading = on_reading
        self._ratings = BatteryRatings(cfg.max_charge_w, cfg.max_discharge_w)
        self._reader: SunSpecBattery | None = None
        self._setpoint_w: float | None = None

    @property
    def where(self) -> str:
        """Where the simulated battery listens, once it does."""
        if self._reader is None:
            return "simulated in process (not started)"
        return f"simulated in process at {self._reader.where}"

    @property
    def status(self) -> BatteryStatus | None:
        """The last status its reader reported (None before the first poll)."""
        return self._reader.status if self._reader is not None else None

    def command(self, setpoint_w: float) -> None:
        """Hold this setpoint (W, positive = discharging), forwarded to the reader once it exists."""
        if not math.isfinite(setpoint_w):
            raise ValueError(f"setpoint_w must be a number of W, got {setpoint_w!r}")
        self._setpoint_w = float(setpoint_w)
        if self._reader is not None:
            self._reader.command(setpoint_w)

    async def run(self) -> None:
        """Serve the simulated battery and read it until cancelled; the reader leaves it idle first."""
        sim = SimBattery.for_config(self.cfg, host=LOOPBACK, port=0)
        async with asyncio.TaskGroup() as tg:
            up = asyncio.Event()
            sim_task = tg.create_task(sim.run(up), name="battery-simulated")
            async with asyncio.timeout(SIM_START_TIMEOUT_S):
                await up.wait()
            log.info("battery: simulated in process (driver \"simulated\"), SunSpec on %s:%d", LOOPBACK, sim.port)
            reader = SunSpecBattery(
                LOOPBACK, sim.port, self.cfg.unit_id, self._ratings, on_reading=self._on_reading, **_timings(self.cfg)
            )
            if self._setpoint_w is not None:
                reader.command(self._setpoint_w)
            self._reader = reader
            try:
                await reader.run()
            finally:
                # the reader writes idle on its way out, so the battery goes after it
                sim_task.cancel()
