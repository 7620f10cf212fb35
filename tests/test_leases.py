"""The lease book: what is in force, which leases go out, renewals, rises held back, answers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from controller.core.leases import LeaseBook
from controller.core.sharing_types import ConnectorDecision, Sharing
from drivers.contract.orders import SCHEDULE_LEAD_S
from drivers.ocpp import profiles16 as p16

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=timezone.utc)
KEY = "CP01/1"


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def sharing(limit_a: float, grid_only_a: float | None = None, key: str = KEY) -> Sharing:
    d = ConnectorDecision(key=key, bay_id="B01", target_a=limit_a, limit_a=limit_a,
                          grid_only_a=limit_a if grid_only_a is None else grid_only_a, reason="test")
    return Sharing(connectors=(d,), load_a=(limit_a,) * 3, battery_needed_a=(0.0,) * 3, spare_a=(0.0,) * 3, short=False)


def book(**kw) -> LeaseBook:
    b = LeaseBook(lease_s=300, reaction_s=10, **kw)
    b.set_safe_default(KEY, 6.6)
    return b


def send(b: LeaseBook, limit_a: float, t: float, accepted: bool | None = True, grid_only_a: float | None = None):
    orders = b.orders(sharing(limit_a, grid_only_a), at(t))
    for o in orders:
        b.sent(o, at(t), accepted)
    return orders


def test_without_a_lease_the_safe_default_is_in_force():
    b = book()
    assert b.in_force_a(KEY, at(0)) == 6.6
    assert b.connector_state(KEY, at(0), None).in_force_a == 6.6


def test_first_lease_goes_out_and_is_in_force_once_accepted():
    b = book()
    [o] = b.orders(sharing(16.0), at(0))
    assert (o.why, o.limit_a) == ("first", 16.0)
    assert b.in_force_a(KEY, at(0)) == 16.0  # on its way: counted at the higher
    assert b.orders(sharing(20.0), at(0.5)) == []  # one call at a time per connector
    b.sent(o, at(0.2), True)
    assert b.in_force_a(KEY, at(1)) == 16.0
    assert b.lease_ends_at(KEY) == at(0 - SCHEDULE_LEAD_S + 300)  # from when it was sent


def test_a_refused_lease_leaves_the_old_limit():
    b = book()
    send(b, 16.0, 0, accepted=False)
    assert b.in_force_a(KEY, at(1)) == 6.6


def test_an_unanswered_lease_counts_as_held():
    b = book()
    send(b, 16.0, 0)
    send(b, 8.0, 20, accepted=None)  # decrease that got no answer: the charger may still allow 16 A
    assert b.in_force_a(KEY, at(21)) == 16.0


def test_decreases_go_at_once_and_settle_on_the_meter_or_after_reaction():
    b = book()
    send(b, 16.0, 0)
    [o] = send(b, 8.0, 20)
    assert o.why == "decrease"
    s = b.connector_state(KEY, at(21), draw_a=15.8)
    assert (s.in_force_a, s.settling_from_a) == (8.0, 16.0)
    assert b.connector_state(KEY, at(22), draw_a=8.2).settling_from_a is None  # the meter shows it
    send(b, 6.0, 40)
    assert b.connector_state(KEY, at(45), draw_a=None).settling_from_a == 8.0
    assert b.connector_state(KEY, at(50.1), draw_a=None).settling_from_a is None  # reaction_s passed


def test_a_sample_older_than_the_decrease_does_not_settle_it():
    b = book()
    send(b, 16.0, 0)
    send(b, 8.0, 20)
    assert b.connector_state(KEY, at(21), draw_a=7.0, draw_at=at(19)).settling_from_a == 16.0
    assert b.connector_state(KEY, at(22), draw_a=7.0, draw_at=at(21.5)).settling_from_a is None


def test_rises_need_one_amp_and_ten_seconds():
    b = book()
    send(b, 10.0, 0)
    assert send(b, 10.9, 20) == []  # less than 1 A
    [o] = send(b, 12.0, 21)
    assert o.why == "increase"
    assert send(b, 16.0, 25) == []  # the last rise was 4 s ago
    [o] = send(b, 16.0, 31.5)
    assert o.limit_a == 16.0
    [o] = send(b, 6.0, 32)  # decreases are never held back
    assert o.why == "decrease"


def test_renewed_before_the_lease_runs_out():
    b = book()
    send(b, 10.0, 0)
    assert send(b, 10.0, 200) == []
    [o] = send(b, 10.0, 270)
    assert (o.why, o.limit_a) == ("renew", 10.0)
    assert b.in_force_a(KEY, at(500)) == 10.0


def test_a_lease_someone_may_have_cleared_is_sent_again_at_once_and_still_counted():
    b = book()
    send(b, 10.0, 0)
    assert send(b, 10.0, 20) == []
    b.resend(KEY)
    assert b.in_force_a(KEY, at(21)) == 10.0
    [o] = send(b, 10.0, 21)
    assert (o.why, o.limit_a) == ("renew", 10.0)


def test_an_expired_lease_falls_back_to_the_safe_default():
    b = book()
    send(b, 16.0, 0)
    assert b.in_force_a(KEY, at(300 - SCHEDULE_LEAD_S - 0.1)) == 16.0
    assert b.in_force_a(KEY, at(300)) == 6.6


def test_a_limit_on_the_battery_drops_to_the_grid_share_before_the_battery_reverts():
    b = book(battery_revert_s=60, poll_s=1)
    [o] = send(b, 20.0, 0, grid_only_a=8.0)
    assert o.first_period_s == SCHEDULE_LEAD_S + 60 - 1 - 10
    assert b.in_force_a(KEY, at(40)) == 20.0
    assert b.in_force_a(KEY, at(o.first_period_s - SCHEDULE_LEAD_S + 0.1)) == 8.0
    # renewed before the first period ends, so the car keeps its share while the battery serves
    [r] = b.orders(sharing(20.0, 8.0), at(o.first_period_s - SCHEDULE_LEAD_S - 10))
    assert r.why == "renew"


def test_end_of_session_forgets_the_lease():
    b = book()
    send(b, 16.0, 0)
    b.end_session(KEY)
    assert b.in_force_a(KEY, at(1)) == 6.6
    assert b.lease_ends_at(KEY) is None


def test_lease_payload_is_an_absolute_txprofile_from_five_seconds_ago():
    b = book(battery_revert_s=60)
    [o] = b.orders(sharing(20.0, 8.0), at(0))
    payload = p16.lease(o, 1, 42, at(0), 300)
    prof = payload["csChargingProfiles"]
    assert payload["connectorId"] == 1
    assert prof["chargingProfilePurpose"] == "TxProfile" and prof["transactionId"] == 42
    assert prof["chargingProfileKind"] == "Absolute" and prof["stackLevel"] == 1
    assert prof["chargingProfileId"] == p16.lease_profile_id(1)
    sched = prof["chargingSchedule"]
    assert sched["startSchedule"] == "2026-11-28T12:59:55.000Z" and sched["duration"] == 300
    assert sched["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 20.0}, {"startPeriod": 54, "limit": 8.0}]


def test_safe_default_payload_and_phase_rotation():
    prof = p16.safe_default(2, 6.6)["csChargingProfiles"]
    assert prof["chargingProfilePurpose"] == "TxDefaultProfile" and prof["stackLevel"] == 0
    assert prof["chargingSchedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 6.6}]
    answer = {"configurationKey": [{"key": "ConnectorPhaseRotation", "readonly": True, "value": "0.RST, 2.STR, 3.XYZ"}]}
    assert p16.phase_rotation(answer, 2) == {1: "RST", 2: "STR"}
    assert p16.grid_phase("STR", 0) == 1 and p16.grid_phase("TRS", 0) == 2 and p16.grid_phase(None, 2) == 2


def test_a_draw_measured_before_the_last_change_could_show_says_nothing():
    from controller.core.leases import telling_draw_a

    assert telling_draw_a(6.6, at(5), at(0), 10) is None
    assert telling_draw_a(6.6, at(10), at(0), 10) == 6.6
    assert telling_draw_a(6.6, at(5), None, 10) == 6.6
    assert telling_draw_a(None, at(50), at(0), 10) is None


def test_a_lease_unknown_after_a_restart_counts_until_it_ends_or_a_new_one_is_accepted():
    b = book()
    b.assume_held(KEY, 32.0, at(0), at(300))
    assert b.in_force_a(KEY, at(100)) == 32.0
    assert b.in_force_a(KEY, at(300)) == 6.6
    send(b, 10.0, 120)
    assert b.in_force_a(KEY, at(121)) == 10.0


def test_a_falling_grid_share_is_written_into_a_one_period_lease():
    b = book(battery_revert_s=60, poll_s=1)
    send(b, 16.0, 0)  # all on the grid: one period
    [o] = b.orders(sharing(16.0, 10.6), at(20))
    assert o.why == "decrease" and (o.limit_a, o.grid_only_a) == (16.0, 10.6) and o.first_period_s is not None


def test_a_draw_read_just_as_the_reaction_time_ends_may_still_show_the_old_limit():
    from controller.core.leases import telling_draw_a

    # Read 10 s after a rise but measured up to a second before: it may show the limit before the rise.
    assert telling_draw_a(6.6, at(10), at(0), 10, lag_s=1.0) is None
    assert telling_draw_a(6.6, at(10.5), at(0), 10, lag_s=1.0) is None
    assert telling_draw_a(6.6, at(11), at(0), 10, lag_s=1.0) == 6.6


def test_a_decrease_smaller_than_the_meter_margin_settles_only_when_it_shows_or_after_reaction():
    b = book()
    send(b, 16.0, 0)
    send(b, 15.6, 20)  # 0.4 A down: a car still drawing 16 A is within 0.5 A of the new limit
    assert b.connector_state(KEY, at(21), draw_a=16.0, draw_at=at(20.5)).settling_from_a == 16.0
    assert b.connector_state(KEY, at(22), draw_a=15.6, draw_at=at(21.5)).settling_from_a is None
    send(b, 14.0, 40)  # a whole 2 A down keeps the 0.5 A margin
    assert b.connector_state(KEY, at(41), draw_a=14.4, draw_at=at(40.5)).settling_from_a is None
    send(b, 13.6, 60)
    assert b.connector_state(KEY, at(70.1), draw_a=None).settling_from_a is None  # reaction_s passed
