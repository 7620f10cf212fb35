"""Measured currents are claims, not facts (control.md rule 1): the one rule and the grid meter rule.

Property tests for `controller.core.currents` and, through `controller.shell.power.PowerControl`, for
the whole sharing decision: no reported current, however absurd, stale or from a connector without a
car, hands the cars more than the grid leaves, nor drives the measured other load below 0.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from config.loader import load_config_text
from controller.core.currents import (
    CAR_STATUSES,
    COUNTED,
    IMPLAUSIBLE,
    MISSING,
    NO_CAR,
    STALE,
    CurrentClaim,
    count_current,
    grid_balance,
    plausible_a,
)
from controller.shell.charging import TX_MODE, ChargerSetup, SmartCharging
from controller.shell.power import PowerControl
from controller.shell.state import SquareState
from drivers.contract import events as ev
from drivers.contract.devices import GridReading
from drivers.contract.words import STATUS_WORDS

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=UTC)
MAX_A = 32.0
TOP_A = MAX_A * 1.1
ABSURD = [1e6, -1e6, 9999.0, -9999.0, math.nan, math.inf, -math.inf, -0.1, TOP_A + 0.1, 1e4]

plausible = st.floats(0.0, TOP_A)
absurd = st.one_of(st.sampled_from(ABSURD), st.floats(TOP_A + 1e-6, 1e7), st.floats(-1e7, -1e-6))
anything = st.one_of(plausible, absurd, st.none())


def claim(current=(10.0, 10.0, 10.0), *, status="Charging", changed_s=-60.0, sample_s=-1.0, in_force_a=16.0,
          phases=3) -> CurrentClaim:
    return CurrentClaim(
        status=status,
        status_changed_at=None if changed_s is None else T0 + timedelta(seconds=changed_s),
        current_a=current,
        sample_at=None if sample_s is None else T0 + timedelta(seconds=sample_s),
        max_a=MAX_A,
        in_force_a=in_force_a,
        phases=phases,
        stale_after_s=15.0,
    )


# ---- the one rule ----------------------------------------------------------------------------------


def test_the_rule_case_by_case():
    assert count_current(claim(), T0).verdict == COUNTED
    assert count_current(claim(), T0).draw_a == 10.0 and count_current(claim(), T0).shown_a == 10.0
    assert count_current(claim((None, None, None)), T0).verdict == MISSING
    assert count_current(claim(status="Finishing"), T0).verdict == NO_CAR  # session over, cable in
    assert count_current(claim(status="Available"), T0).verdict == NO_CAR
    assert count_current(claim(status=None), T0).verdict == NO_CAR  # not known yet (after a restart)
    assert count_current(claim(changed_s=-1.0), T0).verdict == STALE  # received with the status change: before it
    assert count_current(claim(changed_s=-0.5, sample_s=-1.0), T0).verdict == STALE
    assert count_current(claim(sample_s=-15.5), T0).verdict == STALE  # older than three meter intervals
    assert count_current(claim(sample_s=+5.0), T0).verdict == STALE  # the gateway's clock went back
    wild = count_current(claim((9999.0, 1.0, 1.0), in_force_a=12.5), T0)
    assert wild.verdict == IMPLAUSIBLE and wild.draw_a is None and wild.measured_a == (None, None, None)
    assert wild.counted_a == (12.5, 12.5, 12.5) and wild.shown_a == 12.5  # counted at the limit in force
    one_phase = count_current(claim((-5.0, None, None), in_force_a=16.0, phases=1), T0)
    assert one_phase.verdict == IMPLAUSIBLE and one_phase.counted_a == (16.0, 0.0, 0.0)
    assert count_current(claim((TOP_A, 0.0, None)), T0).verdict == COUNTED  # 10 % over the maximum is a meter's
    assert count_current(claim((math.nan, None, None)), T0).verdict == IMPLAUSIBLE


@settings(max_examples=300, deadline=None)
@given(
    current=st.tuples(anything, anything, anything),
    status=st.one_of(st.none(), st.sampled_from(sorted(STATUS_WORDS))),
    changed_s=st.one_of(st.none(), st.floats(-100, 100)),
    sample_s=st.one_of(st.none(), st.floats(-100, 100)),
    in_force_a=st.floats(0.0, MAX_A),
    phases=st.sampled_from([1, 3]),
)
@example(current=(9999.0, 9999.0, 9999.0), status="Charging", changed_s=-60.0, sample_s=-1.0, in_force_a=16.0, phases=3)
@example(current=(15.9, 15.9, 15.9), status="SuspendedEV", changed_s=-1.0, sample_s=-2.0, in_force_a=6.0, phases=3)
@example(current=(None, None, 0.0), status="Charging", changed_s=None, sample_s=1e-09, in_force_a=0.0, phases=1)
def test_only_a_fresh_plausible_reading_of_a_car_after_its_status_counts(current, status, changed_s, sample_s, in_force_a, phases):
    c = claim(current, status=status, changed_s=changed_s, sample_s=sample_s, in_force_a=in_force_a, phases=phases)
    got = count_current(c, T0)
    measured = [a for a in got.measured_a if a is not None]
    # Whatever came in, what counts is a number within [0, max x 1.1], and never negative.
    assert all(math.isfinite(a) and 0.0 <= a <= TOP_A for a in measured)
    assert all(math.isfinite(a) and 0.0 <= a <= TOP_A for a in got.counted_a)
    if got.verdict == COUNTED:
        assert status in CAR_STATUSES and c.sample_at is not None and -15.0 <= (c.sample_at - T0).total_seconds() <= 0.0
        assert c.status_changed_at is None or c.sample_at > c.status_changed_at
        assert all(plausible_a(a, MAX_A) for a in current) and got.measured_a == current
    else:
        assert measured == [] and got.draw_a is None and got.at is None
    if got.verdict == IMPLAUSIBLE:
        assert got.counted_a == tuple(in_force_a if p < phases else 0.0 for p in range(3))
    elif got.verdict != COUNTED:
        assert got.counted_a == (0.0, 0.0, 0.0) and got.shown_a is None
    if status not in CAR_STATUSES:
        assert got.verdict in (NO_CAR, MISSING)  # Finishing, Available and the rest never show a current
    if c.status_changed_at is not None and c.sample_at is not None and c.sample_at <= c.status_changed_at:
        assert got.verdict in (STALE, NO_CAR, MISSING)


# ---- the grid meter rule ------------------------------------------------------------------------------


phase = st.floats(0.0, 400.0)


@settings(max_examples=300, deadline=None)
@given(meter=st.tuples(phase, phase, phase), cars=st.tuples(phase, phase, phase), battery_a=st.floats(-50, 50))
def test_the_other_load_is_never_below_0_and_a_meter_below_the_cars_is_not_trusted(meter, cars, battery_a):
    got = grid_balance(meter, cars, battery_a)
    assert all(a >= 0.0 for a in got.other_a)
    if any(meter[p] + max(0.0, battery_a) < cars[p] for p in range(3)):
        assert not got.trusted and got.why
    else:
        assert got.trusted
        assert all(got.other_a[p] == max(0.0, meter[p] - cars[p] + battery_a) for p in range(3))


def test_a_meter_that_is_no_number_is_not_trusted():
    assert not grid_balance((math.nan, 1.0, 1.0), (0.0, 0.0, 0.0), 0.0).trusted
    assert grid_balance((5.0, 5.0, 5.0), (1.0, 1.0, 1.0), math.nan).other_a == (4.0, 4.0, 4.0)


# ---- the whole sharing decision -------------------------------------------------------------------------

LIMIT_A = 50.0
SQUARE = f"""
[site]
id = "t"
[grid]
limit_a = {LIMIT_A:g}
[grid_meter]
driver = "sdm630"
host = "127.0.0.1"
poll_s = 1
margin_a = 2
[control]
meter_interval_s = 5
[[chargers]]
id = "CP01"
max_current_a = {MAX_A:g}
connectors = 2
[[chargers]]
id = "CP02"
max_current_a = {MAX_A:g}
connectors = 2
"""
KEYS = [("CP01", 1), ("CP01", 2), ("CP02", 1), ("CP02", 2)]
SQUARE += "".join(f'[[bays]]\nid = "B{i + 1}"\ncharger = "{cid}"\nconnector = {n}\n' for i, (cid, n) in enumerate(KEYS))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class NoCalls:
    async def call(self, charger_id, action, payload):
        raise AssertionError("no call expected")

    def connected(self) -> dict[str, str]:
        return {}


HOSTILE = ["absurd", "stale", "Finishing", "Available"]


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(HOSTILE),
    reported=absurd,
    claimed=plausible,
    wild=st.booleans(),
    hostile=st.integers(0, 3),
    true_a=st.tuples(*[st.floats(0.0, 12.5)] * 4),
    other_a=st.floats(0.0, LIMIT_A),
    base_load=st.sampled_from([0.0, 0.0, 5.0]),
)
@example(kind="absurd", reported=9999.0, claimed=0.0, wild=True, hostile=3, true_a=(5.0, 5.0, 5.0, 0.0), other_a=30.0, base_load=0.0)
@example(kind="absurd", reported=-9999.0, claimed=0.0, wild=True, hostile=3, true_a=(5.0, 5.0, 5.0, 0.0), other_a=10.0, base_load=0.0)
@example(kind="Finishing", reported=9999.0, claimed=6.0, wild=False, hostile=0, true_a=(0.0, 8.0, 8.0, 8.0), other_a=20.0, base_load=0.0)
@example(kind="stale", reported=9999.0, claimed=15.9, wild=False, hostile=1, true_a=(8.0, 0.0, 8.0, 8.0), other_a=20.0, base_load=0.0)
def test_no_reported_current_hands_the_cars_more_than_the_grid_leaves(kind, reported, claimed, wild, hostile, true_a, other_a,
                                                                     base_load):
    """The cars' budget never exceeds the fuse less the site's real other load, and a hostile reading
    costs the others at most what its own car really draws (it counts as the site's load)."""
    # An absurd reading, or any plausible claim where none may count (stale, no car).
    reported = reported if kind == "absurd" or wild else claimed
    cfg = load_config_text(SQUARE.replace("[grid]\n", f"[grid]\nbase_load_a = {base_load:g}\n"), "square.toml")
    clock = Clock()
    state = SquareState(cfg, None, clock=clock)  # no store: nothing here writes
    charging = SmartCharging(cfg, NoCalls(), clock, state.wake)
    for cid in ("CP01", "CP02"):
        state.record(ev.ChargerConnected(cid, "ocpp1.6", T0, "127.0.0.1"))
        charging.setups[cid] = ChargerSetup(T0, mode=TX_MODE, done=True)
    # Every connector holds a car charging on its safe default; the hostile one's car draws nothing
    # when its session is over.
    true = list(true_a)
    for i, (cid, n) in enumerate(KEYS):
        conn = state.chargers[cid].connectors[n]
        word = kind if i == hostile and kind in ("Finishing", "Available") else "Charging"
        if word == "Charging":
            conn.transaction_id = 100 + i
        else:
            true[i] = 0.0
        state.record(ev.ConnectorStatusChanged(cid, n, word, T0))
    power = PowerControl(state, charging)
    clock.now = T0 + timedelta(seconds=1)
    for i, (cid, n) in enumerate(KEYS):
        value = reported if i == hostile else true[i]
        state.record(ev.MeterSample(cid, n, clock.now, None, (value, value, value)))
    if kind == "stale":
        # The reading came before the connector's last status change (a car that stopped drawing).
        clock.now += timedelta(seconds=1)
        cid, n = KEYS[hostile]
        state.record(ev.ConnectorStatusChanged(cid, n, "SuspendedEV", clock.now))
        true[hostile] = 0.0
    clock.now += timedelta(seconds=1)
    meter = other_a + sum(true)
    state.record_grid(GridReading(True, (meter, meter, meter), None, 0.0))
    view = power.step(clock.now)

    held = power._other_a
    assert held is not None and all(a >= 0.0 for a in held)  # the measured other load: never below 0
    assert view.grid_source == "meter"  # a reading the cars' counted currents cannot exceed
    fuse_leaves_a = LIMIT_A - max(other_a, base_load)
    for p in range(3):
        assert view.budget.grid_a[p] <= max(0.0, fuse_leaves_a) + 1e-6
        # What the hostile connector's car really draws is all the others can lose.
        assert view.budget.grid_a[p] >= max(0.0, fuse_leaves_a - true[hostile]) - 1e-6
    others = [d for d in view.sharing.connectors if d.key != f"{KEYS[hostile][0]}/{KEYS[hostile][1]}"]
    assert sum(d.target_a for d in others) <= max(0.0, fuse_leaves_a) + 1e-6


@settings(max_examples=100, deadline=None)
@given(
    claimed=plausible,
    real_h=st.floats(0.0, 12.5),
    hostile=st.integers(0, 3),
    wants=st.tuples(*[st.floats(0.0, MAX_A)] * 4),
    other_a=st.floats(0.0, LIMIT_A),
)
@example(claimed=12.5, real_h=0.0, hostile=0, wants=(32.0, 32.0, 32.0, 32.0), other_a=20.0)
@example(claimed=35.2, real_h=0.0, hostile=2, wants=(32.0, 32.0, 32.0, 32.0), other_a=10.0)
@example(claimed=13.0, real_h=2.0, hostile=1, wants=(32.0, 32.0, 32.0, 32.0), other_a=15.0)
def test_a_believable_lie_lends_the_others_no_room_the_grid_lacks(claimed, real_h, hostile, wants, other_a):
    """A plausible current that the car does not draw is taken off the grid meter's reading like any
    true one, so the meter seems to leave more room. A connector whose reading stays above what it may
    draw counts at that reading (a decrease that never shows): once its limits had time to show, the
    others' limits and the site's real load stay within the fuse, whatever the hostile car really
    draws, but for the little a reading within the obeying tolerance is believed."""
    cfg = load_config_text(SQUARE, "square.toml")
    clock = Clock()
    state = SquareState(cfg, None, clock=clock)
    charging = SmartCharging(cfg, NoCalls(), clock, state.wake)
    # Every lease is sent and accepted at once; the honest chargers apply it at once.
    charging.send = lambda orders, tx, now, wire_ids=None: [charging.book.sent(o, clock.now, True) for o in orders]
    for cid in ("CP01", "CP02"):
        state.record(ev.ChargerConnected(cid, "ocpp1.6", T0, "127.0.0.1"))
        charging.setups[cid] = ChargerSetup(T0, mode=TX_MODE, done=True)
    for i, (cid, n) in enumerate(KEYS):
        state.chargers[cid].connectors[n].transaction_id = 100 + i
        state.record(ev.ConnectorStatusChanged(cid, n, "Charging", T0))
    power = PowerControl(state, charging)
    step_s = cfg.control.reaction_s + 1
    for cycle in range(6):
        clock.now = T0 + timedelta(seconds=1 + cycle * step_s)
        draws = []
        for i, (cid, n) in enumerate(KEYS):
            key = f"{cid}/{n}"
            limit_a = charging.book.in_force_a(key, clock.now) if cycle else charging.safe_defaults[key]
            draw = real_h if i == hostile else min(wants[i], limit_a)
            draws.append(draw)
            # It tells the truth for one cycle, so that the meter has a trusted reading to hold when the
            # claims pass what it reads; then it lies.
            shown = claimed if i == hostile and cycle else draw
            state.record(ev.MeterSample(cid, n, clock.now, None, (shown, shown, shown)))
        meter = other_a + sum(draws)
        state.record_grid(GridReading(True, (meter, meter, meter), None, 0.0))
        view = power.step(clock.now)  # a claim above the meter's reading: the last trusted load holds
        if cycle < 3:
            continue  # the limits of the lie's first cycles have not had time to show yet
        others = [d.limit_a for d in view.sharing.connectors if d.key != f"{KEYS[hostile][0]}/{KEYS[hostile][1]}"]
        # What the rest of the site and the hostile car really draw is theirs; the others get at most the
        # rest, and what a reading within the obeying tolerance (1 A or 5 % of a limit up to MAX_A) lends.
        lent_a = max(1.0, 0.05 * MAX_A)
        assert sum(others) <= max(0.0, LIMIT_A - other_a - real_h) + lent_a + 1e-6, (cycle, others, view.sharing.reasons)
