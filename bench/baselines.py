"""The baselines the day benchmark sets laadplein against, as controllers of the simulated square.

- `StaticSplit`: what chargers' built-in load balancing does: every connector of the square may
  draw the grid limit over the number of connectors, whether its neighbours use it or not; the
  battery stays idle. Its variant splits the limit among the connectors with a car.
- `FirstComeCapping`: evcc's circuits: cars in arrival order get their maximum, capped at what is
  left of the grid limit per phase after what the cars before them draw (measured); a car that
  would get less than the minimum gets 0. The battery does simple peak shaving on the measured grid
  current, one control step late.
"""

from __future__ import annotations

import math

from bench.day_model import Commands, ConnectorView, Limit, SquareSpec, SquareView

CHARGE_MARGIN_A = 1.0
"""Peak shaving recharges the battery only up to this far below the grid limit (A per phase)."""


def round_down_a(current_a: float) -> float:
    """A current (A) rounded down to the 0.1 A step chargers take."""
    return math.floor(round(current_a * 10.0, 6)) / 10.0


def _car_max_a(c: ConnectorView) -> float:
    return min(c.charger_max_a, c.car_max_a if c.car_max_a is not None else c.charger_max_a)


class StaticSplit:
    """The grid limit (less base load) split equally: over every connector of the square
    (`among="square"`, a fixed setting of the chargers) or over the connectors with a car
    (`among="cars"`, redistributed every period; a new session waits for its share at 0 A)."""

    def __init__(self, spec: SquareSpec, *, among: str = "square") -> None:
        if among not in ("square", "cars"):
            raise ValueError(f"among must be 'square' or 'cars', not {among!r}")
        self.spec = spec
        self.among = among
        self.name = "static split" if among == "square" else "static split (cars)"
        self._fixed_a = round_down_a(spec.grid_a / len(spec.connectors))
        self._sent: dict[str, float] = {}

    def default_a(self, key: str) -> float:
        return self._fixed_a if self.among == "square" else 0.0

    def control(self, view: SquareView) -> Commands:
        if self.among == "square":
            return Commands()
        active = [c for c in view.connectors if c.active]
        share_a = round_down_a(self.spec.grid_a / len(active)) if active else 0.0
        limits = []
        for c in view.connectors:
            if not c.active:
                self._sent.pop(c.key, None)
                continue
            if self._sent.get(c.key) != share_a:
                self._sent[c.key] = share_a
                limits.append(Limit(c.key, share_a))
        return Commands(tuple(limits))


class FirstComeCapping:
    """First come, first served under the grid limit, as evcc's circuits do, with a peak-shaving battery."""

    name = "FCFS capping"

    def __init__(self, spec: SquareSpec) -> None:
        self.spec = spec
        self._sent: dict[str, float] = {}

    def default_a(self, key: str) -> float:
        return 0.0  # a loadpoint stays disabled until the controller enables it

    def control(self, view: SquareView) -> Commands:
        spec = self.spec
        left_a = [spec.grid_a] * 3
        limits = []
        order = sorted((c for c in view.connectors if c.active), key=lambda c: (c.since_s or 0.0, c.bay_id))
        for c in order:
            grant_a = round_down_a(min(_car_max_a(c), *(left_a[p] for p in c.phases)))
            if grant_a < spec.min_current_a:
                grant_a = 0.0
            for p in c.phases:
                left_a[p] -= c.draw_a or 0.0  # the circuit counts what the car draws, not what it was given
            if self._sent.get(c.key) != grant_a:
                self._sent[c.key] = grant_a
                limits.append(Limit(c.key, grant_a))
        for c in view.connectors:
            if not c.active:
                self._sent.pop(c.key, None)
        return Commands(tuple(limits), self._peak_shaving_w(view))

    def _peak_shaving_w(self, view: SquareView) -> float | None:
        """Discharge what the measured load of the last step exceeds the grid limit; recharge from what
        it leaves below it (less a margin). The battery is symmetric, so the worst phase decides."""
        b = self.spec.battery
        if b is None:
            return None
        v3 = 3 * self.spec.voltage_v
        without_battery_a = max(view.grid_a) + view.battery_power_w / v3
        excess_a = without_battery_a - self.spec.limit_a
        if excess_a > 0:
            return min(b.max_discharge_w, excess_a * v3)
        spare_a = -excess_a - CHARGE_MARGIN_A
        return -min(b.max_charge_w, spare_a * v3) if spare_a > 0 else 0.0
