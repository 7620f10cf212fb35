"""The frozen inputs and output of the battery dispatch (`battery.dispatch`).

Power in W, positive when the battery discharges into the square; currents in A per phase.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatteryInput:
    """The battery as the cycle sees it now, with its configured limits.

    `usable`: online and trusted (readings plausible); when False the battery is planned as giving
    nothing. `reserve_soc_pct`: the state of charge kept back now (the evening reserve in force at
    this time of day, or `soc_min_pct` when there is none).
    """

    usable: bool
    soc_pct: float | None
    capacity_wh: float
    max_charge_w: float
    max_discharge_w: float
    soc_min_pct: float
    soc_max_pct: float
    reserve_soc_pct: float
    voltage_v: float
    phases: int  # the grid's phases (1 or 3); a three-phase battery spreads its power evenly


@dataclass(frozen=True)
class Dispatch:
    """The battery's setpoint for this cycle and why.

    `setpoint_w`: positive discharges, negative charges, 0 idle.
    """

    setpoint_w: float
    reason: str
