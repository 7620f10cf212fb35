"""Trust in battery readings: each plausibility rule, and how trust is lost and won back."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from battery.trust import BatteryRatings, Reading, TrustTracker, implausibility

RATINGS = BatteryRatings(max_charge_w=10_000, max_discharge_w=20_000)


def good(at_s: float, soc_pct: float = 50.0, power_w: float = 0.0) -> Reading:
    return Reading(at_s, soc_pct, power_w, "CONNECTED")


def trusted_tracker(**kwargs) -> TrustTracker:
    tracker = TrustTracker(RATINGS, **kwargs)
    for i in range(3):
        tracker.observe(good(float(i), power_w=float(i)), False)
    assert tracker.trusted
    return tracker


def test_starts_untrusted_and_needs_three_plausible_readings():
    tracker = TrustTracker(RATINGS)
    v1 = tracker.observe(good(0.0), False)
    v2 = tracker.observe(good(1.0), False)
    assert (v1.trusted, v1.changed) == (False, False)
    assert v2.reason == "2 of 3 plausible readings since: no reading yet"
    v3 = tracker.observe(good(2.0), False)
    assert (v3.trusted, v3.changed, v3.reason) == (True, True, "3 plausible readings in a row")
    v4 = tracker.observe(good(3.0), False)
    assert (v4.trusted, v4.changed, v4.reason) == (True, False, "plausible")


@pytest.mark.parametrize(
    ("reading", "words"),
    [
        (Reading(10.0, None, 0.0, "CONNECTED"), "SoC not implemented"),
        (Reading(10.0, 50.0, None, "CONNECTED"), "power not implemented"),
        (Reading(10.0, 50.0, 0.0, None), "state not implemented"),
        (Reading(10.0, 100.1, 0.0, "CONNECTED"), "SoC 100.1 % outside 0-100 %"),
        (Reading(10.0, -0.5, 0.0, "CONNECTED"), "SoC -0.5 % outside 0-100 %"),
        (Reading(10.0, math.nan, 0.0, "CONNECTED"), "outside 0-100 %"),
        (Reading(10.0, 50.0, 22_001.0, "CONNECTED"), "discharge power 22001 W beyond the rating 20000 W x 1.1"),
        (Reading(10.0, 50.0, -11_001.0, "CONNECTED"), "charge power 11001 W beyond the rating 10000 W x 1.1"),
        (Reading(10.0, 50.0, math.inf, "CONNECTED"), "power inf W is not a number"),
    ],
)
def test_an_implausible_reading_removes_trust_and_says_why(reading, words):
    tracker = trusted_tracker()
    verdict = tracker.observe(reading, False)
    assert (verdict.trusted, verdict.changed) == (False, True)
    assert words in verdict.reason


def test_limits_and_margin_are_inclusive():
    assert implausibility(good(0.0, 0.0, 22_000.0), RATINGS, 1.1) is None
    assert implausibility(good(0.0, 100.0, -11_000.0), RATINGS, 1.1) is None
    assert implausibility(good(0.0, 50.0, 20_001.0), RATINGS, 1.0) is not None


def test_all_problems_of_one_reading_are_named():
    reason = implausibility(Reading(0.0, None, 60_000.0, "CONNECTED"), RATINGS, 1.1)
    assert reason == (
        "SoC not implemented (SunSpec 'not implemented' value); "
        "discharge power 60000 W beyond the rating 20000 W x 1.1"
    )


def test_a_reading_stuck_while_the_setpoint_asks_for_change_removes_trust():
    tracker = trusted_tracker(stuck_after_s=900.0)
    tracker.observe(good(100.0, 60.0, 500.0), True)  # asked at 100 s
    assert tracker.observe(good(999.0, 60.0, 500.0), False).trusted
    verdict = tracker.observe(good(1000.0, 60.0, 500.0), False)
    assert (verdict.trusted, verdict.changed) == (False, True)
    assert verdict.reason == (
        "SoC 60 % and power 500 W unchanged for 900 s although the setpoint asked for a change"
    )
    # still the same value: still stuck, however many readings
    assert not tracker.observe(good(1001.0, 60.0, 500.0), False).trusted
    # the value moves: three plausible readings bring trust back
    tracker.observe(good(1002.0, 60.0, 3000.0), False)
    tracker.observe(good(1003.0, 59.9, 3000.0), False)
    assert tracker.observe(good(1004.0, 59.9, 3000.0), False).trusted


def test_a_steady_reading_is_not_stuck_when_no_change_was_asked():
    tracker = trusted_tracker(stuck_after_s=900.0)
    for at_s in (100.0, 1000.0, 5000.0):
        assert tracker.observe(good(at_s, 60.0, 0.0), False).trusted


def test_the_stuck_clock_starts_when_the_change_is_asked_not_when_the_value_settled():
    tracker = trusted_tracker(stuck_after_s=900.0)
    tracker.observe(good(100.0, 60.0, 0.0), False)
    tracker.observe(good(800.0, 60.0, 0.0), True)
    assert tracker.observe(good(1699.0, 60.0, 0.0), False).trusted
    assert not tracker.observe(good(1700.0, 60.0, 0.0), False).trusted


def test_a_link_failure_removes_trust_and_recovery_counts_from_zero():
    tracker = trusted_tracker()
    verdict = tracker.failure(10.0, "no answer from 10.0.0.5:502 unit 1 within 1.0 s")
    assert (verdict.trusted, verdict.changed) == (False, True)
    assert verdict.reason == "no answer from 10.0.0.5:502 unit 1 within 1.0 s"
    tracker.observe(good(11.0), False)
    tracker.observe(good(12.0), False)
    tracker.failure(13.0, "connection refused")
    tracker.observe(good(14.0), False)
    v = tracker.observe(good(15.0), False)
    assert v.reason == "2 of 3 plausible readings since: connection refused"
    assert tracker.observe(good(16.0), False).trusted


def test_time_going_backwards_is_refused():
    tracker = TrustTracker(RATINGS)
    tracker.observe(good(10.0), False)
    with pytest.raises(ValueError, match="back in time"):
        tracker.observe(good(9.0), False)


@pytest.mark.parametrize(
    "kwargs", [{"stuck_after_s": 0.0}, {"needed_good": 0}, {"margin": 0.9}]
)
def test_nonsense_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        TrustTracker(RATINGS, **kwargs)


def test_negative_ratings_are_refused():
    with pytest.raises(ValueError, match="max_charge_w"):
        BatteryRatings(max_charge_w=-1, max_discharge_w=100)


plausible_values = st.tuples(
    st.floats(min_value=0.0, max_value=100.0), st.floats(min_value=-10_000.0, max_value=20_000.0)
)
any_values = st.tuples(
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
implausible_values = st.one_of(
    st.tuples(st.none(), st.floats(min_value=-10_000.0, max_value=20_000.0)),
    st.tuples(st.floats(min_value=0.0, max_value=100.0), st.none()),
    st.tuples(st.floats(min_value=100.001, max_value=1e6), st.floats(min_value=-10_000.0, max_value=20_000.0)),
    st.tuples(st.floats(max_value=-0.001, min_value=-1e6), st.floats(min_value=-10_000.0, max_value=20_000.0)),
    st.tuples(st.floats(min_value=0.0, max_value=100.0), st.floats(min_value=22_000.001, max_value=1e9)),
    st.tuples(st.floats(min_value=0.0, max_value=100.0), st.floats(max_value=-11_000.001, min_value=-1e9)),
)
history = st.lists(
    st.one_of(
        st.tuples(st.just("reading"), any_values, st.booleans(), st.floats(min_value=0.0, max_value=2000.0)),
        st.tuples(st.just("failure"), st.none(), st.none(), st.floats(min_value=0.0, max_value=2000.0)),
    ),
    max_size=30,
)


def replay(tracker: TrustTracker, events) -> float:
    at_s = 0.0
    for kind, values, asked, gap_s in events:
        at_s += gap_s
        if kind == "failure":
            tracker.failure(at_s, "no answer")
        else:
            tracker.observe(Reading(at_s, values[0], values[1], "CONNECTED"), asked)
    return at_s


@given(history, st.lists(plausible_values, min_size=3, max_size=3, unique=True), st.booleans())
def test_three_plausible_changing_readings_always_restore_trust(events, goods, asked):
    tracker = TrustTracker(RATINGS, stuck_after_s=900.0)
    at_s = replay(tracker, events)
    readings = [values for kind, values, _, _ in events if kind == "reading"]
    if readings and goods[0] == readings[-1]:
        goods = goods[1:] + goods[:1]  # the first good value must differ from the last one seen
    for soc_pct, power_w in goods:
        at_s += 1.0
        verdict = tracker.observe(Reading(at_s, soc_pct, power_w, "CONNECTED"), asked)
    assert verdict.trusted


@given(history, implausible_values, st.booleans())
def test_an_implausible_reading_always_removes_trust(events, values, asked):
    tracker = TrustTracker(RATINGS)
    at_s = replay(tracker, events)
    verdict = tracker.observe(Reading(at_s + 1.0, values[0], values[1], "CONNECTED"), asked)
    assert not verdict.trusted
    assert verdict.reason


@given(history, st.floats(min_value=0.0, max_value=10.0))
def test_a_failure_always_removes_trust(events, gap_s):
    tracker = TrustTracker(RATINGS)
    at_s = replay(tracker, events)
    assert not tracker.failure(at_s + gap_s, "refused").trusted


@given(history)
def test_changed_is_true_exactly_when_trust_flips(events):
    tracker = TrustTracker(RATINGS)
    before = tracker.trusted
    at_s = 0.0
    for kind, values, asked, gap_s in events:
        at_s += gap_s
        if kind == "failure":
            verdict = tracker.failure(at_s, "no answer")
        else:
            verdict = tracker.observe(Reading(at_s, values[0], values[1], "CONNECTED"), asked)
        assert verdict.changed == (verdict.trusted != before)
        before = verdict.trusted
