"""The `simulated` battery preset: a simulated SunSpec battery served in the daemon's own process.

For the demo only; the composition root hands `SimulatedBattery` to `drivers.batteries.factory`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from battery.trust import BatteryRatings
from config.schema_devices import BatteryConfig
from drivers.batteries.factory import timings
from drivers.batteries.sunspec import SunSpecBattery
from drivers.contract.devices import BatteryStatus
from drivers.sim.battery import SimBattery

log = logging.getLogger("laadplein.battery")

SIM_START_TIMEOUT_S = 10.0
LOOPBACK = "127.0.0.1"


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
                LOOPBACK, sim.port, self.cfg.unit_id, self._ratings, on_reading=self._on_reading, **timings(self.cfg)
            )
            if self._setpoint_w is not None:
                reader.command(self._setpoint_w)
            self._reader = reader
            try:
                await reader.run()
            finally:
                # the reader writes idle on its way out, so the battery goes after it
                sim_task.cancel()
