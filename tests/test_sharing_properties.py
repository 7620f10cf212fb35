"""Property tests: the invariants of control.md's sharing rules hold for random squares of 1-16 connectors.

The invariants are restated here from the spec, independently of the implementation: the fuse
(rule 1, also while decreases settle), zero or at least the minimum (2), fairness, work
conservation and no starvation (3), phases (4), break before make (5) and determinism (6).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.sharing import round_down_a, safe_default_a, share
from controller.core.sharing_types import Budget, ConnectorInput, Sharing
from tests.test_sharing import T0, fed_back, settled

EXAMPLES = 200
TOL_A = 1e-9
PHASE_SETS = [(0, 1, 2), (0, 1, 2), (0, 1, 2), (0,), (1,), (2,), (0, 1)]


def _amps(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _or_none(lo: float, hi: float, none_share: float) -> st.SearchStrategy[float | None]:
    # One draw instead of a one_of (keeps the examples fast): below `lo` means missing.
    below = (hi - lo) * none_share / (1 - none_share)
    return st.floats(lo - below, hi).map(lambda a: None if a < lo else a)


@st.composite
def budgets(draw, size: int = 8, battery: bool = True) -> Budget:
    top_a = 15.0 * size + 20  # from nothing to room for every car at 15 A
    if draw(st.booleans()):
        grid = (draw(_amps(0, top_a)),) * 3
    else:
        grid = draw(st.tuples(_amps(0, top_a), _amps(0, top_a), _amps(0, top_a)))
    bat = (0.0, 0.0, 0.0)
    if battery and draw(st.booleans()):
        bat = draw(st.tuples(_amps(0, 40), _amps(0, 40), _amps(0, 40)))
    return Budget(grid_a=grid, battery_a=bat, min_current_a=draw(st.sampled_from([6.0, 6.0, 8.0, 10.0])),
                  reaction_s=draw(st.sampled_from([0.0, 5.0, 10.0])), turn_s=draw(st.sampled_from([60.0, 300.0])))


@st.composite
def connectors(draw, n: int) -> ConnectorInput:
    flags = draw(st.integers(0, 1151))  # active, controllable, suspended and turn state in one draw
    in_force_a = draw(st.sampled_from([0.0, 0.0, 6.0, 8.0, 10.0, 16.0, 7.35, 13.3, 32.0]))
    settling_a = draw(_or_none(0, 32, 0.7))
    # The current taken off the grid meter's reading for it: mostly none, else any claim, true or not.
    credited_a = draw(_or_none(0, 35, 0.6)) or 0.0
    at = [T0 - timedelta(seconds=s) for s in draw(st.tuples(st.integers(-300, 1000), st.integers(0, 1000)))]
    turn = ("new", "running", "paused", "resumed")[flags // 288]
    return ConnectorInput(
        key=f"CP{n:02d}/1",
        bay_id=f"B{draw(st.integers(1, 20)):02d}",  # shared bay ids make ties
        phases=draw(st.sampled_from(PHASE_SETS)),
        active=flags % 6 != 0,
        controllable=flags // 6 % 8 != 0,
        max_a=draw(_amps(6, 63)),
        draw_a=draw(_or_none(0, 40, 0.5)),
        ev_suspended=flags // 48 % 6 == 0,
        in_force_a=in_force_a,
        settling_from_a=None if settling_a is None else in_force_a + settling_a,
        changed_at=None if at[0] > T0 else at[0],
        running_since=at[1] if turn in ("running", "resumed") else None,
        paused_since=at[1] if turn == "paused" else None,
        resume_offered_at=max(at[0], at[1]) if turn == "resumed" else None,
        credited_a=credited_a,
    )


@st.composite
def squares(draw, battery: bool = True) -> tuple[Budget, list[ConnectorInput]]:
    size = draw(st.integers(1, 16))
    conns = [draw(connectors(n)) for n in range(1, size + 1)]
    return draw(budgets(size, battery)), conns


def _capacity(budget: Budget) -> list[float]:
    return [budget.grid_a[p] + budget.battery_a[p] for p in range(3)]


def _now_a(c: ConnectorInput) -> float:
    # A current the budget took off the grid meter's reading counts, with or without a car; a car that
    # reports more than 1 A or 5 % above what it may draw counts at that and its limit on top.
    may_a = max(c.in_force_a, c.settling_from_a or 0.0)
    if not c.active:
        return c.credited_a
    if c.credited_a - may_a > max(1.0, 0.05 * may_a):
        return c.credited_a + may_a
    return max(may_a, c.credited_a)


def _sum(conns, amps) -> list[float]:
    total = [0.0, 0.0, 0.0]
    for c in conns:
        if c.active or c.credited_a > 0:
            for p in c.phases:
                total[p] += amps(c)
    return total


def _beyond_a(c: ConnectorInput) -> float:
    """How far the current credited to a connector exceeds what it may draw (A)."""
    return max(0.0, c.credited_a - max(c.in_force_a, c.settling_from_a or 0.0))


def _steered(c: ConnectorInput) -> bool:
    """A controllable car that obeys its limit: its credited current at most 1 A or 5 % above it."""
    may_a = max(c.in_force_a, c.settling_from_a or 0.0)
    return c.active and c.controllable and _beyond_a(c) <= max(1.0, 0.05 * may_a)


def _fixed(conns: list[ConnectorInput]) -> list[float]:
    """What no limit lowers: connectors not controllable or not obeying, a credited current without a
    car, and the little a steered car's credited current passes what it may draw."""
    rest = _sum([c for c in conns if not _steered(c)], _now_a)
    beyond = _sum([c for c in conns if _steered(c)], _beyond_a)
    return [rest[p] + beyond[p] for p in range(3)]


def _fits(conns: list[ConnectorInput], capacity: list[float]) -> bool:
    """The square as it is now stays within `capacity`, the fixed connectors too (rule 1's premise)."""
    fixed = _fixed(conns)
    now = _sum(conns, _now_a)
    return all(fixed[p] <= capacity[p] + TOL_A and now[p] <= capacity[p] + TOL_A for p in range(3))


def _rule1_load(conns: list[ConnectorInput], result: Sharing) -> list[float]:
    def load(c: ConnectorInput) -> float:
        if not _steered(c):
            return _now_a(c)
        return max(result.decision(c.key).limit_a, c.settling_from_a or 0.0, c.credited_a)
    return _sum(conns, load)


def _on_step(a: float) -> bool:
    return abs(a * 10 - round(a * 10)) < 1e-6


def _plain(c: ConnectorInput) -> bool:
    """A car that asks for its maximum: no draw to cap it, not suspended, no pending resume."""
    return _steered(c) and c.draw_a is None and not c.ev_suspended and c.resume_offered_at is None


# Each test checks several invariants on the same squares: drawing a square costs more than deciding it.


@settings(max_examples=EXAMPLES, deadline=None)
@given(squares())
def test_never_over_the_fuse_with_or_without_the_battery(square):
    budget, conns = square
    capacity = _capacity(budget)
    result = share(budget, conns, T0)
    fixed = _fixed(conns)
    if _fits(conns, capacity):
        for p, load in enumerate(_rule1_load(conns, result)):
            assert load <= capacity[p] + TOL_A, (p, load, capacity[p])
        assert all(result.load_a[p] <= capacity[p] + TOL_A for p in range(3))
        # Once the decision is sent, the next cycle (decreases still settling) fits again.
        later = T0 + timedelta(seconds=1)
        nxt = [settled(fed_back(c, result.decision(c.key), T0), later, budget.reaction_s) for c in conns]
        for p, load in enumerate(_rule1_load(nxt, share(budget, nxt, later))):
            assert load <= capacity[p] + TOL_A, (p, load, capacity[p])
    # The lease's second period (the battery gone) fits the grid alone.
    if all(fixed[p] <= budget.grid_a[p] + TOL_A for p in range(3)):
        grid_only = _sum([c for c in conns if _steered(c)], lambda c: result.decision(c.key).grid_only_a)
        for p in range(3):
            assert fixed[p] + grid_only[p] <= budget.grid_a[p] + TOL_A
    for p in range(3):
        assert result.battery_needed_a[p] == max(0.0, result.load_a[p] - budget.grid_a[p])
        assert 0.0 <= result.spare_a[p] <= max(0.0, budget.grid_a[p] - result.load_a[p])


@settings(max_examples=EXAMPLES, deadline=None)
@given(squares(), st.randoms(use_true_random=False))
def test_limits_are_zero_or_the_minimum_on_the_step_sequenced_and_deterministic(square, rnd):
    budget, conns = square
    result = share(budget, conns, T0)
    assert [d.key for d in result.connectors] == sorted(c.key for c in conns)
    for c in conns:
        d = result.decision(c.key)
        if not c.active:
            assert d.limit_a == d.target_a == d.grid_only_a == 0.0
        elif not c.controllable:
            assert d.limit_a == c.in_force_a  # left alone
        elif not _steered(c):
            # It does not obey: left at its limit, or asked to stop when what cannot be lowered passes the capacity.
            assert d.limit_a == c.in_force_a or d.limit_a == 0.0
        else:
            for amps in (d.limit_a, d.target_a, d.grid_only_a):
                # Rounding forgives float noise up to TOL_A (6.99999999999 A may be given as 7.0 A).
                assert amps == 0.0 or budget.min_current_a <= amps <= c.max_a + TOL_A, (amps, c)
                assert _on_step(amps)
            assert d.limit_a <= d.target_a  # a rise never overshoots its target
            if d.target_a <= c.in_force_a:
                assert d.limit_a == d.target_a  # decreases go out at once
            assert (d.target_a > 0) == (d.running_since is not None)
            assert d.running_since is None or d.paused_since is None
        assert d.reason and "\n" not in d.reason
    if not result.short:
        assert all(result.decision(c.key).target_a > 0 for c in conns
                   if _steered(c) and round_down_a(c.max_a) >= budget.min_current_a)
    # Rule 6: the same inputs, again and in any order, give the same decision.
    assert share(budget, conns, T0) == result
    shuffled = list(conns)
    rnd.shuffle(shuffled)
    assert share(budget, shuffled, T0) == result


@settings(max_examples=EXAMPLES, deadline=None)
@given(squares())
def test_fair_and_work_conserving(square):
    budget, conns = square
    result = share(budget, conns, T0)
    target = {c.key: result.decision(c.key).target_a for c in conns}
    wanting = [c for c in conns if _plain(c) and 0 < target[c.key] < round_down_a(c.max_a)]
    for a in wanting:
        for b in wanting:
            if a.phases == b.phases:
                assert abs(target[a.key] - target[b.key]) <= 0.1 + TOL_A, (a.key, b.key, target)
    if result.short:
        return
    capacity = _capacity(budget)
    fixed = _fixed(conns)
    cars = [c for c in conns if _steered(c)]
    given_a = _sum(cars, lambda c: target[c.key])
    on = _sum(cars, lambda c: 1.0)
    for c in wanting:
        slack = [capacity[p] - fixed[p] - given_a[p] for p in c.phases]
        assert any(slack[i] <= 0.1 * on[p] + 1e-6 for i, p in enumerate(c.phases)), (c.key, slack)


@st.composite
def crowded_squares(draw) -> tuple[Budget, list[ConnectorInput], list[float]]:
    """Plain cars, often more than fit, on a grid where each could run alone; and the leaps between cycles."""
    size = draw(st.integers(2, 10))
    conns = [ConnectorInput(key=f"CP{n:02d}/1", bay_id=f"B{draw(st.integers(1, 20)):02d}",
                            phases=draw(st.sampled_from(PHASE_SETS)), active=True, controllable=True,
                            max_a=draw(_amps(6, 63)), draw_a=None, ev_suspended=False, in_force_a=0.0)
             for n in range(1, size + 1)]
    grid = draw(st.tuples(_amps(6, 40), _amps(6, 40), _amps(6, 40)))
    budget = Budget(grid_a=grid, battery_a=(0.0, 0.0, 0.0), min_current_a=6.0, reaction_s=10.0,
                    turn_s=draw(st.sampled_from([60.0, 120.0])))
    leaps = draw(st.lists(st.sampled_from([5.0, 10.0, 30.0]), min_size=1, max_size=4))
    return budget, conns, leaps


@settings(max_examples=60, deadline=None)
@given(crowded_squares())
def test_no_car_waits_for_ever(crowded):
    budget, conns, leaps = crowded
    # Turns are judged at cycles, so each may overrun by one leap.
    bound_s = len(conns) * (budget.turn_s + max(leaps))
    now = T0
    last_run = {c.key: T0 for c in conns}
    cycle = 0
    while now - T0 <= timedelta(seconds=2 * bound_s):
        conns = [settled(c, now, budget.reaction_s) for c in conns]
        result = share(budget, conns, now)
        for c in conns:
            if result.decision(c.key).target_a > 0:
                last_run[c.key] = now
            assert (now - last_run[c.key]).total_seconds() <= bound_s, (c.key, now - T0, result.reasons)
        conns = [fed_back(c, result.decision(c.key), now) for c in conns]
        now += timedelta(seconds=leaps[cycle % len(leaps)])
        cycle += 1


@settings(max_examples=EXAMPLES, deadline=None)
@given(_amps(0, 400), st.integers(0, 40), st.sampled_from([6.0, 6.0, 8.0, 16.0]))
def test_safe_default_never_passes_the_limit(limit_a, count, min_a):
    keys = [f"CP{n:02d}/1" for n in range(count)]
    defaults = safe_default_a(limit_a, keys, min_a)
    assert list(defaults) == keys
    assert sum(defaults.values()) <= limit_a + TOL_A
    assert all(a == 0.0 or a >= min_a for a in defaults.values())
    assert all(_on_step(a) for a in defaults.values())
    if count and limit_a / count >= min_a + 0.1:
        assert len(set(defaults.values())) == 1  # equal shares when each share can be at least the minimum


@settings(max_examples=EXAMPLES, deadline=None)
@given(squares(battery=False))
def test_a_decision_fed_back_settles_into_a_square_that_fits(square):
    budget, conns = square
    conns = [replace(c, settling_from_a=None, in_force_a=0.0) for c in conns]
    now = T0
    for _ in range(4):
        result = share(budget, conns, now)
        conns = [fed_back(c, result.decision(c.key), now) for c in conns]
        now += timedelta(seconds=budget.reaction_s + 1)
        conns = [settled(c, now, budget.reaction_s) for c in conns]
        if all(f <= cap + TOL_A for f, cap in zip(_fixed(conns), _capacity(budget))):
            assert _fits(conns, _capacity(budget))


@settings(max_examples=EXAMPLES, deadline=None)
@given(squares(), st.integers(1, 3600), st.sampled_from([(0, 1, 2), (0,), (1,), (2,)]), _amps(0, 63))
def test_a_car_waiting_to_be_offered_current_again_changes_nothing_for_the_others(square, ahead_s, phases, max_a):
    """It took no current when it had the minimum: until its time comes it gets the minimum where no
    other car wants the room (on the grid alone), or nothing, and every other decision stays as it was."""
    budget, conns = square
    waiting = ConnectorInput(key="CP99/1", bay_id="B99", phases=phases, active=True, controllable=True,
                             max_a=max_a, draw_a=0.0, ev_suspended=False, in_force_a=0.0,
                             paused_since=T0 + timedelta(seconds=ahead_s))
    without = share(budget, conns, T0)
    result = share(budget, conns + [waiting], T0)
    for c in conns:
        assert result.decision(c.key) == without.decision(c.key), c.key
    d = result.decision(waiting.key)
    assert d.target_a in (0.0, budget.min_current_a)
    if d.target_a == 0.0:
        able = round_down_a(max_a) >= budget.min_current_a  # else it takes no turn at all
        assert (d.running_since, d.paused_since) == (None, waiting.paused_since if able else None)
    else:
        assert d.target_a <= round_down_a(max_a)
        fixed = _fixed(conns)
        others = _sum([c for c in conns if _steered(c)], lambda c: result.decision(c.key).target_a)
        for p in phases:
            assert fixed[p] + others[p] + d.target_a <= budget.grid_a[p] + TOL_A
