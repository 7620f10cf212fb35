"""Simulated cars: seeded arrivals that follow the ElaadNL public curves, and the charging curve."""

from __future__ import annotations

import statistics
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.sim import elaad
from drivers.sim.cars import (
    Arrival,
    CarModel,
    CarState,
    arrivals,
    busy_afternoon,
    car_models,
    car_power_w,
)

MONDAY = datetime(2024, 3, 4)
WEEK_S = 7 * 86400.0
WEEK_MEAN_PER_HOUR = 20.0

ONE_PHASE = CarModel("one-phase", battery_wh=40_000.0, max_ac_w=3_600.0, phases=1)
THREE_PHASE = CarModel("three-phase", battery_wh=60_000.0, max_ac_w=11_000.0, phases=3)
FAST_AC = CarModel("22 kW", battery_wh=52_000.0, max_ac_w=22_000.0, phases=3)

cars = st.sampled_from([ONE_PHASE, THREE_PHASE, FAST_AC] + [model for model, _ in car_models()])
socs = st.floats(min_value=0.0, max_value=100.0)
currents = st.floats(min_value=-10.0, max_value=80.0)
voltages = st.floats(min_value=200.0, max_value=250.0)


@pytest.fixture(scope="module")
def week() -> list[Arrival]:
    return arrivals(seed=7, start=MONDAY, duration_s=WEEK_S, mean_per_hour=WEEK_MEAN_PER_HOUR)


def _hourly(profile_pct: tuple[float, ...]) -> list[float]:
    return [sum(profile_pct[hour * 4 : hour * 4 + 4]) for hour in range(24)]


def _histogram(items: list[Arrival]) -> list[int]:
    counts = [0] * 24
    for item in items:
        counts[int(item.arrive_s // 3600) % 24] += 1
    return counts


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_the_same_list() -> None:
    kwargs = dict(start=MONDAY, duration_s=86400.0, mean_per_hour=5.0)
    assert arrivals(seed=3, **kwargs) == arrivals(seed=3, **kwargs)
    assert busy_afternoon(3) == busy_afternoon(3)


def test_different_seeds_give_different_lists() -> None:
    kwargs = dict(start=MONDAY, duration_s=86400.0, mean_per_hour=5.0)
    assert arrivals(seed=3, **kwargs) != arrivals(seed=4, **kwargs)
    assert busy_afternoon(3) != busy_afternoon(4)


def test_arrivals_are_sorted_and_inside_the_scenario(week: list[Arrival]) -> None:
    times = [item.arrive_s for item in week]
    assert times == sorted(times)
    assert 0 <= times[0] and times[-1] < WEEK_S


def test_no_rate_or_no_time_gives_no_arrivals() -> None:
    assert arrivals(seed=1, start=MONDAY, duration_s=86400.0, mean_per_hour=0.0) == []
    assert arrivals(seed=1, start=MONDAY, duration_s=0.0, mean_per_hour=10.0) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(duration_s=-1.0, mean_per_hour=1.0),
        dict(duration_s=float("inf"), mean_per_hour=1.0),
        dict(duration_s=60.0, mean_per_hour=-1.0),
        dict(duration_s=60.0, mean_per_hour=float("inf")),
        dict(duration_s=60.0, mean_per_hour=1.0, speed=0.0),
        dict(duration_s=60.0, mean_per_hour=1.0, non_ev_share=1.5),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        arrivals(seed=1, start=MONDAY, **kwargs)


# --- distributions -----------------------------------------------------------------------------


def test_week_follows_the_public_arrival_profile(week: list[Arrival]) -> None:
    data = elaad.load()
    weekday, weekend = _hourly(data.arrival_weekday_pct), _hourly(data.arrival_weekend_pct)
    expected = [5 * a + 2 * b for a, b in zip(weekday, weekend)]
    assert statistics.correlation(_histogram(week), expected) > 0.8
    weekdays_only = [item for item in week if item.arrive_s < 5 * 86400.0]
    assert statistics.correlation(_histogram(weekdays_only), weekday) > 0.8


def test_week_has_the_requested_mean_rate(week: list[Arrival]) -> None:
    expected = WEEK_MEAN_PER_HOUR * WEEK_S / 3600.0
    assert abs(len(week) - expected) < 0.05 * expected


def test_forced_weekend_uses_the_weekend_profile() -> None:
    days = arrivals(seed=11, start=MONDAY, duration_s=3 * 86400.0, mean_per_hour=40.0, weekend=True)
    data = elaad.load()
    weekend, weekday = _hourly(data.arrival_weekend_pct), _hourly(data.arrival_weekday_pct)
    assert statistics.correlation(_histogram(days), weekend) > statistics.correlation(_histogram(days), weekday)
    assert statistics.correlation(_histogram(days), weekend) > 0.8


def test_median_stay_and_energy_match_the_curves(week: list[Arrival]) -> None:
    data = elaad.load()
    median_stay_h = statistics.median(item.stay_s for item in week) / 3600.0
    evs = [item for item in week if item.kind == "ev"]
    median_energy_kwh = statistics.median(item.energy_wanted_wh for item in evs) / 1000.0
    assert median_stay_h == pytest.approx(data.stay_h_at_pct[50], rel=0.1)
    # the caps by stay and battery pull the energy down a little
    assert median_energy_kwh == pytest.approx(data.energy_kwh_at_pct[50], rel=0.15)


@pytest.mark.parametrize("speed", [1.0, 30.0])
def test_energy_fits_battery_and_stay(speed: float) -> None:
    items = arrivals(seed=5, start=MONDAY, duration_s=WEEK_S / speed, mean_per_hour=20.0, speed=speed)
    assert len(items) > 1000
    for item in items:
        if item.car is None:
            continue
        assert 0 <= item.energy_wanted_wh <= item.car.battery_wh
        assert item.energy_wanted_wh <= item.car.max_ac_w * item.stay_s / 3600.0 + 1e-6
        assert item.soc_at_arrival_pct is not None
        assert 0 <= item.soc_at_arrival_pct
        assert item.soc_at_arrival_pct + item.energy_wanted_wh / item.car.battery_wh * 100.0 <= 100.0 + 1e-9


def test_speed_compresses_the_day() -> None:
    slow = arrivals(seed=9, start=MONDAY, duration_s=WEEK_S, mean_per_hour=20.0)
    fast = arrivals(seed=9, start=MONDAY, duration_s=WEEK_S / 10.0, mean_per_hour=20.0, speed=10.0)
    assert abs(len(fast) - len(slow)) < 0.05 * len(slow)
    ratio = statistics.median(i.stay_s for i in slow) / statistics.median(i.stay_s for i in fast)
    assert ratio == pytest.approx(10.0, rel=0.1)


def test_non_ev_share(week: list[Arrival]) -> None:
    non_evs = [item for item in week if item.kind == "non_ev"]
    assert len(non_evs) / len(week) == pytest.approx(0.15, abs=0.02)
    for item in non_evs:
        assert item.car is None and item.energy_wanted_wh == 0.0 and item.soc_at_arrival_pct is None
        assert item.stay_s > 0
    everyone_charges = arrivals(seed=1, start=MONDAY, duration_s=86400.0, mean_per_hour=5.0, non_ev_share=0.0)
    assert all(item.kind == "ev" for item in everyone_charges)


def test_car_mix_follows_registrations(week: list[Arrival]) -> None:
    counts: dict[str, int] = {}
    for item in week:
        if item.car is not None:
            counts[item.car.name] = counts.get(item.car.name, 0) + 1
    most_registered = max(car_models(), key=lambda pair: pair[1])[0].name
    assert max(counts, key=counts.__getitem__) == most_registered


def test_phases_are_inferred_from_ac_power() -> None:
    by_name = {model.name: model for model, _ in car_models()}
    assert by_name["Nissan Leaf"].phases == 1  # 3.6 kW
    assert by_name["Peugeot 208"].phases == 1  # 7.4 kW: 32 A on one phase
    assert by_name["Tesla Model 3"].phases == 3  # 11 kW
    assert by_name["Renault Zoe"].phases == 3  # 22 kW
    assert by_name["Renault Zoe"].max_current_a() == pytest.approx(31.9, abs=0.1)


# --- charging curve ----------------------------------------------------------------------------


@given(cars, socs, currents, voltages)
def test_power_never_above_offer_or_car(car: CarModel, soc: float, offered: float, voltage: float) -> None:
    power_w, phases_a = car_power_w(car, soc, offered, voltage)
    assert 0 <= power_w <= max(0.0, offered) * car.phases * voltage + 1e-6
    assert power_w <= car.max_ac_w + 1e-6
    assert all(0 <= current <= max(0.0, offered) + 1e-9 for current in phases_a)
    assert sum(phases_a) * voltage == pytest.approx(power_w)
    if car.phases == 1:
        assert phases_a[1] == phases_a[2] == 0.0


@given(cars, socs, st.floats(min_value=-10.0, max_value=5.999), voltages)
def test_nothing_below_six_amps(car: CarModel, soc: float, offered: float, voltage: float) -> None:
    assert car_power_w(car, soc, offered, voltage) == (0.0, (0.0, 0.0, 0.0))


@given(cars, currents)
def test_nothing_when_full(car: CarModel, offered: float) -> None:
    assert car_power_w(car, 100.0, offered)[0] == 0.0


@given(cars, socs, socs, currents)
def test_taper_is_monotone(car: CarModel, soc_a: float, soc_b: float, offered: float) -> None:
    low, high = sorted((soc_a, soc_b))
    assert car_power_w(car, high, offered)[0] <= car_power_w(car, low, offered)[0] + 1e-9


@given(cars, socs, currents, currents)
def test_more_offered_never_means_less_drawn(car: CarModel, soc: float, offered_a: float, offered_b: float) -> None:
    low, high = sorted((offered_a, offered_b))
    assert car_power_w(car, soc, low)[0] <= car_power_w(car, soc, high)[0] + 1e-9


@given(cars, st.floats(min_value=6.0, max_value=80.0))
def test_taper_shape(car: CarModel, offered: float) -> None:
    full_rate, _ = car_power_w(car, 80.0, offered)
    assert car_power_w(car, 0.0, offered)[0] == full_rate
    assert car_power_w(car, 90.0, offered)[0] == pytest.approx(0.55 * full_rate)
    assert car_power_w(car, 99.999, offered)[0] == pytest.approx(0.1 * full_rate, rel=1e-3)


def test_car_power_refuses_nonsense() -> None:
    for soc, offered, voltage in [(-1.0, 16.0, 230.0), (101.0, 16.0, 230.0), (50.0, float("nan"), 230.0), (50.0, 16.0, 0.0)]:
        with pytest.raises(ValueError):
            car_power_w(THREE_PHASE, soc, offered, voltage)


# --- car state ---------------------------------------------------------------------------------


def test_car_charges_to_its_target_and_stops() -> None:
    state = CarState(THREE_PHASE, soc_pct=50.0, energy_wanted_wh=6_000.0)
    first = state.step(60.0, 16.0)
    assert first == pytest.approx(11_000.0 / 60.0, rel=0.01)
    total = first + sum(state.step(60.0, 32.0) for _ in range(60))
    assert state.full and total == pytest.approx(6_000.0)
    assert state.energy_charged_wh == pytest.approx(6_000.0)
    assert state.soc_pct == pytest.approx(60.0)
    assert state.step(60.0, 32.0) == 0.0
    assert state.draw(32.0) == (0.0, (0.0, 0.0, 0.0))


def test_car_without_target_tapers_to_full() -> None:
    state = CarState(ONE_PHASE, soc_pct=95.0)
    slow = state.step(10.0, 16.0)
    assert slow < 3_600.0 * 10.0 / 3600.0 * 0.5
    for _ in range(2000):
        state.step(60.0, 16.0)
    assert state.full and state.soc_pct == 100.0
    assert state.energy_charged_wh == pytest.approx(2_000.0)


def test_no_offer_no_charge() -> None:
    state = CarState(THREE_PHASE, soc_pct=20.0)
    assert state.step(600.0, 5.0) == 0.0 and state.soc_pct == 20.0


@given(
    cars,
    socs,
    st.floats(min_value=0.0, max_value=100_000.0),
    st.lists(st.tuples(st.floats(min_value=0.0, max_value=900.0), currents), max_size=20),
)
def test_car_state_never_takes_more_than_wanted(
    car: CarModel, soc: float, wanted_wh: float, steps: list[tuple[float, float]]
) -> None:
    state = CarState(car, soc, wanted_wh)
    for dt_s, offered_a in steps:
        taken = state.step(dt_s, offered_a)
        assert 0 <= taken <= car.max_ac_w * dt_s / 3600.0 + 1e-6
    assert state.energy_charged_wh <= wanted_wh + 1e-6
    assert state.soc_pct <= 100.0


def test_every_ev_arrival_gives_a_car_state() -> None:
    for item in busy_afternoon(2):
        if item.kind == "ev":
            assert not CarState.from_arrival(item).full or item.energy_wanted_wh == 0.0
        else:
            with pytest.raises(ValueError):
                CarState.from_arrival(item)


# --- demo scenario -----------------------------------------------------------------------------


def test_busy_afternoon_can_be_short_and_refuses_nonsense() -> None:
    assert busy_afternoon(1, duration_s=2.0) == []
    assert [item.kind for item in busy_afternoon(1, duration_s=10.0)] == ["ev"]
    with pytest.raises(ValueError):
        busy_afternoon(1, duration_s=float("nan"))


@pytest.mark.parametrize("seed", range(20))
def test_busy_afternoon_starts_quickly_and_fits_the_square(seed: int) -> None:
    items = busy_afternoon(seed)
    assert 3.0 <= items[0].arrive_s <= 8.0
    assert items[0].kind == "ev"
    gaps = [later.arrive_s - earlier.arrive_s for earlier, later in zip(items, items[1:])]
    assert all(15.0 <= gap <= 35.0 for gap in gaps)
    non_evs = sum(item.kind == "non_ev" for item in items)
    assert non_evs >= 2 and abs(non_evs - 0.15 * len(items)) <= 1
    assert items[0].stay_s == 30.0
    assert all(60.0 <= item.stay_s <= 180.0 for item in items[1:])
    for item in items:
        parked = [other for other in items if other.arrive_s <= item.arrive_s < other.leave_s]
        assert len(parked) <= 12
        if item.car is not None:
            assert item.energy_wanted_wh <= item.car.max_ac_w * item.stay_s / 3600.0 + 1e-6
