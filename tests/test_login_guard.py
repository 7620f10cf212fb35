"""The failed-login rate limit: lockouts per charger id and host and per host, their end, known-good
chargers behind a locked-out host, and bounded memory."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ocpp.login_guard import LoginGuard, Refusal

HOST = "10.20.0.11"
OTHER_HOST = "10.20.0.12"


def attempt(guard: LoginGuard, charger_id: str, host: str, now_s: float, correct: bool) -> int | Refusal:
    """What the OCPP endpoint does with one login: 429 (the Refusal), 101 (in) or 401 (wrong password)."""
    refusal = guard.refusal(charger_id, host, now_s)
    if refusal is not None:
        return refusal
    if correct:
        guard.succeeded(charger_id, host, now_s)
        return 101
    guard.failed(charger_id, host, now_s)
    return 401


def test_the_sixth_attempt_after_five_failures_is_refused_even_with_the_right_password() -> None:
    guard = LoginGuard()
    for i in range(4):
        assert guard.failed("CP01", HOST, 100.0 + i) is None
    started = guard.failed("CP01", HOST, 104.0)
    assert started == Refusal("charger", 60, 5)
    assert guard.refusal("CP01", HOST, 104.5) == Refusal("charger", 60, 5)
    assert attempt(guard, "CP01", HOST, 150.0, correct=True) == Refusal("charger", 14, 5)
    assert guard.refusal("CP01", HOST, 163.9) == Refusal("charger", 1, 5)
    # The minute is over: the password is checked again, and the count starts afresh.
    assert attempt(guard, "CP01", HOST, 164.0, correct=True) == 101
    for i in range(4):
        assert attempt(guard, "CP01", HOST, 165.0 + i, correct=False) == 401
    assert guard.refusal("CP01", HOST, 170.0) is None


def test_the_lockout_is_per_charger_id_and_host() -> None:
    guard = LoginGuard()
    for i in range(5):
        guard.failed("CP01", HOST, float(i))
    assert guard.refusal("CP01", HOST, 5.0) is not None
    assert guard.refusal("CP01", OTHER_HOST, 5.0) is None  # the same charger from elsewhere
    assert guard.refusal("CP02", HOST, 5.0) is None  # another charger from the same host


def test_failures_older_than_the_window_do_not_count() -> None:
    guard = LoginGuard(window_s=60)
    for t in (0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0):  # never five within 60 s
        assert guard.failed("CP01", HOST, t) is None
        assert guard.refusal("CP01", HOST, t + 0.1) is None
    assert guard.failed("CP01", HOST, 121.0) is None  # 4 within (61, 121]
    assert guard.failed("CP01", HOST, 122.0) is not None  # 5 within (62, 122]
    # A failure exactly a window ago has left it.
    guard = LoginGuard(window_s=60)
    for t in (0.0, 15.0, 30.0, 45.0, 60.0):
        assert guard.failed("CP01", HOST, t) is None
    assert guard.failed("CP01", HOST, 60.5) is not None


def test_a_correct_login_from_the_host_resets_its_counts() -> None:
    guard = LoginGuard()
    for i in range(4):
        guard.failed("CP01", HOST, float(i))
    guard.succeeded("CP01", HOST, 5.0)
    for i in range(4):
        assert guard.failed("CP01", HOST, 10.0 + i) is None
    assert guard.refusal("CP01", HOST, 20.0) is None


def test_twenty_failures_from_one_host_for_any_ids_lock_the_host_out() -> None:
    guard = LoginGuard()
    for i in range(19):
        assert guard.failed(f"ID{i:03d}", HOST, i * 0.1) is None
    assert guard.failed("ID019", HOST, 2.0) == Refusal("host", 60, 20)
    for charger_id in ("CP01", "ID000", "never-seen"):
        refusal = guard.refusal(charger_id, HOST, 3.0)
        assert refusal is not None and refusal.scope == "host" and refusal.retry_after_s == 59
    assert guard.refusal("CP01", OTHER_HOST, 3.0) is None
    assert guard.refusal("CP01", HOST, 62.0) is None


def test_a_correct_login_in_between_keeps_the_host_below_its_limit() -> None:
    guard = LoginGuard()
    for i in range(19):
        guard.failed(f"ID{i:03d}", HOST, float(i))
    guard.succeeded("CP01", HOST, 19.5)
    for i in range(19):
        assert guard.failed(f"IE{i:03d}", HOST, 20.0 + i) is None
    assert guard.refusal("CP01", HOST, 40.0) is None


def test_the_lockout_may_be_longer_than_the_window() -> None:
    guard = LoginGuard(window_s=10, lockout_s=90)
    for i in range(5):
        guard.failed("CP01", HOST, float(i))
    assert guard.refusal("CP01", HOST, 93.0) == Refusal("charger", 1, 5)
    assert guard.refusal("CP01", HOST, 94.0) is None


def test_memory_stays_bounded_under_a_flood_of_ids_and_hosts() -> None:
    guard = LoginGuard(max_entries=64)
    now = 0.0
    for i in range(20_000):
        now += 0.001
        attempt(guard, f"ID{i}", f"10.{i % 250}.{i // 250 % 250}.1", now, correct=False)
        assert len(guard) <= 2 * 64
    # A real charger on its own host still gets its password checked.
    assert attempt(guard, "CP01", "192.168.1.50", now, correct=True) == 101


def test_keys_with_nothing_recent_make_room_before_active_ones() -> None:
    guard = LoginGuard(window_s=10, max_entries=3)
    guard.failed("CP01", HOST, 0.0)  # the oldest key: plain first-in-first-out would drop it first
    guard.failed("CP02", "10.0.0.2", 1.0)
    guard.failed("CP03", "10.0.0.3", 2.0)
    for t in (11.0, 12.0, 13.0, 14.0):
        assert guard.failed("CP01", HOST, t) is None
    guard.failed("CP04", "10.0.0.4", 15.0)  # full: CP02 and CP03 have nothing within 10 s and go
    assert guard.failed("CP01", HOST, 16.0) == Refusal("charger", 10, 5)


def lock_out_host(guard: LoginGuard, host: str, now_s: float) -> None:
    """Four misconfigured chargers, five wrong passwords each: their own lockouts and the host's."""
    started = [guard.failed(f"CP9{n}", host, now_s + 0.1 * i) for n in range(4) for i in range(5)]
    assert started[-1] is not None and started[-1].scope == "host"


def test_chargers_that_logged_in_from_a_locked_out_host_still_get_in() -> None:
    # One LTE router for the whole square: every charger has the same address.
    guard = LoginGuard(lockout_s=600)
    for n, charger_id in enumerate(("CP01", "CP02", "CP03")):
        assert attempt(guard, charger_id, HOST, 10.0 + n, correct=True) == 101
    lock_out_host(guard, HOST, 3600.0)
    later = 3600.0 + 60.0
    # Known good: the password is checked (and a right one lets them in, a wrong one is counted).
    assert attempt(guard, "CP01", HOST, later, correct=True) == 101
    assert attempt(guard, "CP02", HOST, later, correct=True) == 101
    # Unknown ids, and the misconfigured ones, stay locked out by the host.
    for charger_id in ("CP04", "never-seen", "CP90"):
        refusal = guard.refusal(charger_id, HOST, later)
        assert refusal is not None and refusal.scope == "host" and refusal.failures == 20
    # A known-good charger's correct login does not lift the host's lockout for the others.
    assert guard.refusal("never-seen", HOST, later + 1) is not None
    # Known good is per host: CP03 from another address is just another pair (and that host is not locked).
    assert guard.refusal("CP03", OTHER_HOST, later) is None
    lock_out_host(guard, OTHER_HOST, later)
    assert guard.refusal("CP03", OTHER_HOST, later + 5).scope == "host"
    assert guard.refusal("CP03", HOST, later + 5) is None


def test_a_known_good_charger_is_still_held_by_its_own_lockout() -> None:
    guard = LoginGuard(lockout_s=600)
    guard.succeeded("CP01", HOST, 0.0)
    lock_out_host(guard, HOST, 100.0)
    for i in range(4):
        assert attempt(guard, "CP01", HOST, 110.0 + i, correct=False) == 401
    assert guard.failed("CP01", HOST, 114.0) == Refusal("charger", 600, 5)
    assert guard.refusal("CP01", HOST, 115.0) == Refusal("charger", 599, 5)


def test_failures_of_known_good_chargers_during_a_host_lockout_still_count_after_it() -> None:
    guard = LoginGuard(window_s=60, lockout_s=30)
    guard.succeeded("CP01", HOST, 0.0)
    lock_out_host(guard, HOST, 100.0)  # until 131.9
    for i in range(4):
        assert attempt(guard, "CP01", HOST, 110.0 + i, correct=False) == 401
    assert guard.refusal("ID000", HOST, 132.0) is None  # the lockout is over
    for i in range(15):
        assert guard.failed(f"ID{i:03d}", HOST, 132.0 + i) is None
    assert guard.failed("ID015", HOST, 147.0) == Refusal("host", 30, 20)


def test_known_good_lasts_a_day_from_the_last_correct_login() -> None:
    day = 24 * 3600.0
    guard = LoginGuard(lockout_s=3 * day, window_s=60)
    guard.succeeded("CP01", HOST, 0.0)
    guard.succeeded("CP02", HOST, 0.0)
    guard.succeeded("CP02", HOST, day / 2)
    lock_out_host(guard, HOST, 1000.0)
    assert guard.refusal("CP01", HOST, day - 1) is None
    assert guard.refusal("CP01", HOST, day).scope == "host"
    assert guard.refusal("CP02", HOST, day * 1.5 - 1) is None
    assert guard.refusal("CP02", HOST, day * 1.5).scope == "host"
    # Nothing is remembered as known good when asked not to.
    guard = LoginGuard(known_good_s=0)
    guard.succeeded("CP01", HOST, 0.0)
    lock_out_host(guard, HOST, 1.0)
    assert guard.refusal("CP01", HOST, 5.0).scope == "host"
    assert len(guard) == 1 + 4  # the host and the four failing pairs


def test_known_good_pairs_stay_bounded_and_the_least_recent_go_first() -> None:
    guard = LoginGuard(max_entries=8, lockout_s=600)
    guard.succeeded("CP01", HOST, 0.0)
    for i in range(1_000):
        guard.succeeded(f"ID{i}", f"10.1.{i // 250}.{i % 250}", 1.0 + i)
        guard.succeeded("CP01", HOST, 1.0 + i)  # keeps logging in: never the least recent
        assert len(guard) <= 8
    lock_out_host(guard, HOST, 2000.0)
    assert guard.refusal("CP01", HOST, 2010.0) is None
    lock_out_host(guard, "10.1.0.0", 2030.0)  # ID0's host: ID0 was forgotten long ago
    assert guard.refusal("ID0", "10.1.0.0", 2040.0).scope == "host"


@pytest.mark.parametrize(
    "options",
    [{"window_s": 0}, {"lockout_s": -1}, {"max_charger_failures": 0}, {"max_host_failures": 0}, {"max_entries": 0},
     {"known_good_s": -1}],
)
def test_nonsense_limits_are_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        LoginGuard(**options)


# ---- property: the guard does what the rule says, compared with a plain reading of it -------------


class Rule:
    """The rule written the simplest way: every failure time kept, lockouts as end times, every correct login."""

    def __init__(self, window_s: float, lockout_s: float, known_good_s: float) -> None:
        self.window_s, self.lockout_s, self.known_good_s = window_s, lockout_s, known_good_s
        self.failures: dict[object, list[float]] = {}
        self.locked: dict[object, tuple[float, int]] = {}
        self.logged_in: dict[tuple[str, str], float] = {}

    def attempt(self, charger_id: str, host: str, now_s: float, correct: bool) -> int | Refusal:
        known_good = now_s - self.logged_in.get((charger_id, host), -math.inf) < self.known_good_s
        for scope, key in (("host", host), ("charger", (charger_id, host))):
            until, count = self.locked.get(key, (-math.inf, 0))
            if now_s < until and not (scope == "host" and known_good):
                return Refusal(scope, max(1, math.ceil(until - now_s)), count)
        if correct:
            self.failures[host] = []
            self.failures[(charger_id, host)] = []
            self.logged_in[(charger_id, host)] = now_s
            return 101
        for key, limit in (((charger_id, host), 5), (host, 20)):
            recent = [t for t in self.failures.get(key, []) if t > now_s - self.window_s] + [now_s]
            if len(recent) >= limit:
                self.locked[key] = (now_s + self.lockout_s, len(recent))
                recent = []
            self.failures[key] = recent
        return 401


@settings(max_examples=300, deadline=None)
@given(
    lockout_s=st.sampled_from([30.0, 60.0, 90.0]),
    known_good_s=st.sampled_from([0.0, 20.0, 120.0, 24 * 3600.0]),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["CP01", "CP02", "CP03", "X1", "X2", "X3", "X4", "X5"]),
            st.sampled_from([HOST, OTHER_HOST, "10.20.0.13"]),
            st.sampled_from([0.0, 0.0, 0.1, 1.0, 5.0, 14.9, 29.9, 30.0, 59.9, 60.0, 61.0]),
            st.booleans() | st.just(False),
        ),
        max_size=120,
    ),
)
def test_the_guard_follows_the_rule(lockout_s: float, known_good_s: float, steps: list[tuple[str, str, float, bool]]) -> None:
    guard = LoginGuard(window_s=60.0, lockout_s=lockout_s, known_good_s=known_good_s)
    rule = Rule(60.0, lockout_s, known_good_s)
    now = 1000.0
    for charger_id, host, dt, correct in steps:
        now += dt
        assert attempt(guard, charger_id, host, now, correct) == rule.attempt(charger_id, host, now, correct)


def test_unknown_charger_ids_count_towards_the_hosts_lockout_only() -> None:
    guard = LoginGuard()
    for i in range(19):
        assert guard.unknown_id(HOST, 100.0 + i) is None
    # Twenty in all, of unknown ids and wrong passwords alike, lock the host out.
    assert guard.failed("CP01", HOST, 119.5) == Refusal("host", 60, 20)
    assert guard.refusal("CP77", HOST, 120.0) == Refusal("host", 60, 20)
    assert guard.refusal("CP77", OTHER_HOST, 120.0) is None
    # Only the host counts them: no charger-host pair is kept for an id that is not the square's.
    assert len(guard) == 2  # the host's count and CP01's pair


def test_unknown_ids_alone_lock_the_host_out_but_not_its_known_good_chargers() -> None:
    guard = LoginGuard()
    guard.succeeded("CP01", HOST, 10.0)
    started = None
    for i in range(20):
        started = guard.unknown_id(HOST, 100.0 + i / 10)
    assert started == Refusal("host", 60, 20)
    assert guard.refusal(f"guess-{99}", HOST, 103.0) == Refusal("host", 59, 20)
    assert guard.refusal("CP01", HOST, 103.0) is None
