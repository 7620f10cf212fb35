"""Other people's charging profiles as bounds: reading them off the wire (junk included), keeping them
as OCPP replaces and clears them, and what they allow a connector (control.md, "Other people's profiles")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from controller.shell.bounds import OperatorBounds
from controller.shell.power import bounded_max_a
from drivers.ocpp.found_profiles import from_composite, from_request, read_profile

T0 = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


def p16(profile_id=1, purpose="ChargePointMaxProfile", stack=0, limit=10.0, unit="A", **extra):
    return {"chargingProfileId": profile_id, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Absolute", **extra,
            "chargingSchedule": {"chargingRateUnit": unit, "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}}


def test_the_gateways_own_ids_are_never_someone_elses():
    assert read_profile("CP01", 1, p16(profile_id=990001)) is None
    assert read_profile("CP01", 1, p16(profile_id=999999)) is None
    assert read_profile("CP01", 1, p16(profile_id=989999)) is not None


def test_a_201_report_in_the_librarys_snake_case_reads_like_the_wire():
    snake = {"id": 5, "stack_level": 2, "charging_profile_purpose": "ChargingStationMaxProfile", "charging_profile_kind": "Absolute",
             "charging_schedule": [{"id": 1, "charging_rate_unit": "W", "charging_schedule_period": [
                 {"start_period": 0, "limit": 6900.0}, {"start_period": 60, "limit": 2070.0}]}]}
    found = read_profile("CP01", 0, snake)
    assert found is not None and found.purpose == "ChargePointMaxProfile" and found.stack_level == 2
    # W: the lowest at three phases, the highest at one (each on the fuse's side)
    assert found.low_a == 2070.0 / 690 and found.high_a == 6900.0 / 230


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=25), inner, max_size=4),
                    max_leaves=12),
       st.one_of(st.integers(-3, 3), st.none(), st.booleans(), st.text(max_size=2)))
def test_junk_never_crashes_the_readers_and_what_reads_has_sane_limits(junk, where):
    found = read_profile("CP01", where, junk)
    if found is not None:
        assert 0 <= found.low_a <= found.high_a
    from_request("CP01", "SetChargingProfile", {"connectorId": where, "csChargingProfiles": junk})
    from_composite("CP01", 1, junk, 16.0, T0)
    found = from_composite("CP01", 1, {"status": "Accepted", "scheduleStart": junk, "chargingSchedule": junk}, 16.0, T0)
    if found is not None:
        assert 0 <= found.low_at(T0) <= 16.0


def test_a_composite_below_the_gateways_own_default_is_a_bound_period_by_period_and_one_at_it_is_not():
    answer = {"status": "Accepted", "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}]}}
    assert from_composite("CP01", 1, answer, 16.0, T0).low_a == 10.0
    assert from_composite("CP01", 1, answer, 10.0, T0) is None
    assert from_composite("CP01", 1, {**answer, "status": "Rejected"}, 16.0, T0) is None
    # 16 A now, 0 A for one night hour from 22:00, 16 A again: a bound only in that hour
    night = {"status": "Accepted", "scheduleStart": "2026-12-08T12:00:00Z", "chargingSchedule": {
        "duration": 86400, "chargingRateUnit": "A", "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 16.0}, {"startPeriod": 36000, "limit": 0.0}, {"startPeriod": 39600, "limit": 16.0}]}}
    found = from_composite("CP01", 1, night, 16.0, T0)
    b = OperatorBounds()
    b.composite("CP01", 1, found)
    assert b.cap_a("CP01", 1, None, T0) == 16.0
    assert b.cap_a("CP01", 1, None, T0 + timedelta(hours=10, minutes=30)) == 0.0
    assert b.cap_a("CP01", 1, None, T0 + timedelta(hours=12)) == 16.0
    assert b.cap_a("CP01", 1, None, T0 + timedelta(hours=25)) is None  # past the schedule: read again at the next set-up
    b.forget_composites("CP01")
    assert b.cap_a("CP01", 1, None, T0 + timedelta(hours=10, minutes=30)) is None


def test_an_integer_past_a_floats_range_bounds_nothing():
    assert read_profile("CP01", 1, p16(limit=10**400)) is None
    answer = {"status": "Accepted", "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10**400}]}}
    assert from_composite("CP01", 1, answer, 16.0, T0) is None


def test_bounds_replace_clear_and_end_with_their_transaction():
    b = OperatorBounds()
    b.found(read_profile("CP01", 0, p16(limit=10.0)))
    assert b.cap_a("CP01", 2, None, T0) == 10.0 and b.over_a("CP01", 2, "7", T0) is None
    b.found(read_profile("CP01", 0, p16(limit=12.0)))  # the same id: replaced
    assert b.cap_a("CP01", 1, None, T0) == 12.0
    b.found(read_profile("CP01", 1, p16(profile_id=8, purpose="TxProfile", stack=5, limit=8.0)), "7")
    assert b.cap_a("CP01", 1, "7", T0) == 8.0 and b.over_a("CP01", 1, "7", T0) == 8.0
    assert b.cap_a("CP01", 1, "9", T0) == 12.0  # another transaction's TxProfile bounds nothing
    b.found(read_profile("CP01", 1, p16(profile_id=9, purpose="TxProfile", stack=0, limit=6.0)), "7")
    assert b.over_a("CP01", 1, "7", T0) == 8.0 and b.cap_a("CP01", 1, "7", T0) == 6.0  # below the lease: a bound only
    b.found(read_profile("CP01", 1, p16(profile_id=10, purpose="TxProfile", stack=1, limit=9.0)), "7")
    assert b.over_a("CP01", 1, "7", T0) == 9.0  # at the lease's level: 1.6 replaces the lease with it
    b.transaction_ended("CP01", 1)
    assert b.cap_a("CP01", 1, "7", T0) == 12.0 and b.over_a("CP01", 1, "7", T0) is None
    b.found(read_profile("CP01", 2, p16(profile_id=20, purpose="TxDefaultProfile", stack=3, limit=9.0,
                                          validTo=(T0 + timedelta(minutes=5)).isoformat())))
    assert b.cap_a("CP01", 2, None, T0) == 9.0 and b.cap_a("CP01", 2, None, T0 + timedelta(minutes=6)) == 12.0
    b.cleared("CP01", {"connectorId": 2, "chargingProfilePurpose": "TxDefaultProfile"})
    b.cleared("CP01", {"chargingProfileId": 1})
    assert b.cap_a("CP01", 2, None, T0) is None


@given(st.floats(0, 80), st.one_of(st.none(), st.floats(0, 80)), st.floats(6, 16))
def test_a_bound_is_never_exceeded_and_below_the_minimum_means_zero(max_a, cap_a, min_a):
    got = bounded_max_a(max_a, cap_a, min_a)
    assert got <= max_a
    if cap_a is not None:
        assert got <= cap_a
        assert got == 0.0 or got >= min(min_a, max_a) or got == max_a


def test_someone_elses_default_is_what_a_connector_falls_back_to_and_its_slot_is_left_alone():
    b = OperatorBounds()
    b.found(read_profile("CP01", 0, p16(profile_id=3, purpose="TxDefaultProfile", stack=3, limit=32.0)))
    b.found(from_request("CP01", "SetChargingProfile", {"connectorId": 2, "csChargingProfiles": p16(
        profile_id=4, purpose="TxDefaultProfile", stack=0, limit=20.0)}))
    assert b.default_a("CP01", 1, T0) == 32.0  # the charger follows it once a lease runs out
    assert b.default_a("CP01", 2, T0) == 32.0
    assert b.default_a("CP02", 1, T0) is None
    # at the safe default's level on connector 2: the gateway leaves that slot to it
    assert b.holds_default_slot("CP01", 2) and not b.holds_default_slot("CP01", 1) and not b.holds_default_slot("CP01", 0)


def test_a_charger_saying_it_holds_a_default_at_level_0_keeps_no_slot_from_the_safe_default():
    """The lie that would hurt most: a charger reports someone else's TxDefaultProfile at stack level 0
    so that the gateway sends it no safe default. It counts as a fallback, never as the slot."""
    b = OperatorBounds()
    b.found(read_profile("CP01", 1, p16(profile_id=4, purpose="TxDefaultProfile", stack=0, limit=6.0)))
    assert not b.holds_default_slot("CP01", 1)
    assert b.default_a("CP01", 1, T0) == 6.0
