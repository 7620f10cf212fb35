"""The pure parts of the battery presets: the SunSpec vendor table and model 124 commands, the Victron grid
setpoint, the register encodings, when a setpoint counts as a change, and which driver a config gets."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from battery.sunspec_map import (
    SunSpecMapError,
    blank_image,
    build_layout,
    get_point,
    set_point,
    setpoint_from_storage,
)
from battery.trust import BatteryRatings
from battery.vendors import (
    asks_change,
    decode_register,
    encode_register,
    idle_points,
    register_count,
    register_raw,
    register_value,
    storage_points,
    storage_writes,
    vendor_for,
    victron_grid_setpoint_w,
    worth_logging,
)
from config.schema_devices import BatteryConfig
from drivers.batteries.factory import make_battery, victron_unit_id
from drivers.batteries.registers import RegisterBattery
from drivers.batteries.sunspec import SunSpecBattery
from drivers.batteries.victron import VictronBattery
from drivers.sim.in_process import SimulatedBattery

PLAIN = vendor_for("laadplein")
FRONIUS = vendor_for("Fronius")
RATINGS = BatteryRatings(max_charge_w=10_000.0, max_discharge_w=20_000.0)
powers_w = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


# ---- the SunSpec vendor table -----------------------------------------------------------------


def test_a_maker_not_in_the_table_gets_the_plain_reading_and_power_sign_kept():
    assert (PLAIN.storage, PLAIN.power_sign) == ("plain", 1)
    assert vendor_for("").storage == "plain"


@pytest.mark.parametrize("mn", ["Fronius", "FRONIUS", " fronius "])
def test_fronius_is_known_by_its_mn_whatever_the_case(mn):
    assert vendor_for(mn).storage == "fronius"
    assert vendor_for(mn).manufacturer == mn


def test_plain_discharge_charge_and_hold():
    assert storage_points(PLAIN, 8_000.0, 10_000.0, 20_000.0, 60) == {
        "StorCtl_Mod": 2, "OutWRte": 40.0, "InWRte": 0.0, "InOutWRte_RvrtTms": 60,
    }
    assert storage_points(PLAIN, -5_000.0, 10_000.0, 20_000.0, 30) == {
        "StorCtl_Mod": 1, "OutWRte": 0.0, "InWRte": 50.0, "InOutWRte_RvrtTms": 30,
    }
    hold = storage_points(PLAIN, 0.0, 10_000.0, 20_000.0, 60)
    assert hold == {"StorCtl_Mod": 3, "OutWRte": 0.0, "InWRte": 0.0, "InOutWRte_RvrtTms": 60}


def test_fronius_forces_a_direction_with_the_other_rate_negative():
    discharge = storage_points(FRONIUS, 6_000.0, 10_000.0, 12_000.0, 60)
    assert discharge == {"StorCtl_Mod": 3, "OutWRte": 50.0, "InWRte": -60.0, "InOutWRte_RvrtTms": 60}
    charge = storage_points(FRONIUS, -5_000.0, 10_000.0, 12_000.0, 60)
    assert charge["StorCtl_Mod"] == 3 and charge["InWRte"] == 50.0
    assert charge["OutWRte"] == pytest.approx(-5_000.0 / 12_000.0 * 100)
    assert storage_points(FRONIUS, 0.0, 10_000.0, 12_000.0, 60)["StorCtl_Mod"] == 3


def test_rates_stop_at_100_pct_and_impossible_commands_are_refused():
    assert storage_points(PLAIN, 50_000.0, 10_000.0, 20_000.0, 60)["OutWRte"] == 100.0
    assert storage_points(FRONIUS, -50_000.0, 10_000.0, 20_000.0, 60)["OutWRte"] == -100.0
    with pytest.raises(SunSpecMapError):
        storage_points(PLAIN, -1_000.0, 0.0, 20_000.0, 60)
    with pytest.raises(SunSpecMapError):
        storage_points(FRONIUS, 1_000.0, 0.0, 20_000.0, 60)  # the charge limit needs WChaMax too
    with pytest.raises(SunSpecMapError):
        storage_points(PLAIN, math.nan, 10_000.0, 20_000.0, 60)


@given(st.floats(min_value=-10_000.0, max_value=20_000.0, allow_nan=False))
def test_plain_points_read_back_as_the_setpoint(setpoint_w):
    p = storage_points(PLAIN, setpoint_w, 10_000.0, 20_000.0, 60)
    back_w = setpoint_from_storage(p["StorCtl_Mod"], p["InWRte"], p["OutWRte"], 10_000.0, 20_000.0)
    assert back_w == pytest.approx(setpoint_w, abs=1e-6)


@given(st.floats(min_value=-10_000.0, max_value=10_000.0, allow_nan=False))
def test_fronius_window_closes_on_the_setpoint(setpoint_w):
    """Fronius limits the power (positive = discharging) to [-InWRte x WChaMax, OutWRte x discharge max]."""
    p = storage_points(FRONIUS, setpoint_w, 10_000.0, 12_000.0, 60)
    low_w, high_w = -p["InWRte"] / 100 * 10_000.0, p["OutWRte"] / 100 * 12_000.0
    assert low_w == pytest.approx(setpoint_w, abs=1e-6) and high_w == pytest.approx(setpoint_w, abs=1e-6)


def test_idle_gives_the_battery_back():
    assert idle_points(60) == {"StorCtl_Mod": 0, "OutWRte": 0.0, "InWRte": 0.0, "InOutWRte_RvrtTms": 60}


def test_model_124_writes_revert_first_rates_together_mode_last_scaled_by_the_image():
    layout = build_layout([1, 802, 124])
    image = blank_image(layout)
    set_point(image, layout, 124, "InOutWRte_SF", -2)
    points = storage_points(FRONIUS, 6_000.0, 10_000.0, 12_000.0, 45)
    writes = storage_writes(layout, image, points)
    p = layout.point
    assert [a for a, _ in writes] == [
        p(124, "InOutWRte_RvrtTms").address, p(124, "OutWRte").address, p(124, "StorCtl_Mod").address,
    ]
    assert [len(regs) for _, regs in writes] == [1, 2, 1]
    written = list(image)
    for address, regs in writes:
        written[address - layout.base : address - layout.base + len(regs)] = regs
    assert get_point(written, layout, 124, "OutWRte") == 50.0
    assert get_point(written, layout, 124, "InWRte") == -60.0
    assert written[p(124, "OutWRte").address - layout.base] == 5_000  # 50 % at sf -2
    assert get_point(written, layout, 124, "InOutWRte_RvrtTms") == 45
    assert get_point(written, layout, 124, "StorCtl_Mod") == 3


# ---- setpoint changes ---------------------------------------------------------------------------


def test_a_change_is_more_than_5_pct_of_the_larger_rating():
    assert not asks_change(None, 1_000.0, RATINGS)  # 1 kW of 20 kW
    assert asks_change(None, -1_001.0, RATINGS)
    assert not asks_change(5_000.0, 5_900.0, RATINGS)
    assert asks_change(5_000.0, 3_900.0, RATINGS)


def test_logging_wants_a_step_over_1_kw_or_another_direction():
    assert worth_logging(None, 0.0)
    assert not worth_logging(8_000.0, 8_900.0)
    assert worth_logging(8_000.0, 9_001.0)
    assert worth_logging(300.0, -300.0)
    assert worth_logging(0.0, 200.0) and worth_logging(200.0, 0.0)
    assert not worth_logging(-200.0, -900.0)


# ---- Victron ------------------------------------------------------------------------------------


def test_victron_grid_setpoint_leaves_the_battery_its_share():
    # 12 kW of chargers, the battery idle, the grid carries all: to discharge 5 kW the grid must carry 7 kW
    assert victron_grid_setpoint_w(12_000.0, 0.0, 5_000.0) == 7_000.0
    # the battery already gives 5 kW; to charge 3 kW instead the grid carries 15 kW
    assert victron_grid_setpoint_w(7_000.0, 5_000.0, -3_000.0) == 15_000.0
    # PV exporting 4 kW with the battery idle: holding 0 W means exporting the same 4 kW
    assert victron_grid_setpoint_w(-4_000.0, 0.0, 0.0) == -4_000.0


@given(powers_w, powers_w, powers_w)
def test_victron_grid_setpoint_does_not_depend_on_what_the_battery_does_now(need_w, battery_w, setpoint_w):
    grid_w = need_w - battery_w  # whatever the battery does, the grid carries the rest of the need
    assert victron_grid_setpoint_w(grid_w, battery_w, setpoint_w) == pytest.approx(need_w - setpoint_w, abs=1e-6)


# ---- register encodings ---------------------------------------------------------------------------


def test_known_register_images():
    assert encode_register(-2, "int32") == [0xFFFF, 0xFFFE]
    assert encode_register(-2, "int32", "little") == [0xFFFE, 0xFFFF]
    assert encode_register(1.0, "float32") == [0x3F80, 0x0000]
    assert encode_register(-1, "int16") == [0xFFFF]
    assert decode_register([0xFFFF], "uint16") == 65_535
    assert decode_register([0x0001, 0x0000], "uint32", "little") == 1
    assert [register_count(t) for t in ("int16", "uint16", "int32", "uint32", "float32")] == [1, 1, 2, 2, 2]


@pytest.mark.parametrize(
    ("value", "type"), [(40_000, "int16"), (-1, "uint16"), (2**32, "uint32"), (1e39, "float32"), (math.inf, "int32")]
)
def test_values_that_do_not_fit_are_refused(value, type):
    with pytest.raises(ValueError):
        encode_register(value, type)


@given(
    st.sampled_from(["int16", "uint16", "int32", "uint32"]), st.sampled_from(["big", "little"]), st.data()
)
def test_integer_registers_round_trip(type, word_order, data):
    bits = 16 * register_count(type)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if type.startswith("int") else (0, 2**bits - 1)
    value = data.draw(st.integers(min_value=low, max_value=high))
    regs = encode_register(value, type, word_order)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode_register(regs, type, word_order) == value


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), st.sampled_from(["big", "little"]))
def test_float_registers_round_trip(value, word_order):
    assert decode_register(encode_register(value, "float32", word_order), "float32", word_order) == value


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.sampled_from(["W", "kW", "%"]),
       st.sampled_from([0.1, -1.0, 0.01, 10.0]))
def test_scale_and_unit_invert(value, unit, scale):
    assert register_value(register_raw(value, scale, unit), scale, unit) == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_kw_and_scale():
    assert register_value(-150, -0.01, "kW") == pytest.approx(1_500.0)
    assert register_raw(5_000.0, 1.0, "kW") == 5.0


# ---- which driver a config gets ------------------------------------------------------------------


def battery_cfg(**keys) -> BatteryConfig:
    return BatteryConfig.model_validate(
        {"capacity_kwh": 50.0, "max_charge_w": 10_000.0, "max_discharge_w": 20_000.0, **keys}
    )


@pytest.mark.parametrize(("given_id", "used_id"), [(None, 100), (1, 100), (100, 100), (0, 0), (238, 238)])
def test_victron_unit_id_left_at_the_default_becomes_the_system_unit(given_id, used_id):
    keys = {} if given_id is None else {"unit_id": given_id}
    cfg = battery_cfg(driver="victron", **keys)
    assert victron_unit_id(cfg) == used_id
    assert make_battery(cfg, print).where == f"127.0.0.1:502 unit {used_id}"


def test_each_driver_gets_its_preset_with_the_config_s_timings():
    timings = {"poll_s": 0.5, "timeout_s": 0.3, "stuck_after_s": 120, "revert_timeout_s": 30}
    sunspec = make_battery(battery_cfg(driver="sunspec", host="10.0.0.9", port=1502, unit_id=3, **timings), print)
    assert isinstance(sunspec, SunSpecBattery) and sunspec.where == "10.0.0.9:1502 unit 3"
    assert (sunspec.poll_s, sunspec.timeout_s, sunspec.revert_timeout_s) == (0.5, 0.3, 30)
    assert sunspec.ratings == RATINGS
    victron = make_battery(battery_cfg(driver="victron", setpoint_register=2700, **timings), print)
    assert isinstance(victron, VictronBattery) and victron.setpoint_register == 2700 and victron.poll_s == 0.5
    table = [{"name": "soc_pct", "address": 1, "unit": "%"}, {"name": "power_w", "address": 2, "unit": "kW"}]
    registers = make_battery(battery_cfg(driver="registers", registers=table, **timings), print)
    assert isinstance(registers, RegisterBattery) and set(registers.registers) == {"soc_pct", "power_w"}
    assert registers.revert_timeout_s == 30


def test_simulated_is_the_in_process_preset_and_a_setpoint_must_be_a_number():
    simulated = make_battery(battery_cfg(driver="simulated"), print, simulated=SimulatedBattery)
    assert isinstance(simulated, SimulatedBattery)
    assert simulated.status is None and "not started" in simulated.where
    for driver in ("sunspec", "simulated"):
        with pytest.raises(ValueError):
            make_battery(battery_cfg(driver=driver), print, simulated=SimulatedBattery).command(math.nan)


def test_the_simulated_preset_needs_the_composition_root_to_supply_the_simulator():
    with pytest.raises(ValueError, match="simulated"):
        make_battery(battery_cfg(driver="simulated"), print)
