"""Day simulation of the power sharing: a square through whole days of ElaadNL arrivals, accelerated.

Runs laadplein's decision core (`controller.core.sharing`, `controller.core.leases`, `battery.dispatch`, the
same functions the daemon calls) every control period against the simulated square of
`bench.day_model`, without sleeping, and the baselines of `bench.baselines` on the same cars,
chargers and battery; prints energy asked and delivered, overshoot of the grid limit, battery
cycles, and laadplein's share of the perfect planner's bound (`bench.planner`). On a terminal, a
progress bar on stderr follows each controller through the simulated hours.

    python3 -m bench.day_sim [--seed N] [--days D] [--config FILE] [--grid-limit-a A] [--no-battery]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from battery.dispatch import available_a, dispatch, reserve_soc_pct
from battery.dispatch_types import BatteryInput
from bench.baselines import FirstComeCapping, StaticSplit
from bench.day_model import (
    START_SOC_PCT,
    STEP_S,
    BatterySpec,
    Commands,
    ConnectorSpec,
    Controller,
    DayResult,
    Limit,
    SquareSpec,
    SquareView,
    Visit,
    run_day,
)
from bench.planner import Bound, upper_bound
from config.loader import load_config
from config.schema import SquareConfig
from controller.core.leases import LeaseBook, telling_draw_a
from controller.core.sharing import safe_default_a, share
from controller.core.sharing_types import Budget, ConnectorInput
from drivers.contract.orders import SCHEDULE_LEAD_S
from drivers.sim.cars import Arrival, arrivals

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "examples" / "hoofddorp-marktplein.toml"
START_DATE = date(2026, 6, 3)  # a Wednesday: the weekday arrival profile
ARRIVALS_PER_BAY_DAY = 1.9
NON_EV_SHARE = 0.15
TARGET_BOUND_PCT = 97.0
AHEAD_PCT = 2.0  # "clearly ahead": at least this many per cent more energy than a baseline
PROGRESS_EVERY_S = 300.0  # simulated s between updates of the progress bar
ROTATIONS = ("RST", "STR", "TRS")
"""Phase rotations given to chargers without a configured one, by charger order, so that one-phase
cars spread over the grid's phases."""

DESCRIPTIONS = {
    "laadplein": "controller.core.sharing + controller.core.leases + battery.dispatch every period",
    "static split": "each connector of the square: grid limit / all connectors (chargers' built-in "
    "load balancing); battery idle",
    "static split (cars)": "the grid limit split among the connectors with a car, redistributed "
    "every period; battery idle",
    "FCFS capping": "evcc circuits: cars in arrival order get min(their max, grid limit less what the cars "
    "before them draw), < min current -> 0; battery shaves the measured peak one step late",
}


class Laadplein:
    """laadplein's decision core as a controller of the simulated square, wired as the daemon wires it."""

    name = "laadplein"

    def __init__(self, spec: SquareSpec, start: datetime) -> None:
        self.spec = spec
        self.start_utc = start.astimezone(UTC)
        self.tz = start.tzinfo
        b = spec.battery
        self.book = LeaseBook(
            lease_s=spec.lease_s,
            reaction_s=spec.reaction_s,
            battery_revert_s=b.revert_timeout_s if b is not None else None,
            poll_s=b.poll_s if b is not None else 1.0,
        )
        keys = [c.key for c in spec.connectors]  # bay order
        shares = safe_default_a(spec.grid_a, keys, spec.min_current_a)
        self.safe_a = {c.key: min(shares[c.key], c.charger_max_a) for c in spec.connectors}
        for key, limit_a in self.safe_a.items():
            self.book.set_safe_default(key, limit_a)
        self._sessions: dict[str, float] = {}  # key -> when its session started (s)

    def default_a(self, key: str) -> float:
        return self.safe_a[key]

    def control(self, view: SquareView) -> Commands:
        spec, book = self.spec, self.book
        now = self.start_utc + timedelta(seconds=view.now_s)
        inputs = []
        leasable = set()
        for c in view.connectors:
            started = self._sessions.get(c.key)
            if started is not None and (not c.active or c.since_s != started):
                book.end_session(c.key)  # the TxProfile ended with its transaction
                del self._sessions[c.key]
            if c.active and c.since_s is not None:
                self._sessions[c.key] = c.since_s
                leasable.add(c.key)
            draw_at = self.start_utc + timedelta(seconds=c.sample_s) if c.sample_s is not None else None
            draw_a = c.draw_a if c.active else 0.0
            turn = book.connector_state(c.key, now, draw_a, draw_at)
            # as controller/shell/power.py: a meter value may have been measured up to a cycle before it was read
            draw_a = telling_draw_a(draw_a, draw_at, turn.changed_at, spec.reaction_s, lag_s=spec.period_s)
            max_a = min(c.charger_max_a, c.car_max_a) if c.car_max_a is not None else c.charger_max_a
            inputs.append(
                ConnectorInput(
                    key=c.key,
                    bay_id=c.bay_id,
                    phases=c.phases,
                    active=c.active,
                    controllable=c.active,
                    max_a=max_a,
                    draw_a=draw_a,
                    ev_suspended=c.status == "SuspendedEV",
                    in_force_a=turn.in_force_a if c.active else 0.0,
                    settling_from_a=turn.settling_from_a,
                    changed_at=turn.changed_at,
                    running_since=turn.running_since,
                    paused_since=turn.paused_since,
                    resume_offered_at=turn.resume_offered_at,
                )
            )
        battery = self._battery_input(view, now)
        budget = Budget(
            grid_a=(spec.grid_a,) * 3,
            battery_a=available_a(battery) if battery is not None else (0.0, 0.0, 0.0),
            min_current_a=spec.min_current_a,
            reaction_s=spec.reaction_s,
            turn_s=spec.turn_s,
        )
        sharing = share(budget, sorted(inputs, key=lambda i: i.key), now)
        book.remember(sharing, now)
        orders = book.orders(sharing, now, leasable)
        limits = []
        for order in orders:
            first_s = float(int(order.first_period_s)) if order.first_period_s is not None else None  # OCPP: whole s
            limits.append(Limit(order.key, order.limit_a, order.grid_only_a, first_s, spec.lease_s, SCHEDULE_LEAD_S))
            book.sent(order, now, True)
        setpoint_w = None
        if battery is not None:
            setpoint_w = dispatch(battery, sharing.battery_needed_a, sharing.spare_a).setpoint_w
        return Commands(tuple(limits), setpoint_w)

    def _battery_input(self, view: SquareView, now: datetime) -> BatteryInput | None:
        b = self.spec.battery
        if b is None:
            return None
        local = now.astimezone(self.tz)
        return BatteryInput(
            usable=True,
            soc_pct=view.battery_soc_pct,
            capacity_wh=b.capacity_wh,
            max_charge_w=b.max_charge_w,
            max_discharge_w=b.max_discharge_w,
            soc_min_pct=b.soc_min_pct,
            soc_max_pct=b.soc_max_pct,
            reserve_soc_pct=reserve_soc_pct(b.reserve, b.soc_min_pct, local.hour * 60 + local.minute),
            voltage_v=self.spec.voltage_v,
            phases=3,
        )


# --- the scenario and the run --------------------------------------------------------------


def square_from_config(
    cfg: SquareConfig, *, grid_limit_a: float | None = None, battery: bool = True, start_soc_pct: float = START_SOC_PCT
) -> SquareSpec:
    """The benchmark's square from a config, optionally with another grid limit (A) or no battery."""
    if cfg.grid.phases != 3:
        raise ValueError("the day benchmark models three-phase squares only")
    chargers = {c.id: (i, c) for i, c in enumerate(cfg.chargers)}
    connectors = []
    for bay in sorted(cfg.bays, key=lambda b: b.id):
        index, charger = chargers[bay.charger]
        rotation = charger.phase_rotation or ROTATIONS[index % len(ROTATIONS)]
        connectors.append(ConnectorSpec(f"{charger.id}/{bay.connector}", bay.id, charger.max_current_a, rotation))
    b = cfg.battery
    battery_spec = None
    if battery and b is not None:
        battery_spec = BatterySpec(
            capacity_wh=b.capacity_kwh * 1000.0,
            max_charge_w=b.max_charge_w,
            max_discharge_w=b.max_discharge_w,
            soc_min_pct=b.soc_min_pct,
            soc_max_pct=b.soc_max_pct,
            revert_timeout_s=float(b.revert_timeout_s),
            start_soc_pct=start_soc_pct,
            poll_s=b.poll_s,
            reserve=tuple(b.reserve),
        )
    c = cfg.control
    return SquareSpec(
        site_id=cfg.site.id,
        timezone=cfg.site.timezone,
        connectors=tuple(connectors),
        limit_a=float(grid_limit_a if grid_limit_a is not None else cfg.grid.limit_a),
        base_load_a=cfg.grid.base_load_a,
        voltage_v=cfg.grid.voltage_v,
        battery=battery_spec,
        period_s=c.period_s,
        min_current_a=c.min_current_a,
        lease_s=float(c.lease_s),
        turn_s=float(c.turn_s),
        reaction_s=c.reaction_s,
        meter_interval_s=float(c.meter_interval_s),
    )


def place(arrivals: Sequence[Arrival], n_bays: int) -> list[Visit]:
    """Park every arrival in the lowest free bay (index), or nowhere when all are taken.

    Stays are fixed, so where cars park does not depend on how they are charged: every controller
    sees the same visits.
    """
    free_at = [0] * n_bays  # the step from which each bay is free again
    visits = []
    for n, a in enumerate(sorted(arrivals, key=lambda a: a.arrive_s)):
        arrive = math.ceil(a.arrive_s / STEP_S)
        leave = max(arrive + 1, math.ceil(a.leave_s / STEP_S))
        bay = next((i for i in range(n_bays) if free_at[i] <= arrive), None)
        if bay is not None:
            free_at[bay] = leave
        visits.append(Visit(n, a, bay, arrive, leave))
    return visits


@dataclass(frozen=True)
class Scenario:
    """The square and the visits every controller of a run gets."""

    spec: SquareSpec
    start: datetime
    seed: int
    days: int
    visits: tuple[Visit, ...]


@dataclass(frozen=True)
class Report:
    """Every controller's result and the bound, for one scenario (s of wall time)."""

    scenario: Scenario
    results: tuple[DayResult, ...]
    bound: Bound
    bound_wall_s: float
    wall_s: float


def make_scenario(spec: SquareSpec, *, seed: int, days: int = 1, start_date: date = START_DATE) -> Scenario:
    """`days` of ElaadNL arrivals from local midnight of `start_date`, parked in the lowest free bay."""
    start = datetime(start_date.year, start_date.month, start_date.day, tzinfo=ZoneInfo(spec.timezone))
    cars = arrivals(
        seed=seed,
        start=start,
        duration_s=86400.0 * days,
        mean_per_hour=len(spec.connectors) * ARRIVALS_PER_BAY_DAY / 24.0,
        non_ev_share=NON_EV_SHARE,
    )
    return Scenario(spec, start, seed, days, tuple(place(cars, len(spec.connectors))))


def controllers(scenario: Scenario) -> list[Controller]:
    """laadplein and the baselines, fresh for one run."""
    spec = scenario.spec
    return [
        Laadplein(spec, scenario.start),
        StaticSplit(spec, among="square"),
        StaticSplit(spec, among="cars"),
        FirstComeCapping(spec),
    ]


def run(scenario: Scenario, chosen: Sequence[Controller] | None = None, *, progress: Progress | None = None) -> Report:
    """Every controller over the scenario, and the planner's bound; each followed on `progress` when given."""
    began = time.perf_counter()
    results = []
    end_s = max((v.leave_step for v in scenario.visits if v.bay is not None), default=0) * STEP_S
    for controller in chosen if chosen is not None else controllers(scenario):
        task = None
        if progress is not None:
            task = progress.add_task(controller.name, total=end_s / 3600, clock=_sim_clock(scenario, 0.0))
            controller = Followed(controller, scenario, progress, task)
        t0 = time.perf_counter()
        result = run_day(scenario.spec, scenario.visits, controller)
        result.wall_s = time.perf_counter() - t0
        results.append(result)
        if progress is not None and task is not None:  # a run ends early once every parked car is full
            progress.update(task, completed=end_s / 3600, clock=_sim_clock(scenario, end_s))
    planner = progress.add_task("perfect planner", total=None, clock="linear program") if progress is not None else None
    t0 = time.perf_counter()
    bound = upper_bound(scenario.spec, scenario.visits)
    bound_wall_s = time.perf_counter() - t0
    if progress is not None and planner is not None:
        progress.update(planner, total=1, completed=1)
    return Report(scenario, tuple(results), bound, bound_wall_s, time.perf_counter() - began)


def _sim_clock(scenario: Scenario, now_s: float) -> str:
    """The simulated moment `now_s` after the start, on the square's wall clock."""
    at = scenario.start.astimezone(UTC) + timedelta(seconds=now_s)
    return f"{at.astimezone(scenario.start.tzinfo):%a %Y-%m-%d %H:%M %Z}"


class Followed:
    """A controller that moves its progress bar to the simulated time it has reached; decides as the one it wraps."""

    def __init__(self, inner: Controller, scenario: Scenario, progress: Progress, task: TaskID) -> None:
        self.name = inner.name
        self._inner, self._scenario, self._progress, self._task = inner, scenario, progress, task
        self._shown_s = 0.0

    def default_a(self, key: str) -> float:
        return self._inner.default_a(key)

    def control(self, view: SquareView) -> Commands:
        if view.now_s - self._shown_s >= PROGRESS_EVERY_S:
            self._shown_s = view.now_s
            self._progress.update(self._task, completed=view.now_s / 3600, clock=_sim_clock(self._scenario, view.now_s))
        return self._inner.control(view)


def progress_bar(console: Console) -> Progress:
    """The bar `main` shows on a terminal: controller, simulated hours, the square's local time, wall time."""
    return Progress(
        TextColumn("{task.description:<20}"), BarColumn(), TextColumn("{task.fields[clock]}"), TimeElapsedColumn(),
        console=console, transient=True,
    )


# --- the table ---------------------------------------------------------------------------------


def _kwh(wh: float) -> str:
    return f"{wh / 1000:.1f}"


def format_report(report: Report) -> str:
    """The printed table and the comparison with the bound and the baselines."""
    sc = report.scenario
    spec = sc.spec
    b = spec.battery
    evs = sum(1 for v in sc.visits if v.ev)
    first = report.results[0]
    lines = [
        f"Day simulation: {spec.site_id}, seed {sc.seed}, {sc.days} day(s) from {sc.start:%Y-%m-%d %H:%M %Z}",
        f"grid {len(spec.connectors)} connectors, 3 x {spec.limit_a:g} A (base load {spec.base_load_a:g} A); "
        + (
            f"battery {b.capacity_wh / 1000:g} kWh, {b.max_charge_w / 1000:g}/{b.max_discharge_w / 1000:g} kW, "
            f"SoC {b.soc_min_pct:g}-{b.soc_max_pct:g} %, starts at {b.start_soc_pct:g} %"
            if b is not None
            else "no battery"
        ),
        (
            f"control: period {spec.period_s:g} s, min {spec.min_current_a:g} A, reaction {spec.reaction_s:g} s, "
            f"lease {spec.lease_s:g} s, turn {spec.turn_s:g} s; an overshoot is within the reaction time for its "
            f"first {spec.reaction_s + spec.period_s:g} s"
        ),
        (
            f"arrivals: {len(sc.visits)} ({evs} EVs); EVs that found no bay: {first.ev_no_bay} "
            f"(cars of any kind: {first.cars_no_bay})"
        ),
        "",
    ]
    head = (
        f"{'controller':<21}{'asked':>8}{'delivered':>11}{'%':>7}{'not del.':>10}{'no bay':>8}"
        f"{'overshoot':>11}{'longest':>9}{'beyond':>9}{'longest':>9}{'cycles':>8}{'SoC end':>9}{'lapses':>8}{'wall':>7}"
    )
    units = f"{'':<21}{'kWh':>8}{'kWh':>11}{'':>7}{'kWh':>10}{'EVs':>8}{'A':>11}{'s':>9}{'A':>9}{'s':>9}{'':>8}{'%':>9}{'':>8}{'s':>7}"
    lines += [head, units]
    for r in report.results:
        o = r.overshoot
        pct = 100.0 * r.delivered_wh / r.asked_wh if r.asked_wh else 100.0
        soc = f"{r.soc_end_pct:.1f}" if r.soc_end_pct is not None else "-"
        lines.append(
            f"{r.controller:<21}{_kwh(r.asked_wh):>8}{_kwh(r.delivered_wh):>11}{pct:>7.1f}{_kwh(r.not_delivered_wh):>10}"
            f"{r.ev_no_bay:>8}{o.worst_a:>11.1f}{o.longest_s:>9.0f}{o.beyond_worst_a:>9.1f}{o.beyond_longest_s:>9.0f}"
            f"{r.battery_cycles:>8.2f}{soc:>9}{r.lease_lapses:>8}{r.wall_s:>7.1f}"
        )
    bound_pct = 100.0 * report.bound.delivered_wh / first.asked_wh if first.asked_wh else 100.0
    lines.append(
        f"{'perfect planner':<21}{_kwh(first.asked_wh):>8}{_kwh(report.bound.delivered_wh):>11}{bound_pct:>7.1f}"
        f"{_kwh(first.asked_wh - report.bound.delivered_wh):>10}{first.ev_no_bay:>8}{'(upper bound: LP over 60 s slots)':>42}"
        f"{report.bound_wall_s:>27.1f}"
    )
    lines.append("")
    lines += [f"  {name}: {text}" for name, text in DESCRIPTIONS.items() if any(r.controller == name for r in report.results)]
    lines.append(
        "  perfect planner: knows every arrival, stay and demand; ignores the minimum current and the reaction "
        "time (an upper bound)"
    )
    lines.append("  lapses: leases that ran out while their car was still parked; cycles: discharged energy / capacity")
    lp = next((r for r in report.results if r.controller == "laadplein"), None)
    if lp is not None:
        lines.append("")
        lines += verdict(lp, report)
    lines.append(f"wall time of the run: {report.wall_s:.1f} s")
    return "\n".join(lines)


def verdict(lp: DayResult, report: Report) -> list[str]:
    """laadplein against the bound, the baselines and the targets."""
    bound_wh = report.bound.delivered_wh
    share_pct = 100.0 * lp.delivered_wh / bound_wh if bound_wh > 0 else 100.0
    lines = [f"laadplein delivered {share_pct:.1f} % of the bound"]
    ahead = True
    for r in report.results:
        if r is lp:
            continue
        gain = f"{(lp.delivered_wh - r.delivered_wh) / 1000:+.1f} kWh"
        if r.delivered_wh > 0:
            ratio = lp.delivered_wh / r.delivered_wh
            lines.append(f"  {ratio:.3f} x the energy of {r.controller} ({gain})")
        else:
            ratio = float("inf") if lp.delivered_wh > 0 else 1.0
            lines.append(f"  {r.controller} delivered nothing ({gain})")
        ahead &= ratio >= 1.0 + AHEAD_PCT / 100.0
    checks = [
        ("no overshoot beyond the reaction time", lp.overshoot.beyond_worst_a == 0.0),
        (f"at least {TARGET_BOUND_PCT:g} % of the bound", share_pct >= TARGET_BOUND_PCT),
        (f"at least {AHEAD_PCT:g} % more energy than every baseline", ahead),
    ]
    lines.append("targets: " + "; ".join(f"{what}: {'yes' if ok else 'NO'}" for what, ok in checks))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="seed of the arrivals (default 1)")
    ap.add_argument("--days", type=int, default=1, help="days of arrivals (default 1)")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the square (default: the Hoofddorp example)")
    ap.add_argument("--grid-limit-a", type=float, default=None, help="another grid limit (A per phase)")
    ap.add_argument("--no-battery", action="store_true", help="leave the battery out")
    args = ap.parse_args(argv)
    if args.days < 1:
        ap.error("--days must be at least 1")
    cfg = load_config(args.config)
    spec = square_from_config(cfg, grid_limit_a=args.grid_limit_a, battery=not args.no_battery)
    scenario = make_scenario(spec, seed=args.seed, days=args.days)
    if sys.stderr.isatty():  # never into a pipe or a log: those get the table alone
        with progress_bar(Console(stderr=True)) as progress:
            report = run(scenario, progress=progress)
    else:
        report = run(scenario)
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
