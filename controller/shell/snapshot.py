"""The state snapshot of interfaces.md §4 (MQTT `P/state`, `GET /api/status`, the console): what the
square shows, built from the live state and the last power decision."""

from __future__ import annotations

from datetime import datetime

from controller.core.currents import CountedCurrent, count_current, grid_balance
from controller.shell.power import PowerControl, battery_phase_a, claim_of, fresh_grid_a
from controller.shell.state import SquareState
from drivers.contract.clock import wire_ts
from drivers.ocpp.profiles16 import grid_phase


def _battery_view(state: SquareState) -> dict:
    b = state.battery
    if b is None:
        return {"online": False, "soc_pct": None, "power_w": None, "state": None, "reason": "no reading yet"}
    usable = b.online and b.trusted
    return {
        "online": usable,
        "soc_pct": round(b.soc_pct, 1) if usable and b.soc_pct is not None else None,
        "power_w": round(b.power_w) if usable and b.power_w is not None else None,
        "state": b.state,
        "reason": None if usable else b.reason,
    }


def _grid_phase(
    state: SquareState, power: PowerControl | None, charger_id: str, connector: int, charger_phase: int
) -> int:
    """The grid phase a charger phase is wired to: as power sharing knows it (the rotation the charger
    reported, else the config's), or the config's when the square runs without power sharing."""
    if power is not None:
        return power.grid_phase_of(charger_id, connector, charger_phase)
    if state.cfg.grid.phases == 1:
        return 0
    return grid_phase(state.cfg.charger(charger_id).phase_rotation, charger_phase)


def _grid_estimate(state: SquareState, measured_a: list[float], counted_a: list[float], now: datetime) -> list[float]:
    """Grid current per phase (A): the meter's when it reads and is trusted, else cars + base load - battery.

    `measured_a`: the cars' readings that count, per grid phase (what the meter is checked against);
    `counted_a`: the same with an implausible reading at its connector's limit in force.
    """
    cfg = state.cfg
    meter_a = fresh_grid_a(state, now)
    battery_a = battery_phase_a(state)
    if meter_a is not None and grid_balance(meter_a, tuple(measured_a), battery_a, cfg.grid.phases).trusted:
        return list(meter_a)
    return [abs(a + cfg.grid.base_load_a - battery_a) if p < cfg.grid.phases else 0.0 for p, a in enumerate(counted_a)]


def _counted(state: SquareState, power: PowerControl | None, charger_id: str, n: int, now: datetime) -> CountedCurrent:
    """A connector's current as power sharing counts it; without power sharing, at the charger's maximum."""
    if power is not None:
        return power.counted(charger_id, n, now)
    max_a = float(state.cfg.charger(charger_id).max_current_a)
    return count_current(claim_of(state, charger_id, n, max_a), now)


def square_snapshot(state: SquareState, power: PowerControl | None, now: datetime) -> dict:
    """The state snapshot of interfaces.md §4 (MQTT `P/state` and `GET /api/status`)."""
    cfg = state.cfg
    measured, grid = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    bays = []
    for bay in cfg.bays:
        conn = state.chargers[bay.charger].connectors[bay.connector]
        # The one rule of power sharing (control.md rule 1): no car, a stale or an implausible reading is
        # never shown as a car's current; an implausible one counts at the connector's limit in force.
        counted = _counted(state, power, bay.charger, bay.connector, now)
        for i in range(3):
            p = _grid_phase(state, power, bay.charger, bay.connector, i)
            measured[p] += counted.measured_a[i] or 0.0
            grid[p] += counted.counted_a[i]
        shown_a = counted.shown_a
        light = state.lights.get(bay.id)
        bays.append(
            {
                "id": bay.id,
                "light": light.color if light else None,
                "reason": light.reason if light else None,
                "text": light.text if light else None,
                "occupied": state.sensor_reading(bay.id, now) if bay.sensor else None,
                "charger": bay.charger,
                "connector": bay.connector,
                "status": conn.status,
                "limit_a": power.limit_a(bay.charger, bay.connector) if power is not None else None,
                "current_a": round(shown_a, 1) if shown_a is not None else None,
            }
        )
    phases = cfg.grid.phases
    grid = _grid_estimate(state, measured, grid, now)
    return {
        "site": cfg.site.id,
        "ts": wire_ts(now),
        "timezone": cfg.site.timezone,
        "grid": {"limit_a": cfg.grid.limit_a, "current_a": [round(a, 1) for a in grid[:phases]]},
        "battery": None if cfg.battery is None else _battery_view(state),
        "power": _power_view(state, power),
        "bays": bays,
        "chargers": [
            {"id": c.id, "online": state.chargers[c.id].online, "ocpp": state.chargers[c.id].ocpp_version}
            for c in cfg.chargers
        ],
    }


def _power_view(state: SquareState, power: PowerControl | None) -> dict | None:
    if power is None or power.view is None:
        return None
    v = power.view
    return {
        "grid_a": [round(a, 1) for a in v.budget.grid_a[: state.cfg.grid.phases]],
        "battery_a": [round(a, 1) for a in v.budget.battery_a[: state.cfg.grid.phases]],
        "load_a": [round(a, 1) for a in v.sharing.load_a[: state.cfg.grid.phases]],
        "short": v.sharing.short,
        "grid_source": v.grid_source,
        "battery_setpoint_w": None if v.dispatch is None else round(v.dispatch.setpoint_w),
        "battery_reason": None if v.dispatch is None else v.dispatch.reason,
        "reasons": {d.key: d.reason for d in v.sharing.connectors if d.reason},
    }
