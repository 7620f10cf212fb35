"""The day benchmark on a short, small scenario: the accounts add up, the bound bounds, overshoot is measured.

Four bays of the Hoofddorp square on 3 x 24 A with its battery, three hours of ElaadNL arrivals,
every controller of `bench/day_sim.py` plus one that ignores the limit.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bench import day_sim
from bench.baselines import FirstComeCapping, StaticSplit
from bench.day_model import (
    Commands,
    DaySquare,
    Limit,
    OvershootMeter,
    SquareSpec,
    SquareView,
    Visit,
    run_day,
)
from bench.day_sim import place, square_from_config
from bench.planner import upper_bound
from config.loader import load_config
from drivers.sim.cars import Arrival, CarModel, CarState, arrivals

START = datetime(2026, 6, 3, 14, tzinfo=ZoneInfo("Europe/Amsterdam"))
ZOE = CarModel("Zoe", 52_000.0, 22_000.0, 3)  # 31.9 A per phase
ONE_PHASE = CarModel("one-phase", 40_000.0, 7_360.0, 1)  # 32 A on one phase


def small_spec(limit_a: float = 24.0, battery: bool = True) -> SquareSpec:
    spec = square_from_config(load_config(day_sim.DEFAULT_CONFIG), grid_limit_a=limit_a, battery=battery)
    return dataclasses.replace(spec, connectors=spec.connectors[:4])


def ev(arrive_s: float, stay_s: float, energy_wh: float, car: CarModel = ZOE, soc_pct: float = 30.0) -> Arrival:
    return Arrival(arrive_s, "ev", car, stay_s, energy_wh, soc_pct)


class IgnoresTheLimit:
    """A broken controller: every car may draw its charger's maximum, whatever the grid."""

    name = "ignores the limit"

    def default_a(self, key: str) -> float:
        return 32.0

    def control(self, view: SquareView) -> Commands:
        return Commands()


@pytest.fixture(scope="module")
def report() -> day_sim.Report:
    spec = small_spec()
    visits = place(arrivals(seed=1, start=START, duration_s=3 * 3600, mean_per_hour=3.0), len(spec.connectors))
    scenario = day_sim.Scenario(spec, START, seed=1, days=1, visits=tuple(visits))
    return day_sim.run(scenario, [*day_sim.controllers(scenario), IgnoresTheLimit()])


def test_the_scenario_is_busy_enough_to_matter(report: day_sim.Report) -> None:
    visits = report.scenario.visits
    assert sum(1 for v in visits if v.ev and v.bay is not None) >= 4
    assert any(v.bay is None for v in visits)  # some found no bay
    assert {r.controller for r in report.results} == {
        "laadplein", "static split", "static split (cars)", "FCFS capping", "ignores the limit",
    }
    # not every car can have what it asks (no bay, short stays, a small grid): the figures differ
    assert report.bound.delivered_wh < report.results[0].asked_wh


def test_energy_accounts_add_up(report: day_sim.Report) -> None:
    wanted = {v.n: v.arrival.energy_wanted_wh for v in report.scenario.visits if v.ev}
    for r in report.results:
        assert r.asked_wh == pytest.approx(sum(wanted.values()))
        assert 0.0 < r.delivered_wh <= r.asked_wh + 1e-6, r.controller
        assert r.not_delivered_wh == pytest.approx(r.asked_wh - r.delivered_wh)
        assert r.delivered_wh == pytest.approx(sum(r.delivered_by_visit.values()))
        for n, wh in r.delivered_by_visit.items():
            assert 0.0 <= wh <= wanted[n] + 1e-6, (r.controller, n)
        no_bay = [v for v in report.scenario.visits if v.ev and v.bay is None]
        assert r.ev_no_bay == len(no_bay) and not set(r.delivered_by_visit) & {v.n for v in no_bay}


def test_nobody_beats_the_bound_while_keeping_the_limit(report: day_sim.Report) -> None:
    bound_wh = report.bound.delivered_wh
    assert bound_wh <= report.results[0].asked_wh + 1e-6
    for r in report.results:
        if r.overshoot.worst_a == 0.0:
            assert r.delivered_wh <= bound_wh * 1.001 + 1.0, r.controller
        elif r.overshoot.beyond_worst_a == 0.0:  # brief overshoots buy a little at most
            assert r.delivered_wh <= bound_wh * 1.01 + 1.0, r.controller


def test_battery_energy_balance(report: day_sim.Report) -> None:
    b = report.scenario.spec.battery
    assert b is not None
    for r in report.results:
        stored_wh = b.capacity_wh * (r.soc_end_pct - r.soc_start_pct) / 100.0
        assert stored_wh == pytest.approx(
            r.battery_charged_wh * b.efficiency - r.battery_discharged_wh / b.efficiency, abs=1e-3
        ), r.controller
        assert r.battery_cycles == pytest.approx(r.battery_discharged_wh / b.capacity_wh)
        assert b.soc_min_pct - 1e-9 <= r.soc_end_pct <= b.soc_max_pct + 1e-9
    used = [r for r in report.results if r.battery_discharged_wh > 0]
    assert {r.controller for r in used} >= {"laadplein"}
    assert all(r.battery_discharged_wh == 0 for r in report.results if r.controller.startswith("static split"))


def test_overshoot_is_measured(report: day_sim.Report) -> None:
    greedy = next(r for r in report.results if r.controller == "ignores the limit")
    assert greedy.overshoot.worst_a > 20.0
    assert greedy.overshoot.beyond_worst_a > 0.0 and greedy.overshoot.beyond_longest_s > 60.0
    assert greedy.peak_grid_a == pytest.approx(report.scenario.spec.limit_a + greedy.overshoot.worst_a)
    for name in ("static split", "static split (cars)"):
        r = next(r for r in report.results if r.controller == name)
        assert r.overshoot.worst_a == 0.0 and r.peak_grid_a <= report.scenario.spec.limit_a + 1e-9


def test_overshoot_meter_allows_the_reaction_time() -> None:
    meter = OvershootMeter(allowance_s=11.0)
    for over_a in [2.0] * 11 + [-1.0] + [5.0] * 14 + [0.0] + [1.0]:
        meter.add(over_a)
    assert (meter.episodes, meter.longest_s, meter.worst_a) == (3, 14.0, 5.0)
    assert (meter.beyond_episodes, meter.beyond_longest_s, meter.beyond_worst_a) == (1, 3.0, 5.0)
    meter.add(0.005)  # float noise is not an overshoot
    assert meter.episodes == 3


def test_the_report_names_every_figure(report: day_sim.Report) -> None:
    text = day_sim.format_report(report)
    for word in ("laadplein", "static split (cars)", "FCFS capping", "perfect planner", "% of the bound", "targets:"):
        assert word in text


def test_cars_park_in_the_lowest_free_bay_or_leave() -> None:
    cars = [ev(0, 100, 1000), ev(10, 1000, 1000), ev(50, 100, 1000), Arrival(60, "non_ev", None, 500, 0.0, None),
            ev(70, 100, 1000), ev(120, 100, 1000)]
    visits = place(cars, 3)
    assert [v.bay for v in visits] == [0, 1, 2, None, None, 0]  # the non-EV and the EV at 70 s find all taken
    spec = small_spec(battery=False)
    result = run_day(dataclasses.replace(spec, connectors=spec.connectors[:3]), visits, StaticSplit(spec))
    assert (result.evs, result.ev_no_bay, result.cars_no_bay) == (5, 1, 2)
    assert result.asked_wh == pytest.approx(5000.0)  # the EV that found no bay asked too


def test_phase_rotation_spreads_one_phase_cars() -> None:
    spec = small_spec(limit_a=80.0, battery=False)
    assert [c.rotation for c in spec.connectors] == ["RST", "RST", "STR", "STR"]
    # a one-phase car in bay B03 (CP02, rotation STR) draws from the grid's L2
    visits = [Visit(0, ev(0, 60, 5000, ONE_PHASE), 2, 0, 60)]
    square = DaySquare(spec, visits, StaticSplit(spec))
    square.step(0)
    l1, l2, l3 = square.grid_a
    assert l2 == pytest.approx(20.0) and l1 == l3 == 0.0  # 80 A / 4 connectors
    view = square.view(1)
    assert view.connectors[2].phases == (1,) and view.connectors[0].phases == (0, 1, 2)


def test_chargers_follow_a_new_limit_after_the_reaction_time() -> None:
    spec = small_spec(limit_a=80.0, battery=False)
    visits = [Visit(0, ev(0, 3600, 20_000), 0, 0, 3600)]
    square = DaySquare(spec, visits, FirstComeCapping(spec))  # starts the car at 0 A, then gives it its max
    drew = []
    for t in range(15):
        square.step(t)
        drew.append(max(square.bays[0].draw_a))
    assert drew[: int(spec.reaction_s)] == [0.0] * int(spec.reaction_s)
    assert drew[int(spec.reaction_s)] == pytest.approx(31.8)


def test_bound_of_one_car_on_a_small_grid() -> None:
    spec = small_spec(limit_a=10.0, battery=False)
    visits = [Visit(0, ev(0, 3600, 40_000), 0, 0, 3600)]
    bound = upper_bound(spec, visits)
    assert bound.delivered_wh == pytest.approx(10.0 * 230.0 * 3, rel=1e-6)  # the grid, not the car, limits
    assert run_day(spec, visits, FirstComeCapping(spec)).delivered_wh <= bound.delivered_wh


def test_bound_follows_the_cars_taper() -> None:
    spec = small_spec(limit_a=80.0, battery=False)
    arrival = ev(0, 1800, 10_400, soc_pct=80.0)  # 80 % -> 100 % in half an hour: all of it in the taper
    bound = upper_bound(spec, [Visit(0, arrival, 0, 0, 1800)])
    car = CarState.from_arrival(arrival)
    alone_wh = sum(car.step(1.0, 32.0) for _ in range(1800))  # what the car takes when offered its maximum
    assert alone_wh < arrival.energy_wanted_wh * 0.99  # the taper binds
    assert alone_wh <= bound.delivered_wh <= alone_wh * 1.02


def test_the_battery_raises_the_bound() -> None:
    visits = [Visit(0, ev(0, 3600, 40_000), 0, 0, 3600)]
    without = upper_bound(small_spec(limit_a=10.0, battery=False), visits).delivered_wh
    with_battery = upper_bound(small_spec(limit_a=10.0), visits).delivered_wh
    # the battery lifts it to the car's maximum (22 kW) for the hour
    assert with_battery == pytest.approx(22_000.0, rel=1e-6) and without == pytest.approx(6900.0, rel=1e-6)


def test_the_bound_counts_the_batterys_energy_and_power() -> None:
    visits = [Visit(0, ev(0, 3600, 40_000), 0, 0, 3600)]
    spec = small_spec(limit_a=10.0)
    assert spec.battery is not None
    nearly_empty = dataclasses.replace(spec, battery=dataclasses.replace(spec.battery, start_soc_pct=15.0))
    # 5 kWh above the 10 % floor, of which 95 % reach the square
    assert upper_bound(nearly_empty, visits).delivered_wh == pytest.approx(6900.0 + 5000.0 * 0.95, rel=1e-6)
    weak = dataclasses.replace(spec, battery=dataclasses.replace(spec.battery, max_discharge_w=3000.0))
    # 3 kW spread over three phases: 4.3 A more per phase for the car
    assert upper_bound(weak, visits).delivered_wh == pytest.approx(6900.0 + 3000.0, rel=1e-6)


def test_same_scenario_same_result() -> None:
    spec = small_spec()
    visits = place(arrivals(seed=2, start=START, duration_s=3600, mean_per_hour=3.0), len(spec.connectors))
    first = run_day(spec, visits, FirstComeCapping(spec))
    again = run_day(spec, visits, FirstComeCapping(spec))
    assert (first.delivered_wh, first.overshoot.worst_a, first.soc_end_pct) == (
        again.delivered_wh, again.overshoot.worst_a, again.soc_end_pct,
    )


class SendsOnce:
    """Sends one lease at the first period, then nothing: the square must fall back by itself."""

    name = "sends once"

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.sent = False

    def default_a(self, key: str) -> float:
        return 6.0

    def control(self, view: SquareView) -> Commands:
        if self.sent or not view.connectors[0].active:
            return Commands(battery_setpoint_w=6900.0)
        self.sent = True
        return Commands((self.limit,), 6900.0)


def test_a_lease_drops_to_grid_only_then_runs_out_to_the_default() -> None:
    spec = dataclasses.replace(small_spec(limit_a=80.0), reaction_s=0.0)
    lease = Limit("CP01/1", 20.0, grid_only_a=10.0, first_period_s=30.0, lease_s=60.0, lead_s=5.0)
    visits = [Visit(0, ev(0, 3600, 40_000), 0, 0, 3600)]
    square = DaySquare(spec, visits, SendsOnce(lease))
    drew = []
    for t in range(70):
        square.step(t)
        drew.append(max(square.bays[0].draw_a))
    # the schedule starts 5 s before it was sent (t = 0): 20 A until 25 s, 10 A until 55 s, then the default
    assert drew[:25] == [20.0] * 25 and drew[25:55] == [10.0] * 30 and drew[55:] == [6.0] * 15
    assert square.result.lease_lapses == 1


def test_battery_discharge_relieves_the_grid() -> None:
    spec = dataclasses.replace(small_spec(limit_a=80.0), reaction_s=0.0)
    square = DaySquare(spec, [Visit(0, ev(0, 3600, 40_000), 0, 0, 3600)], SendsOnce(Limit("CP01/1", 20.0)))
    square.step(0)
    # a 20 A three-phase car, less 6900 W of battery = 10 A per phase
    assert square.grid_a == pytest.approx((10.0, 10.0, 10.0))
    assert square.result.battery_discharged_wh == pytest.approx(6900.0 / 3600.0)
