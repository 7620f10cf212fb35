"""Battery physics: limits, SoC bounds, efficiency and the revert timeout, with a model-owned clock."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from battery.model import BatteryModel


def battery(**kw) -> BatteryModel:
    args = dict(capacity_wh=10_000.0, max_charge_w=5_000.0, max_discharge_w=4_000.0, efficiency=1.0)
    args.update(kw)
    return BatteryModel(**args)


def test_discharge_moves_soc_by_the_energy_delivered():
    b = battery(soc_pct=50.0)
    b.command(2_000.0)
    b.step(1800.0)
    assert b.power_w == pytest.approx(2_000.0)
    assert b.soc_pct == pytest.approx(40.0)  # 1 kWh of 10 kWh
    assert b.now_s == 1800.0


def test_charge_is_negative_power_and_raises_soc():
    b = battery(soc_pct=50.0)
    b.command(-1_000.0)
    b.step(3600.0)
    assert b.power_w == pytest.approx(-1_000.0)
    assert b.soc_pct == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("setpoint_w", "expected_w"),
    [(10_000.0, 4_000.0), (-10_000.0, -5_000.0), (0.0, 0.0), (3_000.0, 3_000.0)],
)
def test_power_is_held_within_the_ratings(setpoint_w, expected_w):
    b = battery()
    b.command(setpoint_w)
    b.step(1.0)
    assert b.power_w == pytest.approx(expected_w)
    assert b.setpoint_w == setpoint_w  # the command is kept as asked


def test_efficiency_applies_each_way():
    b = battery(efficiency=0.9, soc_pct=50.0)
    b.command(900.0)
    b.step(3600.0)
    assert b.soc_pct == pytest.approx(40.0)  # 900 Wh out takes 1000 Wh from the cells
    b.command(-1_000.0)
    b.step(3600.0)
    assert b.soc_pct == pytest.approx(49.0)  # 1000 Wh in stores 900 Wh


def test_discharge_stops_at_the_lower_bound():
    b = battery(soc_pct=12.0, soc_min_pct=10.0)
    b.command(4_000.0)
    b.step(3600.0)  # would take 4 kWh, only 200 Wh are above the bound
    assert b.soc_pct == pytest.approx(10.0)
    assert b.power_w == pytest.approx(200.0)  # mean over the step
    b.step(1.0)
    assert b.power_w == 0.0
    assert b.soc_pct == pytest.approx(10.0)


def test_charge_stops_at_the_upper_bound_and_discharge_still_works():
    b = battery(soc_pct=89.0, soc_max_pct=90.0)
    b.command(-5_000.0)
    b.step(3600.0)
    assert b.soc_pct == pytest.approx(90.0)
    b.step(10.0)
    assert b.power_w == 0.0
    b.command(1_000.0)
    b.step(36.0)
    assert b.power_w == pytest.approx(1_000.0)
    assert b.soc_pct < 90.0


def test_revert_timeout_returns_to_idle_by_itself():
    b = battery(soc_pct=50.0)
    b.command(3_600.0, revert_timeout_s=10.0)
    b.step(5.0)
    assert b.power_w == pytest.approx(3_600.0) and not b.reverted
    b.step(10.0)  # the setpoint lapses at 10 s, halfway through this step
    assert b.reverted
    assert b.setpoint_w == 0.0
    assert b.power_w == pytest.approx(3_600.0 * 5.0 / 10.0)
    assert b.soc_pct == pytest.approx(50.0 - 3_600.0 * 10.0 / 3600.0 / 10_000.0 * 100.0)
    b.step(1.0)
    assert b.power_w == 0.0


def test_a_new_command_restarts_the_revert_timeout():
    b = battery()
    b.command(1_000.0, revert_timeout_s=10.0)
    for _ in range(5):
        b.step(8.0)
        b.command(1_000.0)
    b.step(8.0)
    assert not b.reverted and b.power_w == pytest.approx(1_000.0)
    assert b.last_command_at_s == pytest.approx(40.0)


def test_no_revert_timeout_keeps_the_setpoint():
    b = battery(capacity_wh=1e6)
    b.command(1_000.0)
    b.step(1e5)
    assert b.setpoint_w == 1_000.0 and b.power_w == pytest.approx(1_000.0)


@pytest.mark.parametrize(
    "kw",
    [
        {"capacity_wh": 0.0},
        {"max_charge_w": -1.0},
        {"soc_min_pct": 60.0, "soc_max_pct": 40.0},
        {"soc_pct": 101.0},
        {"efficiency": 0.0},
        {"revert_timeout_s": -1.0},
    ],
)
def test_nonsense_parameters_are_refused(kw):
    with pytest.raises(ValueError):
        battery(**kw)


def test_negative_step_is_refused():
    with pytest.raises(ValueError):
        battery().step(-1.0)


commands = st.tuples(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.floats(min_value=0.0, max_value=7200.0, allow_nan=False),
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=600.0, allow_nan=False)),
)


@settings(max_examples=200, deadline=None)
@given(
    soc_pct=st.floats(min_value=0.0, max_value=100.0),
    bounds=st.tuples(st.floats(0.0, 100.0), st.floats(0.0, 100.0)).map(sorted),
    efficiency=st.floats(min_value=0.5, max_value=1.0),
    sequence=st.lists(commands, max_size=30),
)
def test_soc_and_power_stay_within_bounds_for_any_setpoints(soc_pct, bounds, efficiency, sequence):
    b = BatteryModel(
        capacity_wh=5_000.0,
        max_charge_w=3_000.0,
        max_discharge_w=2_000.0,
        soc_pct=soc_pct,
        soc_min_pct=bounds[0],
        soc_max_pct=bounds[1],
        efficiency=efficiency,
    )
    for setpoint_w, dt_s, revert_s in sequence:
        before = b.soc_pct
        b.command(setpoint_w, revert_timeout_s=revert_s)
        b.step(dt_s)
        assert 0.0 <= b.soc_pct <= 100.0
        assert -3_000.0 <= b.power_w <= 2_000.0
        # A battery only moves towards its bounds while it is inside them, never across one.
        if b.power_w > 0:
            assert b.soc_pct <= before and b.soc_pct >= min(before, b.soc_min_pct)
        if b.power_w < 0:
            assert b.soc_pct >= before and b.soc_pct <= max(before, b.soc_max_pct)
