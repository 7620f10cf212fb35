"""Property tests: the six invariants of signage.md hold for every input sequence on a square of 1-6 bays.

A run is a random sequence of input changes and time leaps, fed cycle by cycle to `decide`
with the lights of the cycle before, as the daemon does.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from signage.commands import light_command, same_command
from signage.rules import (
    PLUGGED_STATUSES,
    BayInputs,
    Closure,
    Light,
    Override,
    SignageDecision,
    SignageSettings,
    decide,
    track_session_over,
)
from signage.texts import MAX_TEXT_CHARS, text_for

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=timezone.utc)
STATUSES = ["Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing",
            "Reserved", "Faulted", "Unavailable", "Occupied"]  # "Occupied" is not a 1.6 word: a fault
STATUS_WORDS = frozenset(STATUSES) - {"Occupied"}
LEAPS_S = [0, 0.5, 1, 5, 9.5, 10, 29, 30, 31, 60, 120, 301, 1000]
EXAMPLES = 100
SOAK_EXAMPLES = 500


@dataclass(frozen=True)
class Cycle:
    """One call of `decide`: what went in and what came out."""

    now: datetime
    bays: tuple[BayInputs, ...]
    previous: dict[str, Light]
    decision: SignageDecision


@dataclass(frozen=True)
class Run:
    settings: SignageSettings
    cycles: tuple[Cycle, ...]


def _actions(n_bays: int):
    i = st.integers(0, n_bays - 1)
    return st.one_of(
        st.tuples(st.just("status"), i, st.sampled_from(STATUSES)),
        st.tuples(st.just("occupied"), i, st.sampled_from([None, True, False, False])),
        st.tuples(st.just("status"), i, st.sampled_from(["Available", "Preparing", "Charging", "SuspendedEV"])),
        st.tuples(st.just("occupied"), i, st.booleans()),
        st.tuples(st.just("online"), i, st.booleans()),
        st.tuples(st.just("known"), i),
        st.tuples(st.just("override"), i, st.sampled_from(["blue", "green", "off"]), st.sampled_from([5, 30, 600])),
        st.tuples(st.just("clear_override"), i),
        st.tuples(st.just("closure"), i, st.sampled_from([None, None, "blue", "green", "off"]),
                  st.sampled_from(["", "Markt"])),
        st.tuples(st.just("spare"), i, st.sampled_from([11.0, 16.0, 32.0])),
    )


@st.composite
def _bay(draw, bay_id: str) -> BayInputs:
    """A bay at start: mostly empty bays with a sensor, so that the reserve has work to do."""
    kind = draw(st.sampled_from(["empty", "empty", "empty", "no sensor", "charging", "unknown", "any"]))
    base = BayInputs(bay_id=bay_id, has_sensor=True, known=True, connector_status="Available",
                     charger_online=True, occupied=False, session_over_at=None,
                     spare_a=draw(st.sampled_from([11.0, 16.0, 32.0])))
    if kind == "no sensor":
        return replace(base, has_sensor=False, occupied=None)
    if kind == "charging":
        return replace(base, connector_status="Charging", occupied=True)
    if kind == "unknown":
        return replace(base, known=False, connector_status=None, occupied=None)
    if kind == "any":
        status = draw(st.sampled_from([None, *STATUSES]))
        return replace(
            base,
            has_sensor=draw(st.booleans()),
            known=status is not None or draw(st.booleans()),
            connector_status=status,
            charger_online=draw(st.booleans()),
            occupied=draw(st.sampled_from([None, True, False])),
        )
    return base


def _simulate(sig: SignageSettings, square: list[BayInputs], steps) -> Run:
    now = T0
    previous: dict[str, Light] = {}
    cycles = []
    for leap_s, actions in steps:
        now += timedelta(seconds=leap_s)
        for action in actions:
            square[action[1]] = _apply(square[action[1]], action, now)
        d = decide(square, previous, sig, now)
        cycles.append(Cycle(now, tuple(square), previous, d))
        previous = dict(d.lights)
    return Run(sig, tuple(cycles))


def _settings(draw, n: int, min_free: st.SearchStrategy[int]) -> SignageSettings:
    return SignageSettings(
        min_free_ev_bays=draw(min_free),
        grace_s=draw(st.sampled_from([0, 20, 120, 900])),
        min_dwell_s=draw(st.sampled_from([0, 10, 30, 30, 60])),
        language=draw(st.sampled_from(["nl", "en"])),
    )


@st.composite
def any_runs(draw) -> Run:
    """Any square and any sequence of inputs."""
    n = draw(st.integers(1, 6))
    sig = _settings(draw, n, st.integers(0, n))
    square = [draw(_bay(f"B{k + 1:02d}")) for k in range(n)]
    steps = draw(st.lists(st.tuples(st.sampled_from(LEAPS_S), st.lists(_actions(n), max_size=3)),
                          min_size=4, max_size=40))
    return _simulate(sig, square, steps)


def _reserve_actions(n_bays: int):
    i = st.integers(0, n_bays - 1)
    return st.one_of(
        st.tuples(st.just("occupied"), i, st.booleans()),
        st.tuples(st.just("occupied"), i, st.booleans()),
        st.tuples(st.just("spare"), i, st.sampled_from([11.0, 16.0, 32.0])),
        st.tuples(st.just("status"), i, st.sampled_from(["Available", "Preparing", "Charging", "SuspendedEV"])),
        st.tuples(st.just("status"), i, st.sampled_from(["Preparing", "SuspendedEV"])),
        st.tuples(st.just("online"), i, st.booleans()),
    )


@st.composite
def reserve_runs(draw) -> Run:
    """Squares of empty bays with sensors, where cars come and go: the reserve at work."""
    n = draw(st.integers(2, 6))
    sig = _settings(draw, n, st.integers(1, n - 1))
    square = [
        BayInputs(bay_id=f"B{k + 1:02d}", has_sensor=draw(st.sampled_from([True, True, True, False])), known=True,
                  connector_status="Available", charger_online=True, occupied=draw(st.booleans()),
                  session_over_at=None, spare_a=draw(st.sampled_from([11.0, 16.0, 32.0])))
        for k in range(n)
    ]
    steps = draw(st.lists(st.tuples(st.sampled_from(LEAPS_S), st.lists(_reserve_actions(n), max_size=2)),
                          min_size=4, max_size=40))
    return _simulate(sig, square, steps)


def runs() -> st.SearchStrategy[Run]:
    return st.one_of(any_runs(), reserve_runs())


def _apply(bay: BayInputs, action: tuple, now: datetime) -> BayInputs:
    kind = action[0]
    if kind == "status":
        over = track_session_over(bay.connector_status, action[2], bay.session_over_at, now)
        return replace(bay, connector_status=action[2], session_over_at=over, known=True)
    if kind == "online":
        return replace(bay, charger_online=action[2])
    if kind == "occupied":
        return replace(bay, occupied=action[2])
    if kind == "known":
        return replace(bay, known=True)
    if kind == "override":
        return replace(bay, override=Override(action[2], now + timedelta(seconds=action[3]), who="tech", why="test"))
    if kind == "clear_override":
        return replace(bay, override=None)
    if kind == "closure":
        return replace(bay, closure=None if action[2] is None else Closure(action[2], action[3]))
    return replace(bay, spare_a=action[2])


# ---- what the spec says, restated independently of the implementation -----------------------


def override_active(bay: BayInputs, now: datetime) -> bool:
    return bay.override is not None and now < bay.override.until


def over_s(bay: BayInputs, now: datetime) -> float | None:
    return None if bay.session_over_at is None else (now - bay.session_over_at).total_seconds()


def in_grace(bay: BayInputs, now: datetime, grace_s: float) -> bool:
    s = over_s(bay, now)
    return s is not None and s < grace_s


def eligible(bay: BayInputs, now: datetime) -> bool:
    return (bay.has_sensor and bay.occupied is False and bay.connector_status == "Available"
            and bay.charger_online and not override_active(bay, now) and bay.closure is None)


def reserve_pool(c: Cycle, grace_s: float) -> list[BayInputs]:
    """Eligible bays that reach the reserve row (a bay in its session's grace shows `finished` first)."""
    return [b for b in c.bays if b.known and eligible(b, c.now) and not in_grace(b, c.now, grace_s)]


def exempt_from_dwell(prev: Light, new: Light, bay: BayInputs, now: datetime, grace_s: float) -> bool:
    """The immediate colour changes of invariant 3."""
    if new.color == "blue" and new.reason in ("plugged", "charging"):
        return True
    if new.color == "green" and new.reason == "fault":
        return True
    if "override" in (prev.reason, new.reason):
        return True
    if prev.color == "blue" and new.color == "green":
        s = over_s(bay, now)
        grace_end = s is not None and s >= grace_s and prev.reason in ("plugged", "charging")
        return prev.reason == "finished" or grace_end
    return False


def by_id(c: Cycle) -> dict[str, BayInputs]:
    return {b.bay_id: b for b in c.bays}


# ---- the invariants, each as a check over one run -------------------------------------------


def check_lights_for_known_bays_only(run: Run) -> None:
    for c in run.cycles:
        assert set(c.decision.lights) == {b.bay_id for b in c.bays if b.known}


def check_no_trap(run: Run) -> None:
    """Invariant 1: not blue -> blue only on plug-in, a sensor saying empty, or an override or closure."""
    for c in run.cycles:
        bays = by_id(c)
        for bay_id, light in c.decision.lights.items():
            prev = c.previous.get(bay_id)
            if light.color != "blue" or (prev is not None and prev.color == "blue"):
                continue
            bay = bays[bay_id]
            plugged = bay.connector_status in PLUGGED_STATUSES
            sensor_empty = bay.has_sensor and bay.occupied is False
            assert plugged or sensor_empty or light.reason in ("override", "closure"), (bay, prev, light)


def check_never_colour_alone(run: Run) -> None:
    """Invariant 2: text in the configured language and the colour's pictogram with every light."""
    lang = run.settings.language
    for c in run.cycles:
        bays = by_id(c)
        for bay_id, light in c.decision.lights.items():
            if light.color == "off":
                assert (light.text, light.pictogram) == ("", "none")
                continue
            assert light.pictogram == {"blue": "charging", "green": "parking"}[light.color]
            assert light.text
            if light == c.previous.get(bay_id):
                continue  # kept (or held by the dwell) as it was
            closure = bays[bay_id].closure
            if light.reason == "closure" and closure is not None and closure.text:
                assert light.text == closure.text
            else:
                assert light.text == text_for(light.color, light.reason, lang)
                assert len(light.text) <= MAX_TEXT_CHARS


def check_calm(run: Run) -> None:
    """Invariant 3: a colour holds for min_dwell_s unless the change is one of the immediate ones."""
    dwell_s = run.settings.min_dwell_s
    for c in run.cycles:
        bays = by_id(c)
        for bay_id, light in c.decision.lights.items():
            prev = c.previous.get(bay_id)
            if prev is None:
                assert light.changed_at == c.now
                continue
            if prev.color == light.color:
                assert light.changed_at == prev.changed_at
                continue
            assert light.changed_at == c.now
            held_s = (c.now - prev.changed_at).total_seconds()
            exempt = exempt_from_dwell(prev, light, bays[bay_id], c.now, run.settings.grace_s)
            assert held_s >= dwell_s or exempt, (prev, light, bays[bay_id])


def check_immediate(run: Run) -> None:
    """Invariant 3, the other way: plug-in, a fault and the end of grace_s show at once, whatever the dwell."""
    grace_s = run.settings.grace_s
    for c in run.cycles:
        for bay in c.bays:
            if not bay.known or override_active(bay, c.now) or bay.closure is not None:
                continue
            light = c.decision.lights[bay.bay_id]
            prev = c.previous.get(bay.bay_id)
            status = bay.connector_status
            if not bay.charger_online or status not in STATUS_WORDS or status in ("Faulted", "Unavailable"):
                assert (light.color, light.reason) == ("green", "fault")
            elif status in ("Preparing", "Charging", "SuspendedEVSE"):
                assert (light.color, light.reason) in (("blue", "plugged"), ("blue", "charging"))
            elif (status in ("SuspendedEV", "Finishing") and not in_grace(bay, c.now, grace_s)
                    and prev is not None and (prev.color, prev.reason) == ("blue", "finished")):
                assert (light.color, light.reason) == ("green", "finished")


def _effective(c: Cycle, grace_s: float) -> tuple:
    """The inputs as the rules see them at that moment (an override's or a grace's end is a change too)."""
    return tuple(
        (b, override_active(b, c.now), None if b.session_over_at is None else in_grace(b, c.now, grace_s))
        for b in sorted(c.bays, key=lambda b: b.bay_id)
    )


def check_reserve_size(run: Run) -> None:
    """Invariant 4: once the inputs have held still for min_dwell_s, the reserve has its size exactly."""
    sig = run.settings
    stable_since = None
    last = None
    for c in run.cycles:
        now_inputs = _effective(c, sig.grace_s)
        if now_inputs != last:
            stable_since, last = c.now, now_inputs
        if (c.now - stable_since).total_seconds() < sig.min_dwell_s:
            continue
        pool_ids = {b.bay_id for b in reserve_pool(c, sig.grace_s)}
        lights = c.decision.lights
        held = [b for b in pool_ids if (lights[b].color, lights[b].reason) == ("blue", "reserved")]
        assert len(held) == min(sig.min_free_ev_bays, len(pool_ids)), (pool_ids, lights)
        for bay_id, light in lights.items():
            if light.reason == "reserved":
                assert bay_id in pool_ids or by_id(c)[bay_id].connector_status == "Reserved"


def check_reserve_stable(run: Run) -> None:
    """Invariant 4: a reserve bay is released only when it stops being eligible or the reserve shrinks."""
    sig = run.settings
    for c in run.cycles:
        pool = reserve_pool(c, sig.grace_s)
        needed = min(sig.min_free_ev_bays, len(pool))
        holding = [b.bay_id for b in pool if (lt := c.previous.get(b.bay_id)) is not None
                   and (lt.color, lt.reason) == ("blue", "reserved")]
        if len(holding) > needed:
            continue  # the reserve shrank: the lowest-ranked go
        for bay_id in holding:
            light = c.decision.lights[bay_id]
            assert (light.color, light.reason) == ("blue", "reserved"), bay_id


def check_override_wins(run: Run) -> None:
    """Invariant 5: an override shows as set, at once, until its end; never after."""
    for c in run.cycles:
        for bay in c.bays:
            if not bay.known:
                continue
            light = c.decision.lights[bay.bay_id]
            if override_active(bay, c.now):
                assert (light.color, light.reason) == (bay.override.color, "override")
            else:
                assert light.reason != "override"


def check_explained(run: Run) -> None:
    """Invariant 6: a change is reported iff the command differs, always with a sentence and its inputs."""
    for c in run.cycles:
        d = c.decision
        changes = {ch.bay_id: ch for ch in d.changes}
        assert [ch.bay_id for ch in d.changes] == sorted(changes)
        for bay_id, light in d.lights.items():
            prev = c.previous.get(bay_id)
            differs = prev is None or not same_command(light_command(prev, 1, c.now), light_command(light, 1, c.now))
            assert (bay_id in changes) == differs
            if differs:
                ch = changes[bay_id]
                assert ch.old == prev and ch.new == light
                assert ch.why.strip()
                assert ch.inputs and isinstance(ch.inputs, dict)
                json.dumps(ch.inputs)
            else:
                assert light == prev
        assert set(changes) <= set(d.lights)


ALL_CHECKS = (check_lights_for_known_bays_only, check_no_trap, check_never_colour_alone, check_calm,
              check_immediate, check_reserve_size, check_reserve_stable, check_override_wins, check_explained)


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs())
def test_a_light_for_every_known_bay_only(run: Run):
    check_lights_for_known_bays_only(run)


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs())
def test_invariant_1_no_trap(run: Run):
    check_no_trap(run)


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs())
def test_invariant_2_never_colour_alone(run: Run):
    check_never_colour_alone(run)


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs())
def test_invariant_3_calm(run: Run):
    check_calm(run)


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs())
def test_invariant_3_immediate_changes_are_immediate(run: Run):
    check_immediate(run)


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs())
def test_invariant_4_reserve_size_once_calm(run: Run):
    check_reserve_size(run)


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs())
def test_invariant_4_reserve_is_not_swapped_without_cause(run: Run):
    check_reserve_stable(run)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.lists(_bay("B"), min_size=n, max_size=n), st.integers(0, n), st.sampled_from([0, 30, 900]))))
def test_invariant_4_reserve_follows_the_ranking_from_scratch(case):
    """With no light before, the reserve is the pool's best: most spare power, then bay id."""
    bays, min_free, grace_s = case
    bays = [replace(b, bay_id=f"B{k + 1:02d}") for k, b in enumerate(bays)]
    sig = SignageSettings(min_free_ev_bays=min_free, grace_s=grace_s, min_dwell_s=30)
    c = Cycle(T0, tuple(bays), {}, decide(bays, {}, sig, T0))
    pool = sorted(reserve_pool(c, grace_s), key=lambda b: (-b.spare_a, b.bay_id))
    wanted = {b.bay_id for b in pool[: min(min_free, len(pool))]}
    status = {b.bay_id: b.connector_status for b in bays}
    held = {b for b, lt in c.decision.lights.items() if lt.reason == "reserved" and status[b] != "Reserved"}
    assert held == wanted


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs())
def test_invariant_5_override_wins_until_its_end(run: Run):
    check_override_wins(run)


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs())
def test_invariant_6_every_change_is_explained_and_only_changes_are(run: Run):
    check_explained(run)


@settings(max_examples=SOAK_EXAMPLES, deadline=None)
@given(runs())
def test_all_invariants_together_on_many_runs(run: Run):
    """One generated run is cheap to check against everything: this finds the rarer sequences."""
    for check in ALL_CHECKS:
        check(run)


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs(), st.randoms(use_true_random=False))
def test_deterministic_and_bay_order_does_not_matter(run: Run, rnd: random.Random):
    for c in run.cycles:
        shuffled = list(c.bays)
        rnd.shuffle(shuffled)
        again = decide(shuffled, dict(c.previous), run.settings, c.now)
        assert again == c.decision
        assert list(again.lights) == sorted(again.lights)
