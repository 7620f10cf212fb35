"""Battery physics for the simulated buffer battery: state of charge, power limits and revert timeout.

Pure: the model keeps its own time (`now_s`, advanced by `step`), so the same commands and steps
always give the same result. Power is positive when discharging into the square.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BatteryModel:
    """A battery of `capacity_wh` Wh whose power follows a setpoint (W, positive = discharging).

    `efficiency` applies each way: charging stores `power * efficiency`, discharging takes
    `power / efficiency` from the cells. `revert_timeout_s` of 0 means no revert timeout.
    """

    capacity_wh: float
    max_charge_w: float
    max_discharge_w: float
    soc_pct: float = 50.0
    soc_min_pct: float = 0.0
    soc_max_pct: float = 100.0
    efficiency: float = 0.95
    setpoint_w: float = 0.0
    power_w: float = 0.0
    revert_timeout_s: float = 0.0
    last_command_at_s: float | None = None
    now_s: float = 0.0
    reverted: bool = False

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0:
            raise ValueError(f"capacity_wh must be positive, got {self.capacity_wh}")
        if self.max_charge_w < 0 or self.max_discharge_w < 0:
            raise ValueError("max_charge_w and max_discharge_w must not be negative")
        if not 0.0 <= self.soc_min_pct <= self.soc_max_pct <= 100.0:
            raise ValueError(
                f"need 0 <= soc_min_pct <= soc_max_pct <= 100, got {self.soc_min_pct}, {self.soc_max_pct}"
            )
        if not 0.0 <= self.soc_pct <= 100.0:
            raise ValueError(f"soc_pct must be within 0-100, got {self.soc_pct}")
        if not 0.0 < self.efficiency <= 1.0:
            raise ValueError(f"efficiency must be within (0, 1], got {self.efficiency}")
        if self.revert_timeout_s < 0:
            raise ValueError(f"revert_timeout_s must not be negative, got {self.revert_timeout_s}")

    @property
    def energy_wh(self) -> float:
        """Stored energy in Wh."""
        return self.capacity_wh * self.soc_pct / 100.0

    def command(self, setpoint_w: float, revert_timeout_s: float | None = None) -> None:
        """Take a new setpoint (W, positive = discharging) at the model's current time.

        The setpoint is kept as asked; `step` applies the limits. A `revert_timeout_s` given
        here replaces the current one.
        """
        if revert_timeout_s is not None:
            if revert_timeout_s < 0:
                raise ValueError(f"revert_timeout_s must not be negative, got {revert_timeout_s}")
            self.revert_timeout_s = revert_timeout_s
        self.setpoint_w = float(setpoint_w)
        self.last_command_at_s = self.now_s
        self.reverted = False

    def revert_at_s(self) -> float | None:
        """Model time (s) at which the current setpoint lapses, or None when it never does."""
        if self.revert_timeout_s <= 0 or self.last_command_at_s is None or self.setpoint_w == 0:
            return None
        return self.last_command_at_s + self.revert_timeout_s

    def limited_power_w(self) -> float:
        """The power (W) the battery can deliver now for the current setpoint."""
        if self.setpoint_w > 0:
            if self.soc_pct <= self.soc_min_pct:
                return 0.0
            return min(self.setpoint_w, self.max_discharge_w)
        if self.setpoint_w < 0:
            if self.soc_pct >= self.soc_max_pct:
                return 0.0
            return max(self.setpoint_w, -self.max_charge_w)
        return 0.0

    def step(self, dt_s: float) -> None:
        """Advance the model by `dt_s` seconds; `power_w` becomes the mean power delivered."""
        if dt_s < 0:
            raise ValueError(f"dt_s must not be negative, got {dt_s}")
        if dt_s == 0:
            self.power_w = self.limited_power_w()
            return
        end_s = self.now_s + dt_s
        revert_s = self.revert_at_s()
        delivered_wh = 0.0
        if revert_s is not None and revert_s < end_s:
            delivered_wh += self._deliver(max(revert_s - self.now_s, 0.0))
            self.setpoint_w = 0.0
            self.reverted = True
        else:
            delivered_wh += self._deliver(dt_s)
        self.now_s = end_s
        self.power_w = delivered_wh * 3600.0 / dt_s if delivered_wh else 0.0
        self.power_w = min(max(self.power_w, -self.max_charge_w), self.max_discharge_w)

    def _deliver(self, dt_s: float) -> float:
        """Run at the limited power for `dt_s` s within the SoC bounds; return Wh delivered (+ = out)."""
        power_w = self.limited_power_w()
        if power_w == 0 or dt_s <= 0:
            return 0.0
        delivered_wh = power_w * dt_s / 3600.0
        if power_w > 0:
            cell_wh = delivered_wh / self.efficiency
            room_wh = self.capacity_wh * (self.soc_pct - self.soc_min_pct) / 100.0
            if cell_wh >= room_wh:
                self.soc_pct = self.soc_min_pct
                return room_wh * self.efficiency
            self.soc_pct = max(self.soc_pct - cell_wh * 100.0 / self.capacity_wh, self.soc_min_pct)
            return delivered_wh
        cell_wh = -delivered_wh * self.efficiency
        room_wh = self.capacity_wh * (self.soc_max_pct - self.soc_pct) / 100.0
        if cell_wh >= room_wh:
            self.soc_pct = self.soc_max_pct
            return -room_wh / self.efficiency
        self.soc_pct = min(self.soc_pct + cell_wh * 100.0 / self.capacity_wh, self.soc_max_pct)
        return delivered_wh
