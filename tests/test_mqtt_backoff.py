"""The MQTT link's reconnect backoff: quick first retry, doubling to the cap, jitter that never breaks
the cap (interfaces.md §4: a lost broker is retried at least every 5 s), reset after a lasting connection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.mqtt.link import (
    FIRST_RETRY_S,
    RETRY_JITTER,
    STABLE_AFTER_S,
    MqttLink,
    failures_after_loss,
    retry_delay_s,
)

DRAWS = st.floats(0, 1, exclude_max=True)
CAPS = st.floats(0.01, 5)
FAILURES = st.integers(1, 10_000)


def outage(attempts: int, cap_s: float = 5.0, *, failures: int = 0, up_s: float = 0.0) -> list[float]:
    """The waits of an outage as the link lives it: a loss after `up_s` s up, then failed attempts."""
    waits = []
    failures = failures_after_loss(failures, up_s)
    for _ in range(attempts):
        waits.append(retry_delay_s(failures, cap_s))
        failures = failures_after_loss(failures, 0.0)
    return waits


def test_first_retry_is_quick_then_doubles_to_the_cap() -> None:
    assert FIRST_RETRY_S == 0.5
    assert outage(8) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


def test_a_smaller_cap_is_kept_from_the_first_retry_on() -> None:
    assert outage(4, cap_s=0.2) == [0.2, 0.2, 0.2, 0.2]
    assert outage(5, cap_s=2.0) == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_jitter_only_shortens_the_wait() -> None:
    assert retry_delay_s(1, 5.0, draw=0.0) == 0.5
    assert retry_delay_s(1, 5.0, draw=0.5) == pytest.approx(0.5 * (1 - RETRY_JITTER / 2))
    assert retry_delay_s(9, 5.0, draw=0.999) == pytest.approx(5.0 * (1 - RETRY_JITTER * 0.999))
    assert 0 < RETRY_JITTER <= 0.5  # "a little": a wait is never cut by more than half


@given(failures=FAILURES, cap_s=CAPS, draw=DRAWS)
def test_every_wait_is_within_the_cap_and_the_jitter_band(failures: int, cap_s: float, draw: float) -> None:
    wait_s = retry_delay_s(failures, cap_s, draw=draw)
    base_s = min(FIRST_RETRY_S * 2 ** (failures - 1), cap_s) if failures < 64 else cap_s
    assert (1 - RETRY_JITTER) * base_s <= wait_s <= base_s <= cap_s


@given(failures=FAILURES, cap_s=CAPS, draw=DRAWS)
def test_waits_never_shrink_while_the_outage_lasts(failures: int, cap_s: float, draw: float) -> None:
    assert retry_delay_s(failures + 1, cap_s, draw=draw) >= retry_delay_s(failures, cap_s, draw=draw)


@given(failures=st.integers(0, 1000), up_s=st.floats(STABLE_AFTER_S, 1e9))
def test_a_connection_that_lasted_starts_the_backoff_again(failures: int, up_s: float) -> None:
    assert failures_after_loss(failures, up_s) == 1
    assert outage(3, failures=failures, up_s=up_s) == [0.5, 1.0, 2.0]


@given(failures=st.integers(0, 1000), up_s=st.floats(0, STABLE_AFTER_S, exclude_max=True))
def test_a_connection_that_drops_at_once_is_one_more_failure(failures: int, up_s: float) -> None:
    # A broker that accepts and throws the gateway out again must not be hammered every 0.5 s.
    assert failures_after_loss(failures, up_s) == failures + 1


def test_a_flapping_broker_backs_off_like_an_unreachable_one() -> None:
    failures, waits = 0, []
    for _ in range(6):
        failures = failures_after_loss(failures, 1.0)
        waits.append(retry_delay_s(failures, 5.0))
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_huge_failure_count_is_the_cap() -> None:
    assert retry_delay_s(10**9, 5.0) == 5.0


@pytest.mark.parametrize(
    ("failures", "cap_s", "draw"),
    [(0, 5.0, 0.0), (-1, 5.0, 0.0), (1, 0.0, 0.0), (1, -1.0, 0.0), (1, 5.0, 1.0), (1, 5.0, -0.1)],
)
def test_nonsense_is_refused(failures: int, cap_s: float, draw: float) -> None:
    with pytest.raises(ValueError):
        retry_delay_s(failures, cap_s, draw=draw)


def test_the_link_caps_at_5_s_unless_told_lower() -> None:
    link = MqttLink("127.0.0.1", 1883, "lp/x", ["B01"], lambda event: None)
    assert link.retry_s == 5.0
    assert MqttLink("127.0.0.1", 1883, "lp/x", ["B01"], lambda event: None, retry_s=0.5).retry_s == 0.5
