"""A simulated charger's arithmetic: following a new limit after its reaction time, the connector
status it reports, and its meter values. Pure: no I/O, no clock (every time is an argument)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drivers.sim.profiles import MIN_CURRENT_A, VOLTAGE_V


@dataclass(frozen=True)
class Follow:
    """A connector's applied limit (A) and the limit waiting for the reaction time: (A, due time in s) or None."""

    applied_a: float
    pending: tuple[float, float] | None = None


def follow_limit(state: Follow, target_a: float, now_s: float, reaction_s: float) -> Follow:
    """The applied limit once `target_a` is in force at `now_s`: a change, up or down, shows `reaction_s` after it came."""
    if target_a == state.applied_a:
        return Follow(state.applied_a)
    pending = state.pending
    if pending is not None and pending[0] == target_a:
        pass
    elif pending is not None and target_a < pending[0] < state.applied_a:
        # a decrease on its way is deepened: the charger's control loop is already coming down
        pending = (target_a, pending[1])
    else:
        pending = (target_a, now_s + reaction_s)
    return Follow(target_a) if now_s >= pending[1] else Follow(state.applied_a, pending)


def charging_status(applied_a: float, car_full: bool) -> str:
    """The status of a connector with a transaction: SuspendedEVSE below 6 A, SuspendedEV when the car is full."""
    if applied_a < MIN_CURRENT_A:
        return "SuspendedEVSE"
    return "SuspendedEV" if car_full else "Charging"


def plain_draw(applied_a: float, car_max_a: float, car_phases: int, phases: int) -> tuple[float, tuple[float, ...]]:
    """What a car without a model draws (W, A per charger phase): the applied limit up to its maximum, 0 below 6 A."""
    current_a = min(applied_a, car_max_a)
    current_a = current_a if current_a >= MIN_CURRENT_A else 0.0
    return current_a * VOLTAGE_V * car_phases, tuple(current_a if p < car_phases else 0.0 for p in range(phases))


def sampled_values(power_w: float, currents_a: tuple[float, ...], energy_wh: float, offered_a: float) -> list[dict[str, str]]:
    """The sampledValue list of one MeterValues reading."""
    values = [
        {"value": f"{a:.1f}", "measurand": "Current.Import", "phase": f"L{p}", "unit": "A"}
        for p, a in enumerate(currents_a, start=1)
    ]
    return values + [
        {"value": f"{power_w:.0f}", "measurand": "Power.Active.Import", "unit": "W"},
        {"value": f"{energy_wh:.0f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": f"{offered_a:.1f}", "measurand": "Current.Offered", "unit": "A"},
    ]


def sampled_values201(
    values: list[dict[str, str]], measurands: tuple[str, ...] | None = None, context: str | None = None
) -> list[dict[str, Any]]:
    """1.6 sampled values in the 2.0.1 shape: numeric `value` with `unitOfMeasure`; only `measurands` (None: all)."""
    out: list[dict[str, Any]] = []
    for v in values:
        if measurands is not None and v["measurand"] not in measurands:
            continue
        sample: dict[str, Any] = {"value": float(v["value"]), "measurand": v["measurand"], "unitOfMeasure": {"unit": v["unit"]}}
        if "phase" in v:
            sample["phase"] = v["phase"]
        if context is not None:
            sample["context"] = context
        out.append(sample)
    return out
