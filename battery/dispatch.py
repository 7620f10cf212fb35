"""Battery dispatch: the buffer battery's setpoint (W, positive = discharging) for this cycle.

Pure: peak shaving for what the cars need above the grid, recharge from spare grid capacity,
an evening reserve by time of day.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from battery.dispatch_types import BatteryInput, Dispatch
from config.schema_devices import ReserveWindow, minutes_of_day
from drivers.contract.units import Phases3

MINUTES_PER_DAY = 24 * 60
# A setpoint must be one the battery can hold until the next refresh and well beyond, so power near
# full is capped at the energy left divided by this horizon (1/h: a minute).
HOLD_MIN = 60.0
# What the battery offers the cars must change slowly: every fall of the offer is a decrease that
# chargers take `reaction_s` to follow. Near the reserve the offer is the energy left spread over a
# quarter of an hour (it falls by about a tenth of a percent a second), in whole amperes per phase.
OFFER_HOLD_H = 0.25
OFFER_STEP_A = 1.0
# Charging leaves this much (A per phase) of the spare current unused, so that a car whose draw
# rises a little still finds it there before the next cycle.
CHARGE_MARGIN_A = 1.0
_PHASE_NAMES = ("L1", "L2", "L3")


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _window_contains(window: ReserveWindow, minute_of_day: int) -> bool:
    start, end = minutes_of_day(window.start), minutes_of_day(window.end)
    if start == end:
        return True
    if start < end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end  # passes midnight


def reserve_soc_pct(windows: Sequence[ReserveWindow], soc_min_pct: float, minute_of_day: int) -> float:
    """The state of charge (%) kept back at this local minute of the day (0-1439)."""
    if not 0 <= minute_of_day < MINUTES_PER_DAY:
        raise ValueError(f"minute_of_day must be 0-{MINUTES_PER_DAY - 1}, got {minute_of_day}")
    return max([soc_min_pct, *(w.soc_pct for w in windows if _window_contains(w, minute_of_day))])


def _check(battery: BatteryInput) -> None:
    # A wrong phase count or voltage would spread the power wrongly over the fuse: refuse it loudly.
    if battery.phases not in (1, 3):
        raise ValueError(f"phases must be 1 or 3, got {battery.phases}")
    if not (math.isfinite(battery.voltage_v) and battery.voltage_v > 0):
        raise ValueError(f"voltage_v must be a finite number > 0 V, got {battery.voltage_v}")


def _soc_known(battery: BatteryInput) -> bool:
    return battery.soc_pct is not None and math.isfinite(battery.soc_pct)


def _floor_pct(battery: BatteryInput) -> float:
    """The state of charge (%) the battery must not discharge below now."""
    return max(battery.reserve_soc_pct, battery.soc_min_pct)


def _discharge_w(battery: BatteryInput) -> float:
    """The most the battery can give now (W): 0 unless usable and above its reserve, tapered near it."""
    if not battery.usable or not _soc_known(battery):
        return 0.0
    above_pct = battery.soc_pct - _floor_pct(battery)
    if above_pct <= 0:
        return 0.0
    hold_w = battery.capacity_wh * above_pct / 100 / OFFER_HOLD_H
    return max(0.0, min(battery.max_discharge_w, hold_w))


def _charge_w(battery: BatteryInput) -> float:
    """The most the battery may take now (W, positive): its rating, tapered to 0 at `soc_max_pct`."""
    below_pct = battery.soc_max_pct - battery.soc_pct
    if below_pct <= 0:
        return 0.0
    return max(0.0, min(battery.max_charge_w, battery.capacity_wh * below_pct / 100 * HOLD_MIN))


def available_a(battery: BatteryInput) -> Phases3:
    """What the battery can add per phase now (A), for the sharing budget."""
    _check(battery)
    power_w = _discharge_w(battery)
    if battery.phases == 3:
        per_phase_a = _steps_down(power_w / (3 * battery.voltage_v))
        return (per_phase_a, per_phase_a, per_phase_a)
    return (_steps_down(power_w / battery.voltage_v), 0.0, 0.0)


def _steps_down(current_a: float) -> float:
    return math.floor(current_a / OFFER_STEP_A + 1e-9) * OFFER_STEP_A


def _toward_zero(power_w: float, rating_w: float) -> float:
    """`power_w` (W) in whole watts toward 0, never beyond `rating_w` (W, positive) either way."""
    # Never promise a watt more than computed. Rounding to a µW first keeps float noise (1199.9999 for
    # 1200) from costing a whole watt.
    whole_w = min(math.trunc(round(abs(power_w), 6)), math.floor(rating_w))
    if whole_w == 0:
        return 0.0
    return float(whole_w) if power_w > 0 else -float(whole_w)


def dispatch(battery: BatteryInput, needed_a: Phases3, spare_a: Phases3) -> Dispatch:
    """The setpoint covering `needed_a` (the cars' load above the grid), else recharging from `spare_a`."""
    _check(battery)
    for name, values in (("needed_a", needed_a), ("spare_a", spare_a)):
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{name} must be 3 finite currents (A), got {values!r}")
    if not battery.usable:
        return Dispatch(0.0, "idle: battery offline or not trusted")
    if not _soc_known(battery):
        return Dispatch(0.0, "idle: state of charge unknown")
    soc_pct = battery.soc_pct
    grid_phases = range(battery.phases)
    v_total = battery.voltage_v * battery.phases

    if any(a > 0 for a in needed_a):
        # Any need above the grid rules out charging, even on a phase the battery does not feed.
        worst = max(grid_phases, key=lambda p: (needed_a[p], -p))
        need_a = max(needed_a[worst], 0.0)
        if need_a <= 0:
            phase = _PHASE_NAMES[max(range(3), key=lambda p: (needed_a[p], -p))]
            return Dispatch(0.0, f"idle: cars need current above the grid on {phase}, which the battery does not feed")
        what = f"cars need {_fmt(round(need_a, 1))} A above the grid on {_PHASE_NAMES[worst]}"
        can_w = _discharge_w(battery)
        if can_w <= 0:
            floor_pct = _fmt(_floor_pct(battery))
            return Dispatch(0.0, f"idle: {what}, but the battery is at or below its reserve ({floor_pct} %)")
        want_w = need_a * v_total
        if want_w > can_w:
            setpoint_w = _toward_zero(can_w, battery.max_discharge_w)
            return Dispatch(setpoint_w, f"peak shaving: {what}; capped at {_fmt(setpoint_w)} W")
        return Dispatch(_toward_zero(want_w, battery.max_discharge_w), f"peak shaving: {what}")

    if soc_pct >= battery.soc_max_pct:
        return Dispatch(0.0, f"idle: full ({_fmt(soc_pct)} % of {_fmt(battery.soc_max_pct)} %)")
    least = min(grid_phases, key=lambda p: (spare_a[p], p))
    usable_spare_a = spare_a[least] - CHARGE_MARGIN_A
    if usable_spare_a <= 0:
        return Dispatch(
            0.0,
            f"idle: nothing spare to recharge from ({_fmt(round(max(spare_a[least], 0.0), 1))} A on"
            f" {_PHASE_NAMES[least]}, {_fmt(CHARGE_MARGIN_A)} A kept for the cars)",
        )
    may_w = _charge_w(battery)
    setpoint_w = _toward_zero(-min(usable_spare_a * v_total, may_w), battery.max_charge_w)
    if setpoint_w == 0:
        return Dispatch(0.0, f"idle: may not charge now ({_fmt(math.trunc(may_w))} W allowed)")
    what = (
        f"recharging: {_fmt(round(spare_a[least], 1))} A spare on {_PHASE_NAMES[least]},"
        f" {_fmt(CHARGE_MARGIN_A)} A kept for the cars"
    )
    if usable_spare_a * v_total > may_w:
        return Dispatch(setpoint_w, f"{what}; capped at {_fmt(-setpoint_w)} W")
    return Dispatch(setpoint_w, what)
