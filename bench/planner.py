"""The upper bound of the day benchmark: the most energy a planner knowing the whole day could deliver.

A linear program over 60 s slots (scipy's HiGHS) with full knowledge of every arrival, stay, bay
and energy wanted. It maximises the energy the cars take subject to:

- per phase and slot, the cars' mean current plus the base load, less the battery's discharge
  (plus its charging) spread over three phases, stays within the grid limit;
- the battery's state of charge follows its charge and discharge with the model's efficiency each
  way, stays within `soc_min_pct`-`soc_max_pct` at every slot boundary, starts where the simulation
  starts, and its power stays within its ratings;
- each car only while parked, at most its maximum AC power (and the charger's maximum current),
  at most its taper (the drivers.sim.cars taper above 80 % state of charge, linear in the energy the car
  has taken, taken at the start of each slot), and in all at most the energy it wants.

It ignores the minimum current (a car may take any current, also below 6 A), the chargers'
reaction time, the 0.1 A step and every variation within a slot (a slot's mean current counts,
so a schedule that keeps the limit every second also keeps it on the slot mean). Each of these
only widens what is allowed, so the optimum is an upper bound on what any controller can deliver
under the same limit; a controller that briefly overshoots the limit may pass it by a little.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from bench.day_model import STEP_S, SquareSpec, Visit
from drivers.sim.cars import TAPER_END_SHARE, TAPER_FROM_SOC_PCT

SLOT_S = 60.0


@dataclass(frozen=True)
class Bound:
    """The planner's optimum (Wh), with the size of its program."""

    delivered_wh: float
    slots: int
    variables: int
    status: str


class _Program:
    """Columns and rows of the linear program, collected as sparse triplets."""

    def __init__(self) -> None:
        self.n = 0
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.cost: list[float] = []
        self.ub_rows: list[tuple[list[int], list[float], float]] = []
        self.eq_rows: list[tuple[list[int], list[float], float]] = []

    def var(self, lower: float, upper: float, cost: float = 0.0) -> int:
        self.lower.append(lower)
        self.upper.append(upper)
        self.cost.append(cost)
        self.n += 1
        return self.n - 1

    def le(self, cols: list[int], coefs: list[float], rhs: float) -> None:
        self.ub_rows.append((cols, coefs, rhs))

    def eq(self, cols: list[int], coefs: list[float], rhs: float) -> None:
        self.eq_rows.append((cols, coefs, rhs))

    def matrix(self, rows: list[tuple[list[int], list[float], float]]) -> tuple[coo_matrix | None, np.ndarray | None]:
        if not rows:
            return None, None
        r, c, v = [], [], []
        for i, (cols, coefs, _) in enumerate(rows):
            r.extend([i] * len(cols))
            c.extend(cols)
            v.extend(coefs)
        return coo_matrix((v, (r, c)), shape=(len(rows), self.n)).tocsr(), np.array([rhs for *_, rhs in rows])


def upper_bound(spec: SquareSpec, visits: Sequence[Visit], *, slot_s: float = SLOT_S) -> Bound:
    """The most energy (Wh) the parked EVs among `visits` could take under the square's grid limit."""
    parked = [v for v in visits if v.ev and v.bay is not None and v.arrival.energy_wanted_wh > 0]
    end_s = max((v.leave_step * STEP_S for v in parked), default=0.0)
    slots = math.ceil(end_s / slot_s)
    if slots == 0:
        return Bound(0.0, 0, 0, "nothing to plan")
    lp = _Program()
    h = slot_s / 3600.0  # Wh per W over one slot
    v_ph = spec.voltage_v
    phase_rows: list[list[tuple[int, float]]] = [[] for _ in range(3 * slots)]

    for v in parked:
        assert v.bay is not None and v.arrival.car is not None and v.arrival.soc_at_arrival_pct is not None
        car = v.arrival.car
        connector = spec.connectors[v.bay]
        phases = connector.car_phases(car.phases)
        max_a = min(connector.charger_max_a, car.max_current_a(v_ph))
        max_w = max_a * v_ph * car.phases
        soc0 = v.arrival.soc_at_arrival_pct
        # the taper: power <= max_w * (1 - slope * (soc - 80)), soc = soc0 + 100 * energy / battery
        slope = (1.0 - TAPER_END_SHARE) / (100.0 - TAPER_FROM_SOC_PCT)
        first = int(v.arrive_step * STEP_S // slot_s)
        last = math.ceil(v.leave_step * STEP_S / slot_s)
        taken: list[int] = []
        energy_before: int | None = None  # column of the energy taken before this slot (None: 0)
        for s in range(first, last):
            parked_s = min(v.leave_step * STEP_S, (s + 1) * slot_s) - max(v.arrive_step * STEP_S, s * slot_s)
            if parked_s <= 0:
                continue
            cap_wh = max_w * parked_s / 3600.0
            x = lp.var(0.0, cap_wh, -1.0)
            taper_rhs = cap_wh * (1.0 - slope * (soc0 - TAPER_FROM_SOC_PCT))
            if energy_before is None:
                if taper_rhs < cap_wh:
                    lp.le([x], [1.0], max(taper_rhs, 0.0))
            else:
                # x <= cap * (1 - slope * (soc0 + 100 E / battery - 80))
                lp.le([x, energy_before], [1.0, cap_wh * slope * 100.0 / car.battery_wh], taper_rhs)
            for p in phases:
                # mean current over the slot: Wh / h / (V * phases)
                phase_rows[3 * s + p].append((x, 1.0 / (h * v_ph * car.phases)))
            e_next = lp.var(0.0, math.inf)
            cols, coefs = [e_next, x], [1.0, -1.0]
            if energy_before is not None:
                cols.append(energy_before)
                coefs.append(-1.0)
            lp.eq(cols, coefs, 0.0)
            energy_before = e_next
            taken.append(x)
        lp.le(taken, [1.0] * len(taken), v.arrival.energy_wanted_wh)

    b = spec.battery
    if b is not None:
        v3 = 3 * v_ph
        soc_wh = b.capacity_wh * b.start_soc_pct / 100.0
        low_wh = min(b.capacity_wh * b.soc_min_pct / 100.0, soc_wh)
        high_wh = max(b.capacity_wh * b.soc_max_pct / 100.0, soc_wh)
        stored: int | None = None
        for s in range(slots):
            dis = lp.var(0.0, b.max_discharge_w)
            chg = lp.var(0.0, b.max_charge_w)
            nxt = lp.var(low_wh, high_wh)
            cols, coefs = [nxt, dis, chg], [1.0, h / b.efficiency, -h * b.efficiency]
            if stored is None:
                lp.eq(cols, coefs, soc_wh)
            else:
                lp.eq(cols + [stored], coefs + [-1.0], 0.0)
            stored = nxt
            for p in range(3):
                phase_rows[3 * s + p].extend([(dis, -1.0 / v3), (chg, 1.0 / v3)])

    for terms in phase_rows:
        if terms:
            lp.le([c for c, _ in terms], [k for _, k in terms], spec.limit_a - spec.base_load_a)

    a_ub, b_ub = lp.matrix(lp.ub_rows)
    a_eq, b_eq = lp.matrix(lp.eq_rows)
    res = linprog(
        np.array(lp.cost), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
        bounds=np.column_stack([lp.lower, lp.upper]), method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"the planner's linear program failed: {res.message}")
    return Bound(float(-res.fun), slots, lp.n, res.message)
