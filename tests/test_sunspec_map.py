"""SunSpec device maps from pysunspec2's definitions, and point encoding with scale factors."""

import math

import pytest
import sunspec2.device as ss_device
from hypothesis import given
from hypothesis import strategies as st

from battery.sunspec_map import (
    END_MODEL_ID,
    SUNS_MARKER,
    SunSpecMapError,
    blank_image,
    build_layout,
    decode_point,
    encode_point,
    get_point,
    load_model_def,
    read_regs,
    set_point,
    setpoint_from_storage,
    storage_command,
)


def model_bytes(image, layout, model_id) -> bytes:
    block = next(b for b in layout.models if b.model_id == model_id)
    regs = read_regs(image, layout.base, block.address, block.length + 2)
    return b"".join(r.to_bytes(2, "big") for r in regs)


def test_chain_of_models_1_802_124_from_40000():
    layout = build_layout([1, 802, 124])
    assert [(b.model_id, b.address, b.length) for b in layout.models] == [
        (1, 40002, 66),
        (802, 40070, 62),
        (124, 40134, 24),
    ]
    assert layout.end_address == 40160
    image = blank_image(layout)
    assert tuple(image[0:2]) == SUNS_MARKER
    assert read_regs(image, 40000, 40160, 2) == [END_MODEL_ID, 0]
    assert read_regs(image, 40000, 40070, 2) == [802, 62]


@pytest.mark.parametrize("model_id", [1, 802, 124, 713])
def test_offsets_and_lengths_match_pysunspec2(model_id):
    ours = load_model_def(model_id)
    theirs = ss_device.Model(model_id=model_id)
    assert theirs.len == ours.length + 2  # pysunspec2 counts ID and L in
    for p in ours.points:
        point = theirs.points[p.name]
        assert (p.offset, p.size) == (point.offset, point.len), p.name


def test_repeating_groups_are_laid_out_per_repetition():
    layout = build_layout([1, 714], repeats={714: 2})
    block = layout.models[1]
    assert block.length == 18 + 2 * 25
    first, second = layout.point(714, "Prt[0].DCA"), layout.point(714, "Prt[1].DCA")
    assert second.address - first.address == 25
    assert first.sf == "DCA_SF"  # the model-level scale factor


def test_points_written_with_scale_factors_read_back_in_pysunspec2():
    layout = build_layout([1, 802, 124])
    image = blank_image(layout)
    for name, sf in [("SoC_SF", -1), ("W_SF", 1), ("WHRtg_SF", 1), ("A_SF", -1)]:
        set_point(image, layout, 802, name, sf)
    set_point(image, layout, 802, "SoC", 55.5)
    set_point(image, layout, 802, "W", -12_340)
    set_point(image, layout, 802, "WHRtg", 50_000)
    set_point(image, layout, 802, "State", 3)
    set_point(image, layout, 1, "Mn", "laadplein")
    battery = ss_device.Model(model_id=802, data=model_bytes(image, layout, 802))
    assert battery.SoC.cvalue == pytest.approx(55.5)
    assert battery.W.cvalue == pytest.approx(-12_340)
    assert battery.WHRtg.cvalue == pytest.approx(50_000)
    assert battery.State.value == 3
    assert battery.V.value is None  # never written: not implemented
    common = ss_device.Model(model_id=1, data=model_bytes(image, layout, 1))
    assert common.Mn.value == "laadplein"
    assert get_point(image, layout, 802, "SoC") == pytest.approx(55.5)
    assert get_point(image, layout, 802, "V") is None


@pytest.mark.parametrize(
    ("type_", "regs"),
    [
        ("int16", [0x8000]),
        ("uint16", [0xFFFF]),
        ("enum16", [0xFFFF]),
        ("bitfield16", [0xFFFF]),
        ("sunssf", [0x8000]),
        ("int32", [0x8000, 0]),
        ("uint32", [0xFFFF, 0xFFFF]),
        ("bitfield32", [0xFFFF, 0xFFFF]),
        ("float32", [0x7FC0, 0]),
        ("uint64", [0xFFFF] * 4),
    ],
)
def test_not_implemented_values(type_, regs):
    assert encode_point(None, type_) == regs
    assert decode_point(regs, type_) is None


def test_accumulators_have_no_not_implemented_value():
    assert decode_point([0xFFFF], "acc16") == 0xFFFF
    assert encode_point(None, "acc32") == [0, 0]


def test_strings_are_padded_with_nul_and_empty_means_not_implemented():
    regs = encode_point("SimBattery", "string", size=16)
    assert len(regs) == 16 and regs[0] == int.from_bytes(b"Si", "big") and regs[-1] == 0
    assert decode_point(regs, "string") == "SimBattery"
    assert decode_point([0] * 4, "string") is None
    with pytest.raises(SunSpecMapError):
        encode_point("far too long for two", "string", size=2)


def test_values_that_do_not_fit_are_refused():
    with pytest.raises(SunSpecMapError):
        encode_point(70_000, "uint16")
    with pytest.raises(SunSpecMapError):
        encode_point(65_535, "uint16")  # would read as "not implemented"
    with pytest.raises(SunSpecMapError):
        encode_point(-32_768, "int16")
    with pytest.raises(SunSpecMapError):
        encode_point(1, "int16", sf=11)


@given(raw=st.integers(-32767, 32767), sf=st.integers(-4, 4))
def test_int16_round_trip_with_scale_factor(raw, sf):
    value = decode_point([raw & 0xFFFF], "int16", sf)
    assert encode_point(value, "int16", sf) == [raw & 0xFFFF]


@given(raw=st.integers(0, 0xFFFE), sf=st.integers(-4, 4))
def test_uint16_round_trip_with_scale_factor(raw, sf):
    value = decode_point([raw], "uint16", sf)
    assert encode_point(value, "uint16", sf) == [raw]


@given(raw=st.integers(-(2**31) + 1, 2**31 - 1), sf=st.integers(-3, 3))
def test_int32_round_trip_with_scale_factor(raw, sf):
    regs = encode_point(decode_point(encode_point(raw, "int32"), "int32", sf), "int32", sf)
    assert decode_point(regs, "int32") == raw


@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_round_trip(value):
    assert decode_point(encode_point(value, "float32"), "float32") == value


def test_scaled_value_rounds_to_the_register_step():
    assert encode_point(55.56, "uint16", -1) == [556]
    assert decode_point([556], "uint16", -1) == pytest.approx(55.6)
    assert encode_point(12_345, "int16", 1) == [1234]
    assert math.isclose(decode_point([1234], "int16", 1), 12_340)


@pytest.mark.parametrize(
    ("mod", "in_pct", "out_pct", "expected_w"),
    [
        (0b10, 0.0, 50.0, 5_000.0),  # plain discharge
        (0b01, 25.0, 0.0, -2_000.0),  # plain charge
        (0b00, 25.0, 50.0, 0.0),  # rates without their bits do nothing
        (0b01, -50.0, 0.0, 4_000.0),  # a negative InWRte discharges (Fronius style)
        (0b10, 0.0, -10.0, -1_000.0),  # a negative OutWRte charges from the grid
    ],
)
def test_setpoint_from_storage_plain_reading(mod, in_pct, out_pct, expected_w):
    assert setpoint_from_storage(mod, in_pct, out_pct, 8_000.0, 10_000.0) == pytest.approx(expected_w)


@pytest.mark.parametrize("setpoint_w", [-8_000.0, -1_234.0, 0.0, 2_500.0, 10_000.0])
def test_storage_command_round_trips_through_the_plain_reading(setpoint_w):
    cmd = storage_command(setpoint_w, 8_000.0, 10_000.0, revert_s=30)
    assert cmd["InOutWRte_RvrtTms"] == 30
    back = setpoint_from_storage(cmd["StorCtl_Mod"], cmd["InWRte"], cmd["OutWRte"], 8_000.0, 10_000.0)
    assert back == pytest.approx(setpoint_w)


def test_unknown_model_and_point_are_named():
    with pytest.raises(SunSpecMapError, match="9999"):
        build_layout([9999])
    with pytest.raises(KeyError, match="Nope"):
        build_layout([802]).point(802, "Nope")
