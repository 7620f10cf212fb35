"""Battery dispatch: the reserve by time of day, what the battery offers the sharing budget, and its setpoint."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from battery.dispatch import OFFER_HOLD_H, available_a, dispatch, reserve_soc_pct
from battery.dispatch_types import BatteryInput
from config.schema_devices import ReserveWindow

# 10 kWh, 5 kW in, 6 kW out, 30 % reserve now: at 50 % it can give its full 6 kW for much longer
# than a minute.
BATTERY = BatteryInput(
    usable=True,
    soc_pct=50.0,
    capacity_wh=10_000.0,
    max_charge_w=5_000.0,
    max_discharge_w=6_000.0,
    soc_min_pct=10.0,
    soc_max_pct=95.0,
    reserve_soc_pct=30.0,
    voltage_v=230.0,
    phases=3,
)
NONE = (0.0, 0.0, 0.0)


def window(start: str, end: str, soc_pct: float) -> ReserveWindow:
    return ReserveWindow(start=start, end=end, soc_pct=soc_pct)


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


# --- reserve by time of day ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minute", "expected"),
    [(16 * 60 + 59, 10.0), (17 * 60, 60.0), (20 * 60 + 59, 60.0), (21 * 60, 10.0), (0, 10.0)],
)
def test_a_window_counts_from_its_start_up_to_but_not_including_its_end(minute, expected):
    assert reserve_soc_pct([window("17:00", "21:00", 60.0)], 10.0, minute) == expected


@pytest.mark.parametrize(
    ("minute", "expected"),
    [(22 * 60, 40.0), (23 * 60 + 59, 40.0), (0, 40.0), (5 * 60 + 59, 40.0), (6 * 60, 10.0), (21 * 60 + 59, 10.0),
     (12 * 60, 10.0)],
)
def test_a_window_may_pass_midnight(minute, expected):
    assert reserve_soc_pct([window("22:00", "06:00", 40.0)], 10.0, minute) == expected


def test_start_equal_to_end_means_the_whole_day():
    for minute in (0, 719, 1439):
        assert reserve_soc_pct([window("08:00", "08:00", 25.0)], 10.0, minute) == 25.0


def test_overlapping_windows_keep_the_largest_and_never_less_than_soc_min():
    windows = [window("16:00", "22:00", 50.0), window("18:00", "20:00", 70.0), window("00:00", "23:59", 5.0)]
    assert reserve_soc_pct(windows, 10.0, 17 * 60) == 50.0
    assert reserve_soc_pct(windows, 10.0, 19 * 60) == 70.0
    assert reserve_soc_pct(windows, 10.0, 3 * 60) == 10.0  # only the 5 % window: below soc_min
    assert reserve_soc_pct([], 12.5, 600) == 12.5


@pytest.mark.parametrize("minute", [-1, 1440])
def test_a_minute_outside_the_day_is_refused(minute):
    with pytest.raises(ValueError, match="minute_of_day"):
        reserve_soc_pct([], 10.0, minute)


# --- what the battery offers --------------------------------------------------------------------


def test_a_three_phase_battery_spreads_its_discharge_evenly_in_whole_amperes():
    assert available_a(BATTERY) == (8.0, 8.0, 8.0)  # 6000 W / 690 V = 8.7 A per phase


def test_a_one_phase_battery_offers_everything_on_l1():
    assert available_a(replace(BATTERY, phases=1)) == (26.0, 0.0, 0.0)  # 6000 W / 230 V = 26.1 A


@pytest.mark.parametrize(
    "changes",
    [
        {"usable": False},
        {"soc_pct": None},
        {"soc_pct": math.nan},
        {"soc_pct": 30.0},  # at the reserve
        {"soc_pct": 20.0},  # below the reserve, above soc_min
        {"soc_pct": 8.0, "reserve_soc_pct": 5.0},  # a reserve below soc_min does not lower soc_min
        {"max_discharge_w": 0.0},
    ],
)
def test_nothing_is_offered_unless_usable_known_and_above_the_reserve(changes):
    assert available_a(replace(BATTERY, **changes)) == NONE


def test_the_offer_tapers_to_what_the_battery_can_hold_for_a_quarter_of_an_hour():
    # 10 % of 10 kWh above the reserve is 1 kWh: 4000 W for 15 min, 5.8 A per phase, offered as 5 A.
    assert available_a(replace(BATTERY, soc_pct=40.0)) == (5.0, 5.0, 5.0)
    # 0.5 % is 50 Wh: 200 W for 15 min, less than an ampere per phase: nothing is offered.
    assert available_a(replace(BATTERY, soc_pct=30.5)) == (0.0, 0.0, 0.0)


def test_the_offer_falls_slowly_near_the_reserve():
    # Discharging at the offer for a second lowers the next offer by far less than an ampere step:
    # chargers are not sent a new decrease every cycle.
    soc_pct, changes = 40.0, 0
    offer = available_a(replace(BATTERY, soc_pct=soc_pct))[0]
    for _ in range(600):
        soc_pct -= offer * 690 / 3600 / 10_000 * 100
        new = available_a(replace(BATTERY, soc_pct=soc_pct))[0]
        changes += new != offer
        offer = new
    assert changes <= 5


def test_a_bad_phase_count_or_voltage_is_refused():
    with pytest.raises(ValueError, match="phases"):
        available_a(replace(BATTERY, phases=2))
    with pytest.raises(ValueError, match="voltage_v"):
        dispatch(replace(BATTERY, voltage_v=0.0), NONE, NONE)


# --- the setpoint -------------------------------------------------------------------------------


def test_peak_shaving_covers_the_worst_phase_on_all_three():
    d = dispatch(BATTERY, (1.0, 4.2, 2.0), NONE)
    assert d.setpoint_w == 2_898.0  # 4.2 A x 230 V x 3, to the watt
    assert d.reason == "peak shaving: cars need 4.2 A above the grid on L2"


def test_peak_shaving_is_capped_at_the_rating_and_at_the_taper():
    d = dispatch(BATTERY, (40.0, 0.0, 0.0), NONE)
    assert (d.setpoint_w, d.reason) == (6_000.0, "peak shaving: cars need 40 A above the grid on L1; capped at 6000 W")
    d = dispatch(replace(BATTERY, soc_pct=32.0), (0.0, 0.0, 4.2), NONE)
    assert d.setpoint_w == 800.0  # 200 Wh above the reserve, for a quarter of an hour
    assert "capped at 800 W" in d.reason


def test_at_or_below_the_reserve_it_does_not_discharge_nor_charge_while_cars_need_more():
    for soc_pct in (30.0, 25.0):
        d = dispatch(replace(BATTERY, soc_pct=soc_pct), (5.0, 5.0, 5.0), (20.0, 20.0, 20.0))
        assert d.setpoint_w == 0.0
        assert d.reason == "idle: cars need 5 A above the grid on L1, but the battery is at or below its reserve (30 %)"


def test_an_unusable_battery_or_unknown_soc_idles_and_says_why():
    d = dispatch(replace(BATTERY, usable=False), (5.0, 5.0, 5.0), NONE)
    assert (d.setpoint_w, d.reason) == (0.0, "idle: battery offline or not trusted")
    d = dispatch(replace(BATTERY, soc_pct=None), NONE, (20.0, 20.0, 20.0))
    assert (d.setpoint_w, d.reason) == (0.0, "idle: state of charge unknown")


def test_recharging_takes_the_least_spare_phase_less_a_margin_for_the_cars():
    d = dispatch(BATTERY, NONE, (5.0, 3.0, 8.0))
    assert d.setpoint_w == -1_380.0  # (3 - 1) A x 230 V x 3
    assert d.reason == "recharging: 3 A spare on L2, 1 A kept for the cars"


def test_recharging_is_capped_at_the_rating_and_tapers_towards_soc_max():
    d = dispatch(BATTERY, NONE, (30.0, 30.0, 30.0))
    assert d.setpoint_w == -5_000.0
    assert d.reason == "recharging: 30 A spare on L1, 1 A kept for the cars; capped at 5000 W"
    assert dispatch(replace(BATTERY, soc_pct=94.9), NONE, (30.0, 30.0, 30.0)).setpoint_w == -600.0


def test_below_the_reserve_it_recharges_to_rebuild_it():
    assert dispatch(replace(BATTERY, soc_pct=12.0), NONE, (3.0, 3.0, 3.0)).setpoint_w == -1_380.0


@pytest.mark.parametrize(
    ("changes", "spare", "reason"),
    [
        ({"soc_pct": 95.0}, (30.0, 30.0, 30.0), "idle: full (95 % of 95 %)"),
        ({}, (30.0, 1.0, 30.0), "idle: nothing spare to recharge from (1 A on L2, 1 A kept for the cars)"),
        ({}, (30.0, 30.0, -2.0), "idle: nothing spare to recharge from (0 A on L3, 1 A kept for the cars)"),
        ({"max_charge_w": 0.0}, (30.0, 30.0, 30.0), "idle: may not charge now (0 W allowed)"),
    ],
)
def test_idle_when_full_nothing_spare_or_not_allowed(changes, spare, reason):
    d = dispatch(replace(BATTERY, **changes), NONE, spare)
    assert (d.setpoint_w, d.reason) == (0.0, reason)


def test_a_one_phase_grid_looks_only_at_l1():
    one = replace(BATTERY, phases=1)
    assert dispatch(one, NONE, (4.0, 0.0, 0.0)).setpoint_w == -690.0  # (4 - 1) A x 230 V
    assert dispatch(one, (4.0, 0.0, 0.0), NONE).setpoint_w == 920.0
    d = dispatch(one, (0.0, 4.0, 0.0), (10.0, 0.0, 0.0))
    assert d.setpoint_w == 0.0  # it cannot help L2, and charging would take from the cars
    assert d.reason == "idle: cars need current above the grid on L2, which the battery does not feed"


def test_setpoints_are_whole_watts_rounded_toward_zero():
    assert dispatch(replace(BATTERY, voltage_v=231.0), (1.01, 0.0, 0.0), NONE).setpoint_w == 699.0  # 699.93
    assert dispatch(replace(BATTERY, voltage_v=231.0), NONE, (2.01, 2.5, 3.0)).setpoint_w == -699.0


def test_currents_that_are_not_numbers_are_refused():
    with pytest.raises(ValueError, match="needed_a"):
        dispatch(BATTERY, (math.nan, 0.0, 0.0), NONE)
    with pytest.raises(ValueError, match="spare_a"):
        dispatch(BATTERY, NONE, (0.0, math.inf, 0.0))


# --- properties ---------------------------------------------------------------------------------

EPS = 1e-6


@st.composite
def batteries(draw) -> BatteryInput:
    soc_min = draw(st.floats(0.0, 60.0))
    soc_max = draw(st.floats(soc_min + 1.0, 100.0))
    reserve = draw(st.one_of(st.just(soc_min), st.floats(0.0, 100.0)))
    floor = max(soc_min, reserve)
    soc = draw(
        st.one_of(
            st.none(),
            st.just(math.nan),
            st.floats(0.0, 100.0),
            # the edges, where tapers and reserves decide
            st.sampled_from([floor, soc_max, 100.0, 0.0]),
            st.floats(-0.05, 0.05).map(lambda d: min(100.0, max(0.0, floor + d))),
            st.floats(-0.05, 0.05).map(lambda d: min(100.0, max(0.0, soc_max + d))),
        )
    )
    return BatteryInput(
        usable=draw(st.booleans()),
        soc_pct=soc,
        capacity_wh=draw(st.floats(500.0, 500_000.0)),
        max_charge_w=draw(st.one_of(st.just(0.0), st.floats(0.0, 100_000.0))),
        max_discharge_w=draw(st.one_of(st.just(0.0), st.floats(0.0, 100_000.0))),
        soc_min_pct=soc_min,
        soc_max_pct=soc_max,
        reserve_soc_pct=reserve,
        voltage_v=draw(st.floats(110.0, 253.0)),
        phases=draw(st.sampled_from([1, 3])),
    )


_current = st.one_of(st.just(0.0), st.floats(-5.0, 5.0), st.floats(0.0, 250.0))
currents = st.tuples(_current, _current, _current)


def _facts(b: BatteryInput, needed, spare):
    soc_known = b.soc_pct is not None and not math.isnan(b.soc_pct)
    grid = range(b.phases)
    return soc_known, b.voltage_v * b.phases, min(spare[p] for p in grid)


@settings(max_examples=300, deadline=None)
@given(b=batteries(), needed=currents, spare=currents)
def test_the_setpoint_keeps_every_rule_of_the_dispatch(b, needed, spare):
    d = dispatch(b, needed, spare)
    soc_known, v_total, least_spare_a = _facts(b, needed, spare)
    assert d.reason
    assert d.setpoint_w == int(d.setpoint_w)
    assert -b.max_charge_w <= d.setpoint_w <= b.max_discharge_w
    if d.setpoint_w > 0:
        assert b.usable and soc_known
        assert b.soc_pct > max(b.reserve_soc_pct, b.soc_min_pct)
        # at most what it can hold for a quarter of an hour (the offer is that, in whole amperes)
        held_w = b.capacity_wh * (b.soc_pct - max(b.reserve_soc_pct, b.soc_min_pct)) / 100 / OFFER_HOLD_H
        assert d.setpoint_w <= min(held_w, b.max_discharge_w) * (1 + EPS) + 1
        assert sum(available_a(b)) * b.voltage_v <= min(held_w, b.max_discharge_w) * (1 + EPS) + 1e-6
        assert d.setpoint_w <= max(needed) * v_total * (1 + EPS)
    if d.setpoint_w < 0:
        assert b.usable and soc_known
        assert b.soc_pct < b.soc_max_pct
        assert all(a <= 0 for a in needed)
        assert -d.setpoint_w / v_total <= least_spare_a - 1.0 + EPS


@settings(max_examples=300, deadline=None)
@given(b=batteries(), needed=currents, spare=currents)
def test_a_discharge_covers_every_phase_when_the_offer_allows_it(b, needed, spare):
    offer_a = available_a(b)
    d = dispatch(b, needed, spare)
    if any(a > 0 for a in needed) and all(needed[p] <= offer_a[p] for p in range(3)):
        assert d.setpoint_w / (b.voltage_v * b.phases) >= max(needed) - 0.01
    if any(needed[p] > 0 for p in range(b.phases)):
        # whatever is not covered is what the battery cannot give, to the watt
        want_w = max(needed[p] for p in range(b.phases)) * b.voltage_v * b.phases
        assert d.setpoint_w >= min(want_w, sum(offer_a) * b.voltage_v) - 1.0


@settings(max_examples=300, deadline=None)
@given(b=batteries(), spare=currents)
def test_with_no_need_it_recharges_all_it_may(b, spare):
    d = dispatch(b, (0.0, 0.0, 0.0), spare)
    soc_known, v_total, least_spare_a = _facts(b, (0.0, 0.0, 0.0), spare)
    assert d.setpoint_w <= 0
    if b.usable and soc_known and b.soc_pct < b.soc_max_pct:
        tapered_w = b.capacity_wh * (b.soc_max_pct - b.soc_pct) / 100 * 60
        may_w = min((least_spare_a - 1.0) * v_total, b.max_charge_w, tapered_w)
        assert -d.setpoint_w >= may_w - 1.0


@settings(max_examples=300, deadline=None)
@given(b=batteries())
def test_the_offer_is_never_negative_and_holds_for_a_minute(b):
    offer_a = available_a(b)
    floor = max(b.reserve_soc_pct, b.soc_min_pct)
    assert all(a >= 0 for a in offer_a)
    if b.phases == 1:
        assert offer_a[1:] == (0.0, 0.0)
    else:
        assert offer_a[0] == offer_a[1] == offer_a[2]
    power_w = sum(offer_a) * b.voltage_v
    if not b.usable or b.soc_pct is None or math.isnan(b.soc_pct) or b.soc_pct <= floor:
        assert power_w == 0
    else:
        assert power_w <= b.max_discharge_w * (1 + EPS)
        assert power_w / 60 <= b.capacity_wh * (b.soc_pct - floor) / 100 * (1 + EPS)


def _minutes_in(w: ReserveWindow) -> set[int]:
    """Every minute `w` holds, by walking from its start: an oracle independent of the comparison rules."""
    start = int(w.start[:2]) * 60 + int(w.start[3:])
    end = int(w.end[:2]) * 60 + int(w.end[3:])
    length = (end - start) % 1440 or 1440
    return {(start + k) % 1440 for k in range(length)}


windows = st.lists(
    st.builds(
        lambda s, e, pct: window(hhmm(s), hhmm(e), pct),
        st.integers(0, 1439),
        st.integers(0, 1439),
        st.floats(0.0, 100.0),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(ws=windows, extra=windows, soc_min=st.floats(0.0, 100.0), minute=st.integers(0, 1439))
def test_the_reserve_is_the_largest_window_in_force_and_grows_with_more_windows(ws, extra, soc_min, minute):
    reserve = reserve_soc_pct(ws, soc_min, minute)
    assert soc_min <= reserve <= 100.0
    assert reserve == max([soc_min, *(w.soc_pct for w in ws if minute in _minutes_in(w))])
    assert reserve_soc_pct([*ws, *extra], soc_min, minute) >= reserve
    assert reserve_soc_pct([*extra, *ws], soc_min, minute) == reserve_soc_pct([*ws, *extra], soc_min, minute)
