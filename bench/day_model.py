"""The simulated square of the day benchmark, stepped second by second without sleeping.

Bays, chargers that follow a new limit after their reaction time, ElaadNL cars, the buffer battery
and the grid connection, with the accounts the benchmark reports: energy asked and delivered,
overshoot of the grid limit, battery throughput. Whatever decides the limits (laadplein's core or
a baseline) is a `Controller`: it sees a frozen `SquareView` each control period and answers with
`Commands`. Deterministic: the same square, visits and controller give the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from battery.model import BatteryModel
from config.schema_devices import ReserveWindow
from drivers.sim.cars import Arrival, CarState
from drivers.sim.charger_math import Follow, charging_status, follow_limit

STEP_S = 1.0
OVERSHOOT_EPS_A = 0.01
"""Grid current above the limit by less than this is float noise, not an overshoot."""
START_SOC_PCT = 50.0


@dataclass(frozen=True)
class ConnectorSpec:
    """One bay's connector (A): its key ("CP01/1"), the charger's maximum and phase rotation."""

    key: str
    bay_id: str
    charger_max_a: float
    rotation: str

    def grid_phase(self, charger_phase: int) -> int:
        """The grid phase (0-2) wired to the charger's phase `charger_phase` (0-2)."""
        return "RST".index(self.rotation[charger_phase])

    def car_phases(self, car_phases: int) -> tuple[int, ...]:
        """The grid phases a car charging on `car_phases` phases draws from, sorted."""
        return tuple(sorted(self.grid_phase(p) for p in range(car_phases)))


@dataclass(frozen=True)
class BatterySpec:
    """The buffer battery (Wh, W, %, s) and the state of charge the day starts with."""

    capacity_wh: float
    max_charge_w: float
    max_discharge_w: float
    soc_min_pct: float
    soc_max_pct: float
    revert_timeout_s: float
    start_soc_pct: float = START_SOC_PCT
    efficiency: float = 0.95
    poll_s: float = 1.0
    reserve: tuple[ReserveWindow, ...] = ()


@dataclass(frozen=True)
class SquareSpec:
    """The square as the benchmark needs it (A, V, s); connectors in bay order."""

    site_id: str
    timezone: str
    connectors: tuple[ConnectorSpec, ...]
    limit_a: float
    base_load_a: float
    voltage_v: float
    battery: BatterySpec | None
    period_s: float
    min_current_a: float
    lease_s: float
    turn_s: float
    reaction_s: float
    meter_interval_s: float = 5.0

    @property
    def grid_a(self) -> float:
        """What the grid leaves for the chargers per phase (A): the limit less the base load."""
        return self.limit_a - self.base_load_a


# --- where the cars park -----------------------------------------------------------------------


@dataclass(frozen=True)
class Visit:
    """One arrival and where it parked: `bay` indexes the square's connectors, None when none was free.

    The car is in its bay for the whole steps `arrive_step` <= t < `leave_step`.
    """

    n: int
    arrival: Arrival
    bay: int | None
    arrive_step: int
    leave_step: int

    @property
    def ev(self) -> bool:
        return self.arrival.kind == "ev"


# --- what a controller sees and says -----------------------------------------------------------


@dataclass(frozen=True)
class ConnectorView:
    """One connector at the start of a control period (A, s).

    `active`: an EV is plugged in with a session. `phases`: the grid phases its car draws from
    (all three without a car). `draw_a`: the largest phase current of the charger's latest meter
    sample (every `meter_interval_s`), taken at `sample_s`; None before the session's first sample.
    `status`: what the charger reports for the session (Charging, SuspendedEV when the car
    takes nothing more, SuspendedEVSE below the minimum current), None without one.
    """

    key: str
    bay_id: str
    charger_max_a: float
    active: bool
    phases: tuple[int, ...]
    car_max_a: float | None
    draw_a: float | None
    sample_s: float | None
    status: str | None
    since_s: float | None


@dataclass(frozen=True)
class SquareView:
    """The square at `now_s` (s from the start): connectors in bay order, the grid as measured over
    the last step (A per phase) and the battery (%, W, positive = discharging)."""

    now_s: float
    connectors: tuple[ConnectorView, ...]
    grid_a: tuple[float, float, float]
    battery_soc_pct: float | None
    battery_power_w: float


@dataclass(frozen=True)
class Limit:
    """A limit sent to a connector (A): `limit_a` from `lead_s` before sending, after `first_period_s`
    of that the `grid_only_a`, until `lease_s` after that start; then the connector's default again.
    Without `lease_s` the limit holds until the session ends (a charger setting, not a lease)."""

    key: str
    limit_a: float
    grid_only_a: float | None = None
    first_period_s: float | None = None
    lease_s: float | None = None
    lead_s: float = 0.0


@dataclass(frozen=True)
class Commands:
    """A controller's answer for one period: limits to send and the battery's setpoint (W, None: none sent)."""

    limits: tuple[Limit, ...] = ()
    battery_setpoint_w: float | None = None


class Controller(Protocol):
    """Decides the limits of the simulated square."""

    name: str

    def default_a(self, key: str) -> float:
        """The limit (A) a charger applies to a new session before it is sent any."""
        ...

    def control(self, view: SquareView) -> Commands:
        """The limits and battery setpoint for this period."""
        ...


# --- accounts ----------------------------------------------------------------------------------


@dataclass
class OvershootMeter:
    """Episodes of grid current above the limit (A, s); the part of an episode past `allowance_s`
    (the chargers' reaction time plus a control period) is "beyond the reaction time"."""

    allowance_s: float
    worst_a: float = 0.0
    longest_s: float = 0.0
    beyond_worst_a: float = 0.0
    beyond_longest_s: float = 0.0
    episodes: int = 0
    beyond_episodes: int = 0
    _run_s: float = 0.0

    def add(self, over_a: float, dt_s: float = STEP_S) -> None:
        """One step with the worst phase `over_a` above the limit (negative: below)."""
        if over_a <= OVERSHOOT_EPS_A:
            self._run_s = 0.0
            return
        if self._run_s == 0.0:
            self.episodes += 1
        self._run_s += dt_s
        self.worst_a = max(self.worst_a, over_a)
        self.longest_s = max(self.longest_s, self._run_s)
        beyond_s = self._run_s - self.allowance_s
        if beyond_s > 1e-9:
            if beyond_s <= dt_s + 1e-9:
                self.beyond_episodes += 1
            self.beyond_worst_a = max(self.beyond_worst_a, over_a)
            self.beyond_longest_s = max(self.beyond_longest_s, beyond_s)


@dataclass
class DayResult:
    """What one controller achieved over the visits (Wh, A, s)."""

    controller: str
    steps: int
    asked_wh: float
    delivered_wh: float
    evs: int
    ev_no_bay: int
    cars_no_bay: int
    overshoot: OvershootMeter
    peak_grid_a: float
    battery_capacity_wh: float | None
    battery_discharged_wh: float = 0.0
    battery_charged_wh: float = 0.0
    soc_start_pct: float | None = None
    soc_end_pct: float | None = None
    lease_lapses: int = 0
    delivered_by_visit: dict[int, float] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def not_delivered_wh(self) -> float:
        return self.asked_wh - self.delivered_wh

    @property
    def battery_cycles(self) -> float:
        """Full cycles: energy discharged over the capacity."""
        return self.battery_discharged_wh / self.battery_capacity_wh if self.battery_capacity_wh else 0.0


# --- the square --------------------------------------------------------------------------------


@dataclass
class _Bay:
    visit: Visit | None = None
    car: CarState | None = None
    limit: Limit | None = None
    sent_s: float = 0.0
    follow: Follow | None = None
    draw_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sample: tuple[float, float] | None = None  # the charger's latest meter sample: (A, taken at s)


def run_day(spec: SquareSpec, visits: Sequence[Visit], controller: Controller, *, steps: int | None = None) -> DayResult:
    """Run the square through every visit (or `steps` seconds) under `controller`; the accounts."""
    return DaySquare(spec, visits, controller).run(steps)


class DaySquare:
    """The square under one controller; `run` steps it to the end."""

    def __init__(self, spec: SquareSpec, visits: Sequence[Visit], controller: Controller) -> None:
        self.spec = spec
        self.visits = list(visits)
        self.controller = controller
        self.bays = [_Bay() for _ in spec.connectors]
        b = spec.battery
        self.battery = None
        if b is not None:
            self.battery = BatteryModel(
                capacity_wh=b.capacity_wh,
                max_charge_w=b.max_charge_w,
                max_discharge_w=b.max_discharge_w,
                soc_pct=b.start_soc_pct,
                soc_min_pct=b.soc_min_pct,
                soc_max_pct=b.soc_max_pct,
                efficiency=b.efficiency,
            )
        self.grid_a: tuple[float, float, float] = (spec.base_load_a,) * 3
        evs = [v for v in self.visits if v.ev]
        self.result = DayResult(
            controller=controller.name,
            steps=0,
            asked_wh=sum(v.arrival.energy_wanted_wh for v in evs),
            delivered_wh=0.0,
            evs=len(evs),
            ev_no_bay=sum(1 for v in evs if v.bay is None),
            cars_no_bay=sum(1 for v in self.visits if v.bay is None),
            overshoot=OvershootMeter(spec.reaction_s + spec.period_s),
            peak_grid_a=0.0,
            battery_capacity_wh=b.capacity_wh if b is not None else None,
            soc_start_pct=b.start_soc_pct if b is not None else None,
            delivered_by_visit={v.n: 0.0 for v in evs if v.bay is not None},
        )
        self._arrive: dict[int, list[Visit]] = {}
        self._leave: dict[int, list[Visit]] = {}
        for v in self.visits:
            if v.bay is not None:
                self._arrive.setdefault(v.arrive_step, []).append(v)
                self._leave.setdefault(v.leave_step, []).append(v)
        self._last_arrival = max(self._arrive, default=0)
        self._period_steps = max(1, round(spec.period_s / STEP_S))
        self._meter_steps = max(1, round(spec.meter_interval_s / STEP_S))

    def end_step(self) -> int:
        """The first step at which every parked car has left."""
        return max((v.leave_step for v in self.visits if v.bay is not None), default=0)

    def done(self, t: int) -> bool:
        """Nothing more can be delivered from step `t` on: no car still to come, every parked car full."""
        return t >= self._last_arrival and all(bay.car is None or bay.car.full for bay in self.bays)

    def run(self, steps: int | None = None) -> DayResult:
        """Step from 0 to `steps`, by default until nothing more can be delivered; the accounts.

        Some cars stay parked for days after they are full: stopping once every parked car is full
        spares simulating those hours, and changes no energy figure.
        """
        for t in range(self.end_step() if steps is None else steps):
            if steps is None and self.done(t):
                break
            self.step(t)
        r = self.result
        if self.battery is not None:
            r.soc_end_pct = self.battery.soc_pct
        return r

    def view(self, t: int) -> SquareView:
        """What a controller sees at step `t`."""
        out = []
        for spec, bay in zip(self.spec.connectors, self.bays):
            car = bay.car
            out.append(
                ConnectorView(
                    key=spec.key,
                    bay_id=spec.bay_id,
                    charger_max_a=spec.charger_max_a,
                    active=car is not None,
                    phases=spec.car_phases(car.car.phases) if car is not None else (0, 1, 2),
                    car_max_a=car.car.max_current_a(self.spec.voltage_v) if car is not None else None,
                    draw_a=bay.sample[0] if bay.sample is not None else None,
                    sample_s=bay.sample[1] if bay.sample is not None else None,
                    status=charging_status(bay.follow.applied_a, car.full) if car is not None and bay.follow else None,
                    since_s=bay.visit.arrive_step * STEP_S if car is not None and bay.visit is not None else None,
                )
            )
        battery = self.battery
        return SquareView(
            now_s=t * STEP_S,
            connectors=tuple(out),
            grid_a=self.grid_a,
            battery_soc_pct=battery.soc_pct if battery is not None else None,
            battery_power_w=battery.power_w if battery is not None else 0.0,
        )

    def _in_force_a(self, spec: ConnectorSpec, bay: _Bay, now_s: float) -> float:
        """The limit the charger holds for this connector now (A): its lease, else the default."""
        limit = bay.limit
        if limit is not None:
            start_s = bay.sent_s - limit.lead_s
            if limit.lease_s is not None and now_s >= start_s + limit.lease_s:
                bay.limit = None
                self.result.lease_lapses += 1
            elif limit.first_period_s is not None and limit.grid_only_a is not None and now_s >= start_s + limit.first_period_s:
                return min(limit.grid_only_a, spec.charger_max_a)
            else:
                return min(limit.limit_a, spec.charger_max_a)
        return min(self.controller.default_a(spec.key), spec.charger_max_a)

    def _arrivals_and_departures(self, t: int) -> None:
        for v in self._leave.get(t, ()):
            assert v.bay is not None
            self.bays[v.bay] = _Bay()  # a TxProfile ends with its transaction
        for v in self._arrive.get(t, ()):
            assert v.bay is not None
            bay = _Bay(visit=v)
            if v.ev:
                bay.car = CarState.from_arrival(v.arrival)
                spec = self.spec.connectors[v.bay]
                bay.follow = Follow(min(self.controller.default_a(spec.key), spec.charger_max_a))
            self.bays[v.bay] = bay

    def _apply(self, commands: Commands, t: int) -> None:
        keys = {c.key: i for i, c in enumerate(self.spec.connectors)}
        for limit in commands.limits:
            bay = self.bays[keys[limit.key]]
            if bay.car is None:
                continue  # a TxProfile needs a transaction: the charger refuses it
            bay.limit = limit
            bay.sent_s = t * STEP_S
        if commands.battery_setpoint_w is not None and self.battery is not None:
            assert self.spec.battery is not None
            self.battery.command(commands.battery_setpoint_w, self.spec.battery.revert_timeout_s)

    def step(self, t: int) -> None:
        """One step: cars come and go, the controller decides (once a period), then the physics."""
        spec = self.spec
        self._arrivals_and_departures(t)
        if t % self._meter_steps == 0:
            for bay in self.bays:
                if bay.car is not None and bay.visit is not None and bay.visit.arrive_step < t:
                    bay.sample = (max(bay.draw_a), t * STEP_S)  # what the last step drew
        if t % self._period_steps == 0:
            self._apply(self.controller.control(self.view(t)), t)
        now_s = t * STEP_S
        grid = [spec.base_load_a] * 3
        r = self.result
        for cspec, bay in zip(spec.connectors, self.bays):
            car = bay.car
            if car is None:
                bay.draw_a = (0.0, 0.0, 0.0)
                continue
            assert bay.follow is not None and bay.visit is not None
            bay.follow = follow_limit(bay.follow, self._in_force_a(cspec, bay, now_s), now_s, spec.reaction_s)
            applied_a = bay.follow.applied_a
            _, phase_a = car.draw(applied_a, spec.voltage_v)
            draw = [0.0, 0.0, 0.0]
            for p in range(car.car.phases):
                draw[cspec.grid_phase(p)] = phase_a[p]
            bay.draw_a = (draw[0], draw[1], draw[2])
            for p in range(3):
                grid[p] += draw[p]
            taken_wh = car.step(STEP_S, applied_a, spec.voltage_v)
            r.delivered_wh += taken_wh
            r.delivered_by_visit[bay.visit.n] += taken_wh
        if self.battery is not None:
            self.battery.step(STEP_S)
            power_w = self.battery.power_w
            if power_w > 0:
                r.battery_discharged_wh += power_w * STEP_S / 3600.0
            else:
                r.battery_charged_wh -= power_w * STEP_S / 3600.0
            per_phase_a = power_w / (3 * spec.voltage_v)  # discharging relieves the grid
            grid = [g - per_phase_a for g in grid]
        self.grid_a = (grid[0], grid[1], grid[2])
        worst_a = max(grid)
        r.peak_grid_a = max(r.peak_grid_a, worst_a)
        r.overshoot.add(worst_a - spec.limit_a, STEP_S)
        r.steps = t + 1

