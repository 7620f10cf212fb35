"""The power-sharing core: each connector's current limit from a frozen picture of the square.

Pure (control.md rules 1-6): no clock, no I/O, no randomness, sorted iteration; the same inputs
give the same decision, with its reasons.

A car that takes no current while it holds at least the minimum (full, suspended, or not resuming
after a pause) keeps that minimum for IDLE_GRACE_S; after that its minimum goes to the cars that
want more (rule 3: what a car does not draw goes to the others). It then gets current only from room
no other car wants, else it waits with `paused_since` set to when it is offered current again
(later than now), and from then on it waits for a turn like any paused car.

Kept in one file past 400 lines: rules 1-6 are one pass over the same frozen picture, in an order
that matters; split, that order would be spread over files. Its inputs and outputs are in
`sharing_types.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from controller.core.sharing_types import (
    Budget,
    ConnectorDecision,
    ConnectorInput,
    Phases3,
    Sharing,
)

EPS_A = 1e-9  # float noise tolerated when rounding (A)
STEPS_PER_A = 10  # OCPP 1.6 limits go in steps of 0.1 A
DRAW_MARGIN_A = 2.0  # a car capped by its own draw is given this much above it
# A car counts as capped by itself when it draws this far below its limit. It is smaller than
# DRAW_MARGIN_A on purpose: once capped at draw + 2 A the car still looks capped, so its limit
# does not swing back up every other cycle.
BELOW_LIMIT_A = 1.0
# A charger reading this far above its limit (the larger of the two) still obeys it; beyond, it is
# counted at its reading as fixed load (control.md rule 1).
OBEYS_WITHIN_A = 1.0
OBEYS_WITHIN_SHARE = 0.05
DRAWING_A = 1.0  # a car drawing at least this much has taken the current it was offered
# A car that takes no current keeps the minimum this long after it was offered current (or its limit
# last changed): time for a slow car to start. Longer, and every full car holds the minimum for nothing.
IDLE_GRACE_S = 45.0
# A car that gave its minimum away is offered current again after this many turns (turn_s). Each retry
# holds a share away from the cars that draw for about a minute, and most idle cars are simply full.
IDLE_RETRY_TURNS = 6.0
PHASES = (0, 1, 2)
PHASE_NAMES = ("L1", "L2", "L3")


def round_down_a(current_a: float) -> float:
    """A current rounded down to the 0.1 A step of OCPP 1.6 (never up: up could pass the fuse)."""
    return _floor_step(current_a, EPS_A)


def safe_default_a(limit_a: float, keys: Sequence[str], min_current_a: float) -> dict[str, float]:
    """The safe default (A) of every connector, `keys` in bay order: together at most `limit_a`."""
    if not keys:
        return {}
    each_a = _floor_step(limit_a / len(keys), EPS_A / len(keys))
    if each_a >= min_current_a:
        return {key: each_a for key in keys}
    fits = max(0, math.floor(limit_a / min_current_a + EPS_A))
    if fits * min_current_a > limit_a + EPS_A:
        fits -= 1
    return {key: (float(min_current_a) if i < fits else 0.0) for i, key in enumerate(keys)}


def _floor_step(current_a: float, eps_a: float) -> float:
    # eps_a forgives float noise (5.99999999997 A is 6.0 A); callers that add many rounded values
    # pass eps_a / count so that the noise forgiven never adds up past EPS_A.
    if not math.isfinite(current_a) or current_a <= 0:
        return 0.0
    return math.floor((current_a + eps_a) * STEPS_PER_A) / STEPS_PER_A


_Turn = tuple[datetime | None, datetime | None, datetime | None]  # running_since, paused_since, resume_offered_at


@dataclass(frozen=True)
class _Car:
    """An active connector the gateway controls, as the rules see it (A)."""

    conn: ConnectorInput
    phases: tuple[int, ...]
    cap_a: float  # the most it may be given, on the 0.1 A step
    demand_a: float  # what it asks for now
    asks: str  # why it asks for demand_a: "max", "draw", "suspended", "not resuming" or "waits"
    rank: tuple  # sorts the highest turn priority first
    idle: bool = False  # it takes no current while it has the minimum, or waits to be offered it again
    yields: bool = False  # idle past its grace: it gets only room that no other car wants


@dataclass(frozen=True)
class _Plan:
    """Who runs and at what target (A), for one capacity."""

    targets_a: dict[str, float]  # every car that runs; the others get 0
    stops: dict[str, tuple[int, int] | None]  # why a runner stopped: (full phase, cars on it), or None: its demand
    no_room: tuple[str, ...]  # cars that could not get the minimum even alone
    over_budget: Phases3 | None  # the fixed load, when it alone passes the capacity
    yielded: tuple[str, ...] = ()  # idle cars whose minimum went to the others


def share(budget: Budget, connectors: Sequence[ConnectorInput], now: datetime) -> Sharing:
    """The limits for every connector at `now` (A per phase), by the sharing rules of control.md."""
    conns = sorted(connectors, key=lambda c: c.key)
    min_a = budget.min_current_a
    capacity_a = _phase3(budget.grid_a[p] + budget.battery_a[p] for p in PHASES)
    # Fixed: what the gateway cannot change. A connector that is not controllable or does not obey
    # its limit, one with no car that still has a current taken off the grid meter, and a steered
    # car's credited current a little beyond what it may draw. The plan so reserves a steered car's
    # target plus that excess, at least the max(limit, credited) that sequencing and the load count
    # it at (`_held_a`): the fill cannot give a car a floor, and the excess is at most 1 A or 5 %.
    steered = [c for c in conns if _steered(c)]
    fixed_a = _per_phase([(_phases(c), _now_a(c)) for c in conns if _counts(c) and not _steered(c)]
                         + [(_phases(c), _excess_a(c)) for c in steered])
    cars = [_car(c, budget, now) for c in steered]
    able = [car for car in cars if car.cap_a >= min_a]
    main = _plan(capacity_a, fixed_a, able, min_a, budget.grid_a)
    grid_only = _plan(budget.grid_a, fixed_a, able, min_a, budget.grid_a)

    turns = {car.conn.key: _turn(car, car.conn.key in main.targets_a, budget, now) for car in cars}
    targets_a = {car.conn.key: main.targets_a.get(car.conn.key, 0.0) for car in cars}
    limits_a, waits = _sequence(capacity_a, conns, cars, targets_a, turns, min_a)

    decisions = []
    for c in conns:
        if not c.active:
            why = "no car: 0 A"
            if _counts(c):
                why += f"; its reported {_credited_a(c):.1f} A came off the grid meter's reading, so it counts"
            decisions.append(ConnectorDecision(c.key, c.bay_id, 0.0, 0.0, 0.0, why))
        elif not c.controllable:
            why = f"charger not controllable: counted at {_now_a(c):.1f} A until its lease ends"
            decisions.append(ConnectorDecision(c.key, c.bay_id, c.in_force_a, c.in_force_a, c.in_force_a, why,
                                               c.running_since, c.paused_since, c.resume_offered_at))
        elif not _steered(c):
            # Left at its limit: lowering it frees nothing the square counts on. Only when what cannot
            # be lowered passes the capacity is it asked to stop, like every car.
            may_a = c.may_draw_a
            limit_a = 0.0 if main.over_budget is not None else c.in_force_a
            why = (f"reports {_credited_a(c):.1f} A, above the {may_a:.1f} A it may draw: does not obey its limit,"
                   f" so it is counted at {_now_a(c):.1f} A (that and its limit) and"
                   f" {'asked to stop' if limit_a == 0 else 'left'}"
                   f" at {limit_a:.1f} A")
            decisions.append(ConnectorDecision(c.key, c.bay_id, limit_a, limit_a, limit_a, why,
                                               c.running_since, c.paused_since, c.resume_offered_at, obeys=False))
    for car in cars:
        # grid_only_a is capped at limit_a: the lease's second period starts unseen, so a rise there
        # could not wait for the decreases elsewhere.
        key = car.conn.key
        running_since, paused_since, resume_at = turns[key]
        limit_a = limits_a[key]
        decisions.append(ConnectorDecision(
            key, car.conn.bay_id, targets_a[key], limit_a, min(grid_only.targets_a.get(key, 0.0), limit_a),
            _reason(car, main, targets_a[key], limit_a, waits.get(key), paused_since, min_a),
            running_since, paused_since, resume_at, car.asks in ("not resuming", "waits")))
    decisions.sort(key=lambda d: d.key)

    load_a = _load_a(conns, limits_a)
    starved = {p for car in able if not car.yields and targets_a[car.conn.key] < round_down_a(car.demand_a)
               for p in car.phases}
    spare_a = _phase3(0.0 if p in starved else max(0.0, budget.grid_a[p] - load_a[p]) for p in PHASES)
    paused = [car for car in able if car.conn.key not in main.targets_a]
    return Sharing(
        connectors=tuple(decisions),
        load_a=load_a,
        battery_needed_a=_phase3(max(0.0, load_a[p] - budget.grid_a[p]) for p in PHASES),
        spare_a=spare_a,
        short=bool(paused),
        reasons=_square_reasons(main, capacity_a, able, paused, cars, waits, load_a, budget) + tuple(
            f"{c.key} does not obey its limit: counted at its reported {_credited_a(c):.1f} A and its limit"
            for c in conns if c.active and c.controllable and not _steered(c)),
    )


def _car(c: ConnectorInput, budget: Budget, now: datetime) -> _Car:
    """The car as the rules see it; one that takes no current is idle, and past its grace it yields."""
    min_a = budget.min_current_a
    cap_a = round_down_a(c.max_a)
    tie = (c.bay_id, c.key)
    if c.paused_since is not None and c.paused_since > now:
        # It took no current when it had the minimum: until paused_since, only room nobody wants.
        rank = (5, (c.paused_since - now).total_seconds()) + tie
        return _Car(c, _phases(c), cap_a, min(cap_a, min_a), "waits", rank, idle=True, yields=True)
    car = _asking(c, budget, now, cap_a, tie)
    if car.asks != "not resuming" and not _takes_nothing(c, budget, now):
        return car
    since = c.resume_offered_at or c.changed_at or c.running_since
    return replace(car, idle=True, yields=since is not None and (now - since).total_seconds() >= IDLE_GRACE_S)


def _asking(c: ConnectorInput, budget: Budget, now: datetime, cap_a: float, tie: tuple[str, str]) -> _Car:
    """What the car asks for and its turn priority, by its turn state and what it draws."""
    min_a = budget.min_current_a
    if _not_resuming(c, budget, now):
        # Reported and kept at the minimum, last in the queue: not retried with more every cycle.
        return _Car(c, _phases(c), cap_a, min(cap_a, min_a), "not resuming", (4, 0.0) + tie)
    if c.running_since is not None:
        held_s = (now - c.running_since).total_seconds()
        # Among cars whose turn is over, the one running longest gives way first.
        rank = ((0, 0.0) if held_s < budget.turn_s else (2, held_s)) + tie
    elif c.paused_since is None:
        rank = (1, 0.0) + tie  # a newcomer counts as paused since now
    else:
        # A car paused less than a turn waits behind the cars whose turn is over: otherwise the car
        # paused at a turn's end would push out the next one a cycle later, and so on round the square.
        waited_s = (now - c.paused_since).total_seconds()
        rank = ((1, -waited_s) if waited_s >= budget.turn_s else (3, -waited_s)) + tie
    if c.ev_suspended:
        return _Car(c, _phases(c), cap_a, min(cap_a, min_a), "suspended", rank)
    if (c.draw_a is not None and c.changed_at is not None and c.draw_a < c.in_force_a - BELOW_LIMIT_A
            and (now - c.changed_at).total_seconds() >= budget.reaction_s):
        # What it does not draw goes to the others.
        return _Car(c, _phases(c), cap_a, min(cap_a, max(min_a, c.draw_a + DRAW_MARGIN_A)), "draw", rank)
    return _Car(c, _phases(c), cap_a, cap_a, "max", rank)


def _not_resuming(c: ConnectorInput, budget: Budget, now: datetime) -> bool:
    """Given current after a pause, with that current in force, and not drawing it for reaction_s.

    The charger takes up to reaction_s to apply the current and the car as long again to draw it: a
    meter value from the moment the charger applies it still shows the pause.
    """
    return (c.resume_offered_at is not None and c.running_since is not None and c.draw_a is not None
            and c.draw_a < DRAWING_A and c.in_force_a >= budget.min_current_a
            and (now - c.resume_offered_at).total_seconds() >= 2 * budget.reaction_s)


def _takes_nothing(c: ConnectorInput, budget: Budget, now: datetime) -> bool:
    """Running with at least the minimum in force for reaction_s, and drawing (almost) nothing of it.

    A car offered current after a pause is judged by `_not_resuming` instead.
    """
    return (c.running_since is not None and c.resume_offered_at is None and c.draw_a is not None
            and c.draw_a < DRAWING_A and c.in_force_a >= budget.min_current_a and c.changed_at is not None
            and (now - c.changed_at).total_seconds() >= budget.reaction_s)


def _plan(capacity_a: Phases3, fixed_a: Phases3, cars: list[_Car], min_a: float, grid_a: Phases3) -> _Plan:
    """Fair targets within `capacity_a` less the fixed load; in a shortage the lowest priority drop out.

    Cars that yield come last: each gets the minimum where the others leave room for it on the grid
    (the battery is not spent on a car that takes nothing), or nothing.
    """
    room_a = [capacity_a[p] - fixed_a[p] for p in PHASES]
    if any(r < -EPS_A for r in room_a):
        return _Plan({}, {}, (), fixed_a)
    room_a = [max(0.0, r) for r in room_a]
    plan = _plan_keen(room_a, [car for car in cars if not car.yields], min_a)
    left_a = [min(room_a[p], grid_a[p] - fixed_a[p]) for p in PHASES]
    for car in cars:
        for p in car.phases:
            left_a[p] -= plan.targets_a.get(car.conn.key, 0.0)
    targets_a, stops, yielded = dict(plan.targets_a), dict(plan.stops), []
    for car in sorted((car for car in cars if car.yields), key=lambda car: car.rank):
        target_a = round_down_a(car.demand_a)
        if target_a >= min_a - 1e-12 and all(left_a[p] + EPS_A >= target_a for p in car.phases):
            targets_a[car.conn.key], stops[car.conn.key] = target_a, None
            for p in car.phases:
                left_a[p] -= target_a
        else:
            yielded.append(car.conn.key)
    return _Plan(targets_a, stops, plan.no_room, None, tuple(yielded))


def _plan_keen(room_a: list[float], cars: list[_Car], min_a: float) -> _Plan:
    """Fair targets within `room_a`; in a shortage the lowest priority drop out."""
    order = sorted(cars, key=lambda car: car.rank)
    running = [car for car in order if all(room_a[p] + EPS_A >= min_a for p in car.phases)]
    no_room = tuple(car.conn.key for car in order if not all(room_a[p] + EPS_A >= min_a for p in car.phases))
    while running:
        alloc_a, stops = _fill(room_a, running)
        eps_a = EPS_A / (2 * len(running))
        targets_a = {key: _floor_step(a, eps_a) for key, a in alloc_a.items()}
        if all(t >= min_a - 1e-12 for t in targets_a.values()):
            return _Plan(targets_a, stops, no_room, None)
        running.pop()
    return _Plan({}, {}, no_room, None)


def _fill(room_a: list[float], cars: list[_Car]) -> tuple[dict[str, float], dict[str, tuple[int, int] | None]]:
    """Progressive filling (max-min fairness): every car rises together until its demand or a full phase."""
    room_a = list(room_a)
    sharing = [sum(1 for car in cars if p in car.phases) for p in PHASES]
    alloc_a: dict[str, float] = {}
    stops: dict[str, tuple[int, int] | None] = {}
    rising = sorted(cars, key=lambda car: car.conn.key)
    level_a = 0.0
    while rising:
        on = [sum(1 for car in rising if p in car.phases) for p in PHASES]
        step_a, full = min((room_a[p] / on[p], p) for p in PHASES if on[p])
        need_a = min(car.demand_a for car in rising)
        if need_a - level_a <= step_a:
            step_a, level_a = need_a - level_a, need_a
            done = [car for car in rising if car.demand_a <= level_a]
            for car in done:
                alloc_a[car.conn.key], stops[car.conn.key] = car.demand_a, None
        else:
            level_a += step_a
            done = [car for car in rising if full in car.phases]
            for car in done:
                alloc_a[car.conn.key], stops[car.conn.key] = level_a, (full, sharing[full])
        for p in PHASES:
            room_a[p] = max(0.0, room_a[p] - step_a * on[p])
        rising = [car for car in rising if car.conn.key not in alloc_a]
    return alloc_a, stops


def _turn(car: _Car, runs: bool, budget: Budget, now: datetime) -> _Turn:
    """The turn state to feed back: (running_since, paused_since, resume_offered_at)."""
    c = car.conn
    if not runs:
        if car.cap_a < budget.min_current_a:
            return None, None, None
        if car.idle:
            # It took no current when it had the minimum: it waits to be offered current again, not
            # at the head of the queue (a full car would take every turn that comes free).
            if c.paused_since is not None and c.paused_since > now:
                return None, c.paused_since, None
            return None, now + timedelta(seconds=IDLE_RETRY_TURNS * budget.turn_s), None
        return None, c.paused_since or now, None
    if c.paused_since is not None or (c.resume_offered_at is not None and c.in_force_a < budget.min_current_a):
        # Offered current after a pause; until that current is in force, the clock starts again.
        return c.running_since or now, None, now
    if c.draw_a is not None and c.draw_a >= DRAWING_A and c.in_force_a >= budget.min_current_a:
        return c.running_since or now, None, None  # it resumed: should it stop later, it is not "after a pause"
    return c.running_since or now, None, c.resume_offered_at


def _sequence(capacity_a: Phases3, conns: list[ConnectorInput], cars: list[_Car], targets_a: dict[str, float],
              turns: dict[str, _Turn], min_a: float) -> tuple[dict[str, float], dict[str, str]]:
    """Break before make: decreases at once, rises only into the room the load as it is now leaves."""
    limits_a: dict[str, float] = {}
    rises = []
    for car in cars:
        c, target_a = car.conn, targets_a[car.conn.key]
        keep_a = round_down_a(c.in_force_a) if c.in_force_a >= min_a else 0.0
        limits_a[c.key] = min(target_a, keep_a)
        if target_a > keep_a:
            rises.append(car)
    # Everything counts at what it may draw now: a decrease sent this cycle has not shown yet.
    load_a = list(_per_phase((_phases(c), _now_a(c)) for c in conns if _counts(c)))
    waits: dict[str, str] = {}
    # Cars that yield rise last: their minimum comes from room no other car wants, also while others rise.
    for car in sorted(rises, key=lambda car: (car.yields, turns[car.conn.key][2] is None, car.conn.bay_id,
                                               car.conn.key)):
        c, target_a = car.conn, targets_a[car.conn.key]
        own_a = _now_a(c)
        room_a = min(capacity_a[p] - (load_a[p] - own_a) for p in car.phases)
        grant_a = _floor_step(min(target_a, room_a), EPS_A / 2)
        if grant_a > limits_a[c.key] and (limits_a[c.key] >= min_a or grant_a >= min_a):
            limits_a[c.key] = grant_a
            for p in car.phases:
                load_a[p] += max(grant_a, _held_a(c)) - own_a
        if limits_a[c.key] < target_a:
            waits[c.key] = _blockers(car, conns, limits_a)
    return limits_a, waits


def _blockers(car: _Car, conns: list[ConnectorInput], limits_a: dict[str, float]) -> str:
    """Who a waiting rise waits for: the connectors on its phases still counted above their new limit."""
    names = [c.key for c in conns if _counts(c) and c.key != car.conn.key and set(_phases(c)) & set(car.phases)
             and _now_a(c) > limits_a.get(c.key, c.in_force_a) + EPS_A]
    if not names:
        return "room on " + "/".join(PHASE_NAMES[p] for p in car.phases)
    shown = names[:3] + ([f"{len(names) - 3} more"] if len(names) > 3 else [])
    return _and(shown) + " to come down"


def _reason(car: _Car, plan: _Plan, target_a: float, limit_a: float, waits: str | None,
            paused_since: datetime | None, min_a: float) -> str:
    """One line for the log and the console: why this connector gets what it gets."""
    key = car.conn.key
    prefix = "not resuming after a pause; " if car.asks == "not resuming" else ""
    if car.cap_a < min_a:
        return f"its maximum {car.cap_a:.1f} A is below the minimum {min_a:.1f} A: 0 A"
    if plan.over_budget is not None:
        return prefix + "square over its budget (connectors that cannot be controlled take it all): 0 A"
    if key in plan.no_room:
        phases = "/".join(PHASE_NAMES[p] for p in car.phases)
        return prefix + f"paused: {phases} has no room for the minimum {min_a:.1f} A"
    if key not in plan.targets_a and car.idle:
        what = {"not resuming": "not resuming after a pause", "waits": "took no current"}.get(car.asks,
                                                                                           "takes no current")
        why = "its minimum goes to the others" if key in plan.yielded else "paused (short)"
        return f"{what}: 0 A, {why}; offered current again at {paused_since:%H:%M:%S}"
    if key not in plan.targets_a:
        return prefix + f"paused for a turn since {paused_since:%H:%M:%S} (short)"
    stop = plan.stops[key]
    if car.yields:
        why = f"takes no current: kept at {target_a:.1f} A, room no other car wants"
    elif stop is not None:
        why = f"fair share {target_a:.1f} A ({PHASE_NAMES[stop[0]]} full, {_cars(stop[1])})"
    elif car.asks == "draw":
        why = f"capped by the car: draws {car.conn.draw_a:.1f} A, given {target_a:.1f} A"
    elif car.asks == "suspended":
        why = f"car suspended charging: kept at {target_a:.1f} A"
    elif car.asks == "not resuming":
        why = f"not resuming after a pause: kept at {target_a:.1f} A"
        prefix = ""
    else:
        why = f"at its maximum {target_a:.1f} A"
    if waits is not None:
        why += f"; rise to {target_a:.1f} A waits for {waits}"
        if limit_a:
            why += f", {limit_a:.1f} A meanwhile"
    return prefix + why


def _square_reasons(main: _Plan, capacity_a: Phases3, able: list[_Car], paused: list[_Car], cars: list[_Car],
                    waits: dict[str, str], load_a: Phases3, budget: Budget) -> tuple[str, ...]:
    reasons = []
    if main.over_budget is not None:
        over = [f"{PHASE_NAMES[p]} {main.over_budget[p]:.1f} A of {capacity_a[p]:.1f} A" for p in PHASES
                if main.over_budget[p] > capacity_a[p] + EPS_A]
        reasons.append("over budget: connectors that cannot be controlled take " + ", ".join(over)
                       + "; every car gets 0 A")
    elif any(not car.idle for car in paused):
        keen = [car for car in able if not car.yields]
        room = f"room for {sum(1 for car in keen if car.conn.key in main.targets_a)} at {budget.min_current_a:g} A"
        reasons.append(f"short: {_cars(len(keen))}, {room}; "
                       + _and([car.conn.key for car in paused if not car.idle]) + " paused")
    idle = [car.conn.key for car in paused if car.idle]
    if idle and main.over_budget is None:
        reasons.append("taking no current, their minimum goes to the others: " + _and(idle))
    not_resuming = [car.conn.key for car in cars if car.asks in ("not resuming", "waits")]
    if not_resuming:
        reasons.append("not resuming after a pause: " + _and(not_resuming))
    if waits:
        verb = "rise waits" if len(waits) == 1 else "rises wait"
        reasons.append(f"{len(waits)} {verb} for decreases to show: " + _and(sorted(waits)))
    needed = [f"{PHASE_NAMES[p]} {load_a[p] - budget.grid_a[p]:.1f} A" for p in PHASES
              if load_a[p] > budget.grid_a[p] + EPS_A]
    if needed:
        reasons.append("battery covers " + ", ".join(needed))
    return tuple(reasons)


def _load_a(conns: list[ConnectorInput], limits_a: dict[str, float]) -> Phases3:
    """Per phase, what every connector may draw once the decision is sent (rule 1's sum)."""
    loads = []
    for c in conns:
        if not _counts(c):
            continue
        if c.key in limits_a:
            # A decrease sent now still counts at the old value until it shows (the shell then settles it).
            loads.append((_phases(c), max(limits_a[c.key], _now_a(c))))
        else:
            loads.append((_phases(c), _now_a(c)))
    return _per_phase(loads)


def _now_a(c: ConnectorInput) -> float:
    """What the connector counts at now (A): its limit in force, or more while it holds more (`_held_a`).

    A connector without a car counts at the current credited to it. One that does not obey its limit
    counts at that current and its limit on top: what it reported may be a lie (then the meter's
    balance handed out room its car does not use, and the car may still draw up to its limit), or true
    (then it draws beyond its limit and may draw more).
    """
    if not c.active:
        return _credited_a(c)
    if _disobeys(c):
        return _credited_a(c) + c.may_draw_a
    return max(c.in_force_a, _held_a(c))


def _held_a(c: ConnectorInput) -> float:
    """What a car counts at whatever its new limit (A): the higher limit it is still leaving, and the
    current taken off the grid meter's reading for it (the budget already handed that room out)."""
    return max(c.settling_from_a or 0.0, _credited_a(c))


def _excess_a(c: ConnectorInput) -> float:
    """A car's credited current beyond what it may draw now (A): fixed load, since no limit lowers it."""
    return max(0.0, _credited_a(c) - c.may_draw_a)


def _credited_a(c: ConnectorInput) -> float:
    return c.credited_a if math.isfinite(c.credited_a) and c.credited_a > 0 else 0.0


def _steered(c: ConnectorInput) -> bool:
    """A car the gateway steers: controllable, and not `_disobeys`."""
    return c.active and c.controllable and not _disobeys(c)


def _disobeys(c: ConnectorInput) -> bool:
    """A car whose credited current passes what it may draw by more than `_obeys_within_a`: a decrease
    had time to show and did not (the charger ignores its limit, or reports more than its car draws).
    No lower limit frees that room, so it counts as fixed load (`_now_a`), its limit left as it is."""
    may_a = c.may_draw_a
    return c.active and _excess_a(c) > _obeys_within_a(may_a)


def _obeys_within_a(may_a: float) -> float:
    """How far above its limit (A) a charger's reading may be and still count as obeying: meters and
    cars overshoot a little."""
    return max(OBEYS_WITHIN_A, OBEYS_WITHIN_SHARE * may_a)


def _counts(c: ConnectorInput) -> bool:
    """Whether the connector takes part in the square's load: a car, or a current credited to it."""
    return c.active or _credited_a(c) > EPS_A


def _phases(c: ConnectorInput) -> tuple[int, ...]:
    # Unknown phases count as all three: the safe reading of a connector that says nothing.
    return tuple(sorted({p for p in c.phases if p in PHASES})) or PHASES


def _per_phase(loads: Iterable[tuple[tuple[int, ...], float]]) -> Phases3:
    total = [0.0, 0.0, 0.0]
    for phases, amps in loads:
        for p in phases:
            total[p] += amps
    return _phase3(total)


def _phase3(values: Iterable[float]) -> Phases3:
    l1, l2, l3 = values
    return (float(l1), float(l2), float(l3))


def _cars(count: int) -> str:
    return f"{count} car" if count == 1 else f"{count} cars"


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
