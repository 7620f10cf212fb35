"""The frozen inputs and outputs of the power-sharing core (`controller.core.sharing`).

Currents are in A per phase, times are aware UTC datetimes. Phases are numbered 0, 1, 2 for the
grid's L1, L2, L3. Every tuple of connectors is sorted by `key` so that iteration is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from drivers.contract.units import Phases3


@dataclass(frozen=True)
class Budget:
    """What the square may draw now, per phase, and the rules' settings.

    `grid_a`: what the grid connection leaves for the chargers (limit less base load or the metered
    other load, less any margin); 0 on a phase the square does not have.
    `battery_a`: what the battery can add now (its available discharge spread over the phases);
    all 0 when the battery is offline, untrusted, empty or absent.
    """

    grid_a: Phases3
    battery_a: Phases3
    min_current_a: float
    reaction_s: float
    turn_s: float


@dataclass(frozen=True)
class ConnectorInput:
    """One connector as the cycle sees it now.

    `key` ("CP01/1") identifies it; `bay_id` orders ties (the bay id, or the key when no bay).
    `phases`: the grid phases the car draws from (a one-phase car: one phase, found from the
    meter values and the charger's phase rotation; unknown: all phases of the charger).
    `active`: a car is plugged in with a session (Preparing with a transaction, Charging,
    SuspendedEV, SuspendedEVSE); an inactive connector gets 0 A and reserves nothing.
    `controllable`: the gateway can change its limit now (charger online and accepting
    TxProfiles). A connector that is not controllable is counted at `in_force_a` and left alone.
    `max_a`: the most it may be given (the charger's maximum, and the car's when known).
    `draw_a`: the largest of its measured phase currents, None when missing or stale.
    `ev_suspended`: the charger reports SuspendedEV (the car takes nothing now).
    `in_force_a`: the limit the charger applies now (its lease, or its safe default without one).
    `settling_from_a`: the higher limit it had before a decrease that has not shown yet in the meter
    values; None when settled. `changed_at`: when `in_force_a` was sent.
    `running_since` / `paused_since`: its turn state from the previous decision (None at first).
    `resume_offered_at`: when it was last given current again after a pause (for "does not resume").
    `credited_a`: the largest of its phase currents that was taken off the grid meter's reading to
    find the rest of the site's load (0 when the budget does not come from the meter, or no reading
    of it counts). The budget already handed that current back to the cars, so the connector counts
    at least at it: a charger that reports more than its car draws cannot lend the others room the
    grid does not have (control.md rule 1).
    """

    key: str
    bay_id: str
    phases: tuple[int, ...]
    active: bool
    controllable: bool
    max_a: float
    draw_a: float | None
    ev_suspended: bool
    in_force_a: float
    settling_from_a: float | None = None
    changed_at: datetime | None = None
    running_since: datetime | None = None
    paused_since: datetime | None = None
    resume_offered_at: datetime | None = None
    credited_a: float = 0.0

    @property
    def may_draw_a(self) -> float:
        """What it may draw now (A): its limit in force, or the higher one it is still leaving."""
        return max(self.in_force_a, self.settling_from_a or 0.0)


@dataclass(frozen=True)
class ConnectorDecision:
    """What one connector should have.

    `target_a`: its fair share now. `limit_a`: what should be in force now, with sequencing
    applied (a rise that must wait for a decrease elsewhere stays lower); the shell sends this.
    `grid_only_a`: its share if the battery gave nothing (the second period of a lease that relies
    on the battery). `reason`: one line for the log and the console.
    `running_since` / `paused_since` / `resume_offered_at`: the turn state to feed back next cycle.
    `not_resuming`: it was given current and has not drawn any for twice `reaction_s` (the
    charger's reaction, then the car's); it stays True while the car waits to be offered current
    again, and such a car's `paused_since` may lie in the future (when its wait ends).
    `obeys`: False when its reading stays above what it may draw (`ConnectorInput.credited_a` beyond the
    tolerance): it is counted at that reading and left at its limit.
    """

    key: str
    bay_id: str
    target_a: float
    limit_a: float
    grid_only_a: float
    reason: str
    running_since: datetime | None = None
    paused_since: datetime | None = None
    resume_offered_at: datetime | None = None
    not_resuming: bool = False
    obeys: bool = True


@dataclass(frozen=True)
class Sharing:
    """The decision for the whole square.

    `load_a`: per phase, the sum of what every connector may draw once this decision is sent
    (limits in force, connectors still settling counted at their higher old limit, connectors that
    are not controllable at `in_force_a`). Never above `budget.grid_a + budget.battery_a`.
    `battery_needed_a`: per phase, how far `load_a` goes beyond `grid_a` (0 when it does not).
    `spare_a`: per phase, grid capacity no car can use now (0 on a phase where some car gets less
    than it asks for): what the battery may recharge from.
    `short`: not every active car gets current: cars take turns, or a car that takes nothing has
    given its minimum to the others.
    """

    connectors: tuple[ConnectorDecision, ...]
    load_a: Phases3
    battery_needed_a: Phases3
    spare_a: Phases3
    short: bool
    reasons: tuple[str, ...] = ()

    def decision(self, key: str) -> ConnectorDecision | None:
        """The decision for connector `key`, if it was among the inputs."""
        for d in self.connectors:
            if d.key == key:
                return d
        return None
