"""Reads and steers a Victron ESS through a GX device's Modbus TCP server (the `victron` preset).

What the GX offers (dbus-modbustcp's register list; all on the system unit id, 100):

- 840-844, com.victronenergy.system /Dc/Battery: voltage (uint16, V x 10), current (int16,
  A x 10), power (int16, W), SoC (uint16, %), state (0 idle, 1 charging, 2 discharging). Victron
  counts battery current and power positive while charging; ours is positive while discharging,
  so the power is turned round.
- 820-822, /Ac/Grid/L1-L3/Power (int16, W, positive = taken from the grid).
- 2716-2717, com.victronenergy.hub4 /Overrides/Setpoint (int32, W, high word first; Venus OS 3.50
  and later): a volatile override of the ESS grid setpoint, meant for frequent writes. The GX
  drops it when it is not renewed (10-60 s seen in the field) and goes back to its own ESS
  behaviour: the stored setpoint below, or passthru as reported for a lapsed override.
- 2700, com.victronenergy.settings /Settings/CGwacs/AcPowerSetPoint (int16, W): the same grid
  setpoint as a stored setting. Every change is written to the GX's flash and it never falls
  back by itself; use it only on a GX older than Venus OS 3.50.

Both setpoints are GRID setpoints for the ESS control loop (Victron's "ESS mode 2": the standard
ESS, steered from outside), not battery setpoints:
positive takes power from the grid, negative sends it there, and the Multi charges or discharges
until the grid meter reads the setpoint. Our battery setpoint S (W, positive = discharging) is
mapped as grid setpoint = (grid power + battery power) - S, both measured this poll: their sum is
what the site needs apart from the battery, so the battery is left to deliver S
(`battery.vendors.victron_grid_setpoint_w`). It is written after every poll, which is also what
keeps the override alive; a poll whose reading is not plausible writes nothing, so the override
lapses rather than steering on nonsense. The GX's own fallback time cannot be set over Modbus:
`revert_timeout_s` is not written. On the way out the setpoint for a battery at 0 W is written once.
Register 2902 (Hub4Mode) must be 1 or 2, not 3 ("external control" ignores the grid setpoint), and
Dynamic ESS and scheduled charging must be off: both rewrite the override themselves.
"""

from __future__ import annotations

import logging
from typing import Literal

from battery.trust import BatteryRatings
from battery.vendors import (
    VICTRON_STATES,
    decode_register,
    encode_register,
    victron_grid_setpoint_w,
)
from drivers.batteries.registers import CannotSteer, ModbusBattery, ModbusLink, Sample

log = logging.getLogger("laadplein.battery")

SYSTEM_UNIT_ID = 100  # com.victronenergy.system, .settings and .hub4 on a GX
GRID_POWER = 820  # L1-L3, int16 W each
BATTERY = 840  # voltage, current, power, SoC, state
OVERRIDE_SETPOINT = 2716
SETTING_SETPOINT = 2700
SETPOINT_TYPES: dict[int, str] = {OVERRIDE_SETPOINT: "int32", SETTING_SETPOINT: "int16"}
SETPOINT_NAMES = {
    OVERRIDE_SETPOINT: "hub4 /Overrides/Setpoint", SETTING_SETPOINT: "settings /Settings/CGwacs/AcPowerSetPoint",
}


def _int16(reg: int) -> int:
    return int(decode_register([reg], "int16"))


class VictronBattery(ModbusBattery):
    """A Victron ESS behind a GX device, steered through its ESS grid setpoint (register 2716 or 2700)."""

    def __init__(
        self,
        host: str,
        port: int,
        unit_id: int,
        ratings: BatteryRatings,
        *,
        setpoint_register: Literal[2716, 2700] = OVERRIDE_SETPOINT,
        **options,
    ) -> None:
        if setpoint_register not in SETPOINT_TYPES:
            raise ValueError(f"setpoint_register must be 2716 or 2700, got {setpoint_register!r}")
        super().__init__(host, port, unit_id, ratings, logger=log, **options)
        self.setpoint_register = setpoint_register
        self._described = False

    async def _start(self, link: ModbusLink) -> None:
        if self._described:
            return
        self._described = True
        reg = self.setpoint_register
        log.info(
            "battery: Victron GX at %s, ESS grid setpoint through register %s (%s), renewed every %s s",
            self.where, reg, SETPOINT_NAMES[reg], self.poll_s,
        )
        if reg == SETTING_SETPOINT:
            log.warning(
                "battery at %s: register 2700 is a stored setting: every change wears the GX's flash, and it"
                " does not fall back when the controller stops; use 2716 (Venus OS 3.50 and later)",
                self.where,
            )

    async def _sample(self, link: ModbusLink) -> Sample:
        grid = await link.read(GRID_POWER, 3)
        _volt, _amp, power, soc, state = await link.read(BATTERY, 5)  # one read; V and A are not needed
        return Sample(
            soc_pct=float(soc),
            power_w=float(-_int16(power)),
            state=VICTRON_STATES.get(state, f"vendor state {state}"),
            grid_w=float(sum(_int16(r) for r in grid)),
        )

    async def _steer(self, link: ModbusLink, setpoint_w: float, sample: Sample | None) -> str:
        if sample is None or sample.power_w is None or sample.grid_w is None:
            raise CannotSteer("no plausible reading of the grid and battery power to base the ESS grid setpoint on")
        grid_setpoint_w = victron_grid_setpoint_w(sample.grid_w, sample.power_w, setpoint_w)
        reg = self.setpoint_register
        try:
            regs = encode_register(grid_setpoint_w, SETPOINT_TYPES[reg])
        except ValueError as exc:
            raise CannotSteer(f"ESS grid setpoint for register {reg}: {exc}") from None
        await link.write(reg, regs)
        return (
            f"ESS grid setpoint {grid_setpoint_w:+.0f} W in register {reg}"
            f" (grid {sample.grid_w:+.0f} W, battery {sample.power_w:+.0f} W now)"
        )

    async def _release(self, link: ModbusLink) -> str:
        return await self._steer(link, 0.0, self._plausible(await self._sample(link)))
