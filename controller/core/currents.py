"""Measured currents are claims, not facts (control.md, sharing rule 1): which reported currents count.

`count_current` is the one rule for a connector's reported current, used by the power view, the state
snapshot and (through the snapshot) the console; `grid_balance` is the grid meter rule beside it. Both
are pure: frozen dataclasses in and out, no clock (`now` is passed in), no I/O.

Times are when the gateway received a sample or a status, never the charger's own timestamp: a
charger's clock may be wrong or lie (a sample stamped in the future would count for ever), while
messages on one connection arrive in the order the charger sent them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from drivers.contract.units import Phases3
from drivers.contract.words import CHARGING, PREPARING, SUSPENDED_EV, SUSPENDED_EVSE

PLAUSIBLE_OVER_MAX = 1.1
"""A reading counts up to the charger's maximum times this (meters and cars overshoot a little)."""

CAR_STATUSES = frozenset({PREPARING, CHARGING, SUSPENDED_EVSE, SUSPENDED_EV})
"""A car is plugged in and may draw current. Not Finishing: its session is over and the charger has
stopped charging, so a current it shows is a leftover from the session (or a lie)."""

COUNTED = "counted"  # a plausible reading of a plugged-in car, received after the last status change
MISSING = "missing"  # no reading with a current
NO_CAR = "no car"  # the status says no car may draw (or is not known yet)
STALE = "stale"  # received before the last status change, or longer ago than the readings' interval allows
IMPLAUSIBLE = "implausible"  # beyond [0, max x 1.1] or not a number: ignored, counted at the limit in force


@dataclass(frozen=True)
class CurrentClaim:
    """What the gateway holds of one connector's current: the last reading and the status around it.

    `current_a`: the last reported current per charger phase (A), None where not reported.
    `sample_at` / `status_changed_at`: when the gateway received that reading / the last status change.
    `max_a`: the charger's maximum (A). `in_force_a`: the connector's limit in force (A).
    `phases`: how many phases the charger has. `stale_after_s`: three times the meter interval.
    """

    status: str | None
    status_changed_at: datetime | None
    current_a: tuple[float | None, float | None, float | None]
    sample_at: datetime | None
    max_a: float
    in_force_a: float
    phases: int = 3
    stale_after_s: float = 15.0


@dataclass(frozen=True)
class CountedCurrent:
    """A connector's current as the square counts it.

    `measured_a`: per charger phase, the reading that counts (A); None on every phase unless `verdict`
    is COUNTED. Only these are ever subtracted from a grid meter's reading.
    `counted_a`: per charger phase, what the connector counts at (A) in a sum of the square's load:
    the measured current, the limit in force for an implausible reading, else 0.
    `at`: when the counted reading was received (None unless COUNTED).
    """

    verdict: str
    measured_a: tuple[float | None, float | None, float | None] = (None, None, None)
    counted_a: Phases3 = (0.0, 0.0, 0.0)
    at: datetime | None = None

    @property
    def draw_a(self) -> float | None:
        """The largest measured phase current (A), None when no reading counts."""
        present = [a for a in self.measured_a if a is not None]
        return max(present) if present else None

    @property
    def shown_a(self) -> float | None:
        """What the snapshot shows as the connector's current (A): the largest counted phase current,
        None when there is nothing to count (no car, no fresh reading)."""
        return max(self.counted_a) if self.verdict in (COUNTED, IMPLAUSIBLE) else None


def plausible_a(value: float | None, max_a: float) -> bool:
    """Whether a reported current (A) may be true: a number within [0, max_a x 1.1]."""
    return value is None or (math.isfinite(value) and 0.0 <= value <= max_a * PLAUSIBLE_OVER_MAX)


def count_current(claim: CurrentClaim, now: datetime) -> CountedCurrent:
    """Which of a connector's reported current counts at `now` (control.md rule 1).

    A reading counts only while a car is plugged in (Preparing, Charging, SuspendedEVSE,
    SuspendedEV), only when received after the connector's last status change and within
    `stale_after_s`, and only when every phase is within [0, max_a x 1.1]. An implausible reading is
    ignored and counted at the limit in force on each of the charger's phases.
    """
    present = [a for a in claim.current_a if a is not None]
    if not present or claim.sample_at is None:
        return CountedCurrent(MISSING)
    if claim.status not in CAR_STATUSES:
        return CountedCurrent(NO_CAR)
    age_s = (now - claim.sample_at).total_seconds()
    # A reading "from the future" means the gateway's clock went back: it cannot be placed, so it is stale.
    if age_s < 0 or age_s > claim.stale_after_s or (
        claim.status_changed_at is not None and claim.sample_at <= claim.status_changed_at
    ):
        return CountedCurrent(STALE)
    if not all(plausible_a(a, claim.max_a) for a in claim.current_a):
        limit_a = max(0.0, claim.in_force_a) if math.isfinite(claim.in_force_a) else claim.max_a
        counted = tuple(limit_a if p < claim.phases else 0.0 for p in range(3))
        return CountedCurrent(IMPLAUSIBLE, counted_a=counted)  # type: ignore[arg-type]
    counted = tuple(a or 0.0 for a in claim.current_a)
    return CountedCurrent(COUNTED, claim.current_a, counted, claim.sample_at)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GridBalance:
    """What a grid meter's reading says of the rest of the site.

    `trusted`: False when the reading cannot be right (below what the cars alone draw, less what a
    discharging battery covers, or not a number); then the margin applies, as for a missing meter.
    `other_a`: per phase, the site's load besides the cars and the battery (A), never below 0;
    all 0 when not trusted.
    """

    trusted: bool
    other_a: Phases3 = (0.0, 0.0, 0.0)
    why: str = ""


def grid_balance(meter_a: Phases3, cars_a: Phases3, battery_a: float, phases: int = 3) -> GridBalance:
    """The rest of the site per phase (A) from a meter reading, the cars' counted sum and the battery.

    `cars_a`: the sum of the connectors' `measured_a` per grid phase (only readings that count).
    `battery_a`: the battery's current per phase (A, positive = discharging into the square).
    """
    if not math.isfinite(battery_a):
        battery_a = 0.0
    for p in range(phases):
        if not math.isfinite(meter_a[p]):
            return GridBalance(False, why=f"L{p + 1} reading is not a number")
        if meter_a[p] + max(0.0, battery_a) < cars_a[p]:
            return GridBalance(False, why=f"L{p + 1} reads {meter_a[p]:.1f} A, below the cars' own {cars_a[p]:.1f} A")
    other = tuple(max(0.0, meter_a[p] - cars_a[p] + battery_a) if p < phases else 0.0 for p in range(3))
    return GridBalance(True, other)  # type: ignore[arg-type]
