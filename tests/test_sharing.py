"""Examples and cycle tables for the power-sharing core (control.md, sharing rules 1-6 and the safe default)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.core.sharing import (
    IDLE_GRACE_S,
    IDLE_RETRY_TURNS,
    round_down_a,
    safe_default_a,
    share,
)
from controller.core.sharing_types import (
    Budget,
    ConnectorDecision,
    ConnectorInput,
    Sharing,
)

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=UTC)
ALL = (0, 1, 2)


def budget(grid_a: float = 32.0, battery_a: float = 0.0, **fields) -> Budget:
    base = {"grid_a": (grid_a,) * 3, "battery_a": (battery_a,) * 3, "min_current_a": 6.0, "reaction_s": 10.0,
            "turn_s": 300.0}
    base.update(fields)
    return Budget(**base)


def car(n: int, **fields) -> ConnectorInput:
    """Connector CPnn/1 at bay Bnn: a three-phase 32 A car with nothing in force yet, unless told otherwise."""
    base = {"key": f"CP{n:02d}/1", "bay_id": f"B{n:02d}", "phases": ALL, "active": True, "controllable": True,
            "max_a": 32.0, "draw_a": None, "ev_suspended": False, "in_force_a": 0.0}
    base.update(fields)
    return ConnectorInput(**base)


def ago(seconds: float) -> datetime:
    return T0 - timedelta(seconds=seconds)


def limits(result: Sharing) -> dict[str, float]:
    return {d.key: d.limit_a for d in result.connectors}


def targets(result: Sharing) -> dict[str, float]:
    return {d.key: d.target_a for d in result.connectors}


def one(result: Sharing, n: int) -> ConnectorDecision:
    d = result.decision(f"CP{n:02d}/1")
    assert d is not None
    return d


# ---- a fake shell: each decision is fed back as the next cycle's inputs --------------------------


def fed_back(c: ConnectorInput, d: ConnectorDecision, now: datetime) -> ConnectorInput:
    """The connector after the shell sent decision `d` at `now`: the limit is in force, a decrease settles."""
    if not c.active or not c.controllable:
        return c
    settling_a = c.settling_from_a
    if d.limit_a < c.in_force_a:
        settling_a = max(c.in_force_a, c.settling_from_a or 0.0)
    return replace(c, in_force_a=d.limit_a, settling_from_a=settling_a,
                   changed_at=now if d.limit_a != c.in_force_a else c.changed_at,
                   running_since=d.running_since, paused_since=d.paused_since,
                   resume_offered_at=d.resume_offered_at)


def settled(c: ConnectorInput, now: datetime, reaction_s: float) -> ConnectorInput:
    """The connector at `now`: a decrease older than reaction_s counts as shown in the meter values."""
    if c.settling_from_a is None or c.changed_at is None:
        return c
    if (now - c.changed_at).total_seconds() >= reaction_s:
        return replace(c, settling_from_a=None)
    return c


@dataclass
class Square:
    """Cycles on a fake clock; `wants_a` is what each car would draw (it draws that, up to its limit)."""

    budget: Budget
    inputs: dict[str, ConnectorInput] = field(default_factory=dict)
    wants_a: dict[str, float] = field(default_factory=dict)
    now: datetime = T0
    last: Sharing | None = None

    def cycle(self, leap_s: float = 0.0) -> Sharing:
        self.now += timedelta(seconds=leap_s)
        for key, c in list(self.inputs.items()):
            c = settled(c, self.now, self.budget.reaction_s)
            if key in self.wants_a:
                c = replace(c, draw_a=min(self.wants_a[key], c.in_force_a))
            self.inputs[key] = c
        self.last = share(self.budget, list(self.inputs.values()), self.now)
        for key, c in list(self.inputs.items()):
            decision = self.last.decision(key)
            assert decision is not None
            self.inputs[key] = fed_back(c, decision, self.now)
        return self.last


def run_table(square: Square, rows: list[tuple[float, dict, dict[int, float]]]) -> None:
    """Rows of: seconds to leap, input changes by car number (dicts of fields), expected limits by car number."""
    for i, (leap_s, changes, expected) in enumerate(rows):
        for n, change in changes.items():
            key = f"CP{n:02d}/1"
            if key in square.inputs:
                square.inputs[key] = replace(square.inputs[key], **change)
            else:
                square.inputs[key] = car(n, **change)
        result = square.cycle(leap_s)
        got = {n: one(result, n).limit_a for n in expected}
        assert got == expected, f"row {i} at +{(square.now - T0).total_seconds():g} s: " + " | ".join(
            f"{d.key} {d.limit_a}/{d.target_a}: {d.reason}" for d in result.connectors)


# ---- rounding and the safe default -----------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    (6.0, 6.0), (6.0000000001, 6.0), (5.99999999997, 6.0), (6.09, 6.0), (6.19999, 6.1), (0.3, 0.3),
    (32 / 3, 10.6), (80 / 12, 6.6), (0.0, 0.0), (-3.0, 0.0), (math.nan, 0.0), (5.9999, 5.9),
])
def test_round_down_to_the_ocpp_step(raw, expected):
    assert round_down_a(raw) == expected


def test_round_down_never_goes_up_past_float_noise():
    for i in range(2000):
        x = i * 0.037
        assert round_down_a(x) <= x + 1e-9
        assert x - round_down_a(x) < 0.1 + 1e-9
        assert round_down_a(round_down_a(x)) == round_down_a(x)


def test_safe_default_shares_the_limit_equally():
    keys = [f"CP{i:02d}/1" for i in range(1, 13)]
    assert safe_default_a(80, keys, 6) == {key: 6.6 for key in keys}
    assert safe_default_a(80, keys[:4], 6) == {key: 20.0 for key in keys[:4]}


def test_safe_default_gives_the_minimum_to_the_first_bays_when_the_share_is_too_small():
    keys = [f"CP{i:02d}/1" for i in range(1, 13)]
    got = safe_default_a(32, keys, 6)
    assert got == {key: (6.0 if i < 5 else 0.0) for i, key in enumerate(keys)}
    assert list(got) == keys
    assert safe_default_a(32, list(reversed(keys)), 6)[keys[-1]] == 6.0  # by the order given


def test_safe_default_edges():
    assert safe_default_a(80, [], 6) == {}
    assert safe_default_a(5, ["a", "b"], 6) == {"a": 0.0, "b": 0.0}
    assert safe_default_a(12, ["a", "b", "c"], 6) == {"a": 6.0, "b": 6.0, "c": 0.0}
    assert safe_default_a(18, ["a", "b", "c"], 6) == {"a": 6.0, "b": 6.0, "c": 6.0}


# ---- fair shares -------------------------------------------------------------------------------------


def test_four_three_phase_cars_share_32_a_equally():
    result = share(budget(32), [car(n) for n in (4, 2, 3, 1)], T0)
    assert [d.key for d in result.connectors] == ["CP01/1", "CP02/1", "CP03/1", "CP04/1"]
    assert limits(result) == targets(result) == {f"CP0{n}/1": 8.0 for n in (1, 2, 3, 4)}
    assert result.load_a == (32.0, 32.0, 32.0)
    assert not result.short
    assert one(result, 1).reason == "fair share 8.0 A (L1 full, 4 cars)"
    assert all(d.running_since == T0 and d.paused_since is None for d in result.connectors)


def test_a_one_phase_car_leaves_room_on_the_other_phases():
    three_phase_only = share(budget(32), [car(1), car(2), car(3)], T0)
    assert targets(three_phase_only) == {"CP01/1": 10.6, "CP02/1": 10.6, "CP03/1": 10.6}
    mixed = share(budget(32), [car(1), car(2, phases=(1,)), car(3, phases=(0,))], T0)
    assert targets(mixed) == {"CP01/1": 16.0, "CP02/1": 16.0, "CP03/1": 16.0}
    assert mixed.load_a == (32.0, 32.0, 16.0)
    assert one(mixed, 2).reason == "fair share 16.0 A (L2 full, 2 cars)"
    # L3 is free, yet the three-phase car wants more than it gets: nothing there is spare for the battery.
    assert mixed.spare_a == (0.0, 0.0, 0.0)


def test_a_car_at_its_own_maximum_leaves_the_rest_to_the_others():
    result = share(budget(32), [car(1, max_a=10.0), car(2), car(3, max_a=16.0, phases=(2,))], T0)
    # L1 and L2 have room to spare; L3 is shared by all three.
    assert targets(result) == {"CP01/1": 10.0, "CP02/1": 11.0, "CP03/1": 11.0}
    assert one(result, 1).reason == "at its maximum 10.0 A"
    assert one(result, 2).reason == "fair share 11.0 A (L3 full, 3 cars)"


def test_a_car_drawing_10_of_16_a_frees_4_a_for_the_others():
    cars = [car(1, in_force_a=16.0, draw_a=10.0, changed_at=ago(60), running_since=ago(60)),
            car(2, in_force_a=16.0, draw_a=16.0, changed_at=ago(60), running_since=ago(60))]
    result = share(budget(32), cars, T0)
    assert targets(result) == {"CP01/1": 12.0, "CP02/1": 20.0}
    assert one(result, 1).reason == "capped by the car: draws 10.0 A, given 12.0 A"
    # The decrease goes out at once; the rise waits until it shows.
    assert limits(result) == {"CP01/1": 12.0, "CP02/1": 16.0}
    assert "rise to 20.0 A waits for CP01/1 to come down" in one(result, 2).reason
    shown = [replace(cars[0], in_force_a=12.0, changed_at=ago(15)), cars[1]]
    assert limits(share(budget(32), shown, T0)) == {"CP01/1": 12.0, "CP02/1": 20.0}


def test_a_draw_is_only_trusted_once_the_limit_had_time_to_act():
    fresh = [car(1, in_force_a=16.0, draw_a=2.0, changed_at=ago(5)), car(2, in_force_a=16.0)]
    assert targets(share(budget(32), fresh, T0)) == {"CP01/1": 16.0, "CP02/1": 16.0}
    unknown = [car(1, in_force_a=16.0, draw_a=None, changed_at=ago(60)), car(2, in_force_a=16.0)]
    assert targets(share(budget(32), unknown, T0)) == {"CP01/1": 16.0, "CP02/1": 16.0}
    # Never capped below the minimum: it may want more again.
    tiny = [car(1, in_force_a=16.0, draw_a=1.5, changed_at=ago(60)), car(2, in_force_a=16.0)]
    assert targets(share(budget(32), tiny, T0)) == {"CP01/1": 6.0, "CP02/1": 26.0}


def test_a_suspended_car_keeps_only_the_minimum():
    result = share(budget(32), [car(1, ev_suspended=True), car(2)], T0)
    assert targets(result) == {"CP01/1": 6.0, "CP02/1": 26.0}
    assert one(result, 1).reason == "car suspended charging: kept at 6.0 A"


def test_a_car_below_the_minimum_gets_nothing_and_takes_no_turn():
    result = share(budget(12), [car(1, max_a=5.0), car(2)], T0)
    assert targets(result) == {"CP01/1": 0.0, "CP02/1": 12.0}
    assert one(result, 1).reason == "its maximum 5.0 A is below the minimum 6.0 A: 0 A"
    assert not result.short


def test_the_battery_adds_to_the_grid_and_the_grid_only_share_is_kept_for_the_lease():
    cars = [car(n, in_force_a=10.0, changed_at=ago(60), running_since=ago(60)) for n in (1, 2, 3)]
    result = share(budget(32, battery_a=16.0), cars, T0)
    assert targets(result) == {f"CP0{n}/1": 16.0 for n in (1, 2, 3)}
    assert {d.grid_only_a for d in result.connectors} == {10.6}
    assert limits(result) == {f"CP0{n}/1": 16.0 for n in (1, 2, 3)}
    assert result.battery_needed_a == (16.0, 16.0, 16.0)
    assert result.spare_a == (0.0, 0.0, 0.0)
    assert "battery covers L1 16.0 A, L2 16.0 A, L3 16.0 A" in result.reasons


def test_spare_grid_capacity_when_every_car_has_what_it_asks():
    result = share(budget(32), [car(1, max_a=10.0), car(2, max_a=16.0, phases=(1,))], T0)
    assert result.load_a == (10.0, 26.0, 10.0)
    assert result.spare_a == (22.0, 6.0, 22.0)
    assert result.battery_needed_a == (0.0, 0.0, 0.0)


# ---- connectors the gateway cannot control, and inactive ones ----------------------------------------


def test_a_connector_that_cannot_be_controlled_is_counted_at_its_limit_in_force():
    offline = car(3, controllable=False, in_force_a=16.0, running_since=ago(900))
    result = share(budget(32), [car(1), car(2), offline], T0)
    assert targets(result) == {"CP01/1": 8.0, "CP02/1": 8.0, "CP03/1": 16.0}
    assert limits(result)["CP03/1"] == 16.0
    assert one(result, 3).reason == "charger not controllable: counted at 16.0 A until its lease ends"
    assert one(result, 3).running_since == ago(900)
    still_settling = replace(offline, in_force_a=10.0, settling_from_a=16.0)
    assert targets(share(budget(32), [car(1), car(2), still_settling], T0))["CP01/1"] == 8.0


def test_when_the_fixed_load_alone_passes_the_budget_every_car_gets_nothing():
    fixed = car(3, controllable=False, in_force_a=40.0, phases=(0,))
    result = share(budget(32), [car(1, in_force_a=8.0), car(2), fixed], T0)
    assert limits(result) == {"CP01/1": 0.0, "CP02/1": 0.0, "CP03/1": 40.0}
    assert result.short
    assert result.reasons[0] == ("over budget: connectors that cannot be controlled take L1 40.0 A of 32.0 A; "
                                 "every car gets 0 A")
    assert "square over its budget" in one(result, 1).reason


def test_an_inactive_connector_gets_nothing_and_reserves_nothing():
    gone = car(2, active=False, in_force_a=16.0, settling_from_a=32.0, running_since=ago(60))
    result = share(budget(32), [car(1), gone], T0)
    assert targets(result) == {"CP01/1": 32.0, "CP02/1": 0.0}
    assert limits(result)["CP02/1"] == 0.0
    assert one(result, 2).running_since is None
    assert result.load_a == (32.0, 32.0, 32.0)


# ---- turns ---------------------------------------------------------------------------------------------


def test_seven_cars_on_3x40_a_six_run_and_one_waits():
    result = share(budget(40), [car(n) for n in range(1, 8)], T0)
    assert targets(result) == {**{f"CP0{n}/1": 6.6 for n in range(1, 7)}, "CP07/1": 0.0}
    assert result.short
    assert result.reasons[0] == "short: 7 cars, room for 6 at 6 A; CP07/1 paused"
    assert one(result, 7).reason == "paused for a turn since 13:00:00 (short)"
    assert (one(result, 7).paused_since, one(result, 7).running_since) == (T0, None)


def test_after_a_turn_the_longest_running_car_pauses_and_the_paused_one_runs():
    running = [car(n, in_force_a=6.6, changed_at=ago(400), running_since=ago(300 + 10 * n))
               for n in range(1, 7)]
    paused = car(7, paused_since=ago(300))
    result = share(budget(40), running + [paused], T0)
    # CP06/1 has run longest (360 s): it gives way, at once; CP07/1 rises once that shows.
    assert targets(result)["CP06/1"] == 0.0 and limits(result)["CP06/1"] == 0.0
    assert targets(result)["CP07/1"] == 6.6 and limits(result)["CP07/1"] == 0.0
    assert one(result, 6).paused_since == T0
    assert (one(result, 7).running_since, one(result, 7).resume_offered_at) == (T0, T0)
    assert one(result, 7).reason == ("fair share 6.6 A (L1 full, 6 cars); "
                                     "rise to 6.6 A waits for CP06/1 to come down")
    assert one(result, 1).running_since == ago(310)


def test_a_running_car_keeps_its_turn_before_turn_s():
    running = [car(n, in_force_a=6.6, changed_at=ago(200), running_since=ago(200)) for n in range(1, 7)]
    result = share(budget(40), running + [car(7, paused_since=ago(1000))], T0)
    assert targets(result)["CP07/1"] == 0.0
    assert all(targets(result)[f"CP0{n}/1"] == 6.6 for n in range(1, 7))


def test_a_car_that_does_not_resume_after_a_pause_is_reported_and_kept_at_the_minimum():
    idle = car(1, in_force_a=16.0, draw_a=0.2, changed_at=ago(30), running_since=ago(30),
               resume_offered_at=ago(30))
    result = share(budget(32), [idle, car(2, in_force_a=16.0, running_since=ago(30))], T0)
    assert one(result, 1).not_resuming
    assert targets(result) == {"CP01/1": 6.0, "CP02/1": 26.0}
    assert one(result, 1).reason == "not resuming after a pause: kept at 6.0 A"
    assert "not resuming after a pause: CP01/1" in result.reasons
    assert one(result, 1).resume_offered_at == ago(30)
    # In a shortage it is the first to give way, even before cars whose turn is over.
    crowd = [idle] + [car(n, in_force_a=4.0, running_since=ago(900)) for n in (2, 3, 4, 5)]
    short = share(budget(29), crowd, T0)
    assert targets(short)["CP01/1"] == 0.0 and one(short, 1).resume_offered_at is None
    # Drawing again clears it.
    assert not one(share(budget(32), [replace(idle, draw_a=8.0)], T0), 1).not_resuming


def test_a_car_offered_current_is_not_judged_before_that_current_is_in_force():
    waiting = car(1, in_force_a=0.0, draw_a=0.0, running_since=ago(30), resume_offered_at=ago(30))
    result = share(budget(32), [waiting], T0)
    assert not one(result, 1).not_resuming
    assert one(result, 1).resume_offered_at == T0  # the clock starts when the current goes out
    assert limits(result)["CP01/1"] == 32.0


def test_without_a_shortage_every_car_runs():
    paused = car(1, paused_since=ago(20))
    result = share(budget(32), [paused, car(2, running_since=ago(900), in_force_a=16.0)], T0)
    first = one(result, 1)
    assert (first.running_since, first.paused_since, first.resume_offered_at) == (T0, None, T0)
    assert one(result, 2).running_since == ago(900)
    assert not result.short


# ---- cars that take no current ------------------------------------------------------------------------

RETRY_S = IDLE_RETRY_TURNS * 300.0  # turn_s of budget()


def test_not_resuming_is_judged_once_the_charger_and_then_the_car_had_their_reaction_time():
    # The charger may take reaction_s to apply the current: a meter value from then still shows the pause.
    offered = car(1, in_force_a=6.0, draw_a=0.0, changed_at=ago(15), running_since=ago(15),
                  resume_offered_at=ago(15))
    assert not one(share(budget(32), [offered], T0), 1).not_resuming
    later = replace(offered, changed_at=ago(20), running_since=ago(20), resume_offered_at=ago(20))
    assert one(share(budget(32), [later], T0), 1).not_resuming


def test_a_car_that_takes_no_current_gives_its_minimum_away_after_a_grace():
    full = car(1, in_force_a=6.0, draw_a=0.0, changed_at=ago(IDLE_GRACE_S - 1), running_since=ago(900))
    other = car(2, in_force_a=26.0, changed_at=ago(900), running_since=ago(900))
    kept = share(budget(32), [full, other], T0)
    assert targets(kept) == {"CP01/1": 6.0, "CP02/1": 26.0} and not kept.short
    full = replace(full, changed_at=ago(IDLE_GRACE_S))
    gone = share(budget(32), [full, other], T0)
    assert targets(gone) == {"CP01/1": 0.0, "CP02/1": 32.0}
    assert limits(gone) == {"CP01/1": 0.0, "CP02/1": 26.0}  # the rise waits for the decrease to show
    assert one(gone, 1).paused_since == T0 + timedelta(seconds=RETRY_S)
    assert one(gone, 1).reason == ("takes no current: 0 A, its minimum goes to the others; "
                                   "offered current again at 13:30:00")
    assert "taking no current, their minimum goes to the others: CP01/1" in gone.reasons
    # Room that no other car wants it keeps.
    roomy = share(budget(32), [full, replace(other, max_a=20.0)], T0)
    assert targets(roomy) == {"CP01/1": 6.0, "CP02/1": 20.0} and not roomy.short
    assert one(roomy, 1).reason == "takes no current: kept at 6.0 A, room no other car wants"


def test_a_car_waiting_to_be_offered_current_again_takes_only_room_no_other_car_wants():
    waiting = car(1, paused_since=T0 + timedelta(seconds=600), changed_at=ago(1200))
    busy = share(budget(32), [waiting, car(2)], T0)
    assert targets(busy) == {"CP01/1": 0.0, "CP02/1": 32.0}
    assert one(busy, 1).paused_since == T0 + timedelta(seconds=600) and one(busy, 1).not_resuming
    assert one(busy, 1).reason == ("took no current: 0 A, its minimum goes to the others; "
                                   "offered current again at 13:10:00")
    quiet = share(budget(32), [waiting, car(2, max_a=20.0, in_force_a=20.0)], T0)
    assert limits(quiet) == {"CP01/1": 6.0, "CP02/1": 20.0}
    assert (one(quiet, 1).running_since, one(quiet, 1).resume_offered_at) == (T0, T0)  # judged as resumed
    # Its battery-backed share would be spent on a car that takes nothing: grid room only.
    assert targets(share(budget(20, battery_a=12.0), [waiting, car(2, max_a=20.0)], T0))["CP01/1"] == 0.0
    # Once that time has come, it is a paused car like any other: here there is room for both.
    due = share(budget(32), [replace(waiting, paused_since=ago(1)), car(2)], T0)
    assert targets(due) == {"CP01/1": 16.0, "CP02/1": 16.0}


def test_a_car_that_did_not_resume_is_not_offered_the_next_turn_that_comes_free():
    idle = car(1, in_force_a=16.0, draw_a=0.2, changed_at=ago(30), running_since=ago(30),
               resume_offered_at=ago(30))
    crowd = [idle] + [car(n, in_force_a=4.0, running_since=ago(900)) for n in (2, 3, 4, 5)]
    short = share(budget(29), crowd, T0)
    assert targets(short)["CP01/1"] == 0.0
    assert one(short, 1).paused_since == T0 + timedelta(seconds=RETRY_S)
    # A minute later CP05/1 has left: its turn goes to CP06/1, paused 30 s ago, not to CP01/1.
    later = T0 + timedelta(seconds=60)
    square = [fed_back(c, short.decision(c.key), T0) for c in crowd]
    square = [replace(c, active=False) if c.key == "CP05/1" else c for c in square]
    square.append(car(6, paused_since=T0 + timedelta(seconds=30)))
    result = share(budget(29), square, later)
    assert targets(result)["CP01/1"] == 0.0 and targets(result)["CP06/1"] == 7.2


def test_a_resumed_car_that_draws_is_no_longer_watched_for_resuming():
    resumed = car(1, in_force_a=16.0, draw_a=15.8, changed_at=ago(30), running_since=ago(30),
                  resume_offered_at=ago(30))
    assert one(share(budget(32), [resumed], T0), 1).resume_offered_at is None


# ---- sequencing ------------------------------------------------------------------------------------------


def test_a_newcomer_forces_the_others_down_and_waits_for_them():
    others = [car(n, in_force_a=16.0, changed_at=ago(100), running_since=ago(100)) for n in (1, 2)]
    result = share(budget(32), others + [car(3)], T0)
    assert targets(result) == {"CP01/1": 10.6, "CP02/1": 10.6, "CP03/1": 10.6}
    assert limits(result) == {"CP01/1": 10.6, "CP02/1": 10.6, "CP03/1": 0.0}
    assert result.load_a == (32.0, 32.0, 32.0)  # the decreases count at 16 A until they show
    assert "1 rise waits for decreases to show: CP03/1" in result.reasons
    settling = [replace(c, in_force_a=10.6, settling_from_a=16.0, changed_at=ago(3)) for c in others]
    assert limits(share(budget(32), settling + [car(3, running_since=ago(3))], T0))["CP03/1"] == 0.0
    shown = [replace(c, in_force_a=10.6, changed_at=ago(11)) for c in others]
    assert limits(share(budget(32), shown + [car(3, running_since=ago(11))], T0))["CP03/1"] == 10.6


def test_rises_go_in_turn_order_as_far_as_the_room_allows():
    # 14 A free: the resumed car (CP03/1) rises first and fully; CP02/1 gets what is left.
    cars = [car(1, in_force_a=18.0, running_since=ago(900)), car(2, in_force_a=0.0, running_since=ago(1)),
            car(3, in_force_a=0.0, paused_since=ago(400))]
    result = share(budget(32), cars, T0)
    assert targets(result) == {"CP01/1": 10.6, "CP02/1": 10.6, "CP03/1": 10.6}
    assert limits(result) == {"CP01/1": 10.6, "CP02/1": 0.0, "CP03/1": 10.6}


def test_a_partial_rise_is_granted_where_current_is_already_in_force():
    cars = [car(1, in_force_a=20.0, running_since=ago(900)), car(2, in_force_a=8.0, running_since=ago(900)),
            car(3, in_force_a=0.0, phases=(0,), running_since=ago(900), max_a=2.0)]
    result = share(budget(32), cars, T0)
    assert limits(result) == {"CP01/1": 16.0, "CP02/1": 12.0, "CP03/1": 0.0}
    assert "rise to 16.0 A waits for CP01/1 to come down, 12.0 A meanwhile" in one(result, 2).reason


def test_the_same_inputs_in_any_order_give_the_same_decision():
    cars = [car(n, phases=((n % 3,) if n % 2 else ALL), max_a=6.0 + 3 * n, in_force_a=float(n % 4 * 3),
                draw_a=(None if n % 3 else 5.0), changed_at=ago(30), running_since=ago(40 * n))
            for n in range(1, 10)]
    first = share(budget(40, battery_a=5.0), cars, T0)
    for seed in range(5):
        shuffled = list(cars)
        random.Random(seed).shuffle(shuffled)
        assert share(budget(40, battery_a=5.0), shuffled, T0) == first


# ---- tables of cycles on a fake clock ----------------------------------------------------------------------


def test_table_a_newcomer_arrives_and_a_car_leaves():
    run_table(Square(budget(32)), [
        # leap s, input changes, expected limits
        (0, {1: {}, 2: {}}, {1: 16.0, 2: 16.0}),
        (5, {3: {}}, {1: 10.6, 2: 10.6, 3: 0.0}),  # down at once, the newcomer waits
        (1, {}, {1: 10.6, 2: 10.6, 3: 0.0}),  # the decreases have not shown yet
        (9, {}, {1: 10.6, 2: 10.6, 3: 10.6}),  # reaction_s after the decrease: the rise follows
        (60, {2: {"active": False}}, {1: 16.0, 2: 0.0, 3: 16.0}),
    ])


def test_table_a_car_that_draws_less_gives_the_rest_away():
    square = Square(budget(32), wants_a={"CP01/1": 10.0})
    run_table(square, [
        (0, {1: {}, 2: {}}, {1: 16.0, 2: 16.0}),
        (5, {}, {1: 16.0, 2: 16.0}),  # the draw is not trusted before reaction_s
        (5, {}, {1: 12.0, 2: 16.0}),  # capped at its draw + 2 A, at once; the other waits
        (10, {}, {1: 12.0, 2: 20.0}),
        (30, {}, {1: 12.0, 2: 20.0}),  # stays put: a capped car is not uncapped by its own cap
    ])
    square.wants_a["CP01/1"] = 32.0  # the car wants more again: it draws its whole limit
    run_table(square, [
        (1, {}, {1: 12.0, 2: 16.0}),  # no longer capped: the other comes down first
        (5, {}, {1: 12.0, 2: 16.0}),
        (5, {}, {1: 16.0, 2: 16.0}),
    ])


def test_table_seven_cars_take_turns_on_3x40_a():
    six = {n: 6.6 for n in range(1, 7)}
    run_table(Square(budget(40)), [
        (0, {n: {} for n in range(1, 8)}, {**six, 7: 0.0}),
        (299, {}, {**six, 7: 0.0}),
        (1, {}, {**six, 6: 0.0, 7: 0.0}),  # turn over: CP06/1 gives way, CP07/1 waits for that to show
        (10, {}, {**six, 6: 0.0, 7: 6.6}),
        (1, {}, {**six, 6: 0.0, 7: 6.6}),  # the car just paused does not push out the next one
        (288, {}, {**six, 6: 0.0, 7: 6.6}),
        (1, {}, {**six, 5: 0.0, 6: 0.0, 7: 6.6}),  # CP06/1 waited a turn; CP05/1 (running longest) gives way
        (10, {}, {**six, 5: 0.0, 6: 6.6, 7: 6.6}),
        (290, {}, {**six, 4: 0.0, 5: 0.0, 6: 6.6, 7: 6.6}),
        (10, {}, {**six, 4: 0.0, 5: 6.6, 6: 6.6, 7: 6.6}),
    ])


def test_table_a_full_car_gives_its_minimum_away_and_is_offered_current_again_later():
    square = Square(budget(32), wants_a={"CP01/1": 0.0, "CP02/1": 32.0})
    run_table(square, [
        (0, {1: {}, 2: {}}, {1: 16.0, 2: 16.0}),
        (10, {}, {1: 6.0, 2: 16.0}),  # draws nothing: down to the minimum, the other rises once that shows
        (IDLE_GRACE_S - 1, {}, {1: 6.0, 2: 26.0}),  # the minimum is kept for a grace after its limit fell
        (1, {}, {1: 0.0, 2: 26.0}),  # then it goes to the other car
        (10, {}, {1: 0.0, 2: 32.0}),
        (RETRY_S - 10, {}, {1: 0.0, 2: 16.0}),  # offered current again: the other comes down first
        (10, {}, {1: 16.0, 2: 16.0}),
        (10, {}, {1: 6.0, 2: 16.0}),
        (10, {}, {1: 6.0, 2: 26.0}),  # not resuming after a pause: kept at the minimum...
        (IDLE_GRACE_S - 21, {}, {1: 6.0, 2: 26.0}),
        (1, {}, {1: 0.0, 2: 26.0}),  # ...for the grace after it was offered current
    ])
    assert one(square.last, 1).not_resuming


def test_table_a_full_car_in_a_shortage_gives_its_turn_to_a_waiting_car():
    square = Square(budget(20), wants_a={"CP01/1": 0.0, "CP02/1": 32.0, "CP03/1": 32.0, "CP04/1": 32.0})
    run_table(square, [
        (0, {n: {} for n in (1, 2, 3, 4)}, {1: 6.6, 2: 6.6, 3: 6.6, 4: 0.0}),
        (10, {}, {1: 6.0, 4: 0.0}),
        (IDLE_GRACE_S - 1, {}, {1: 6.0, 4: 0.0}),
        (1, {}, {1: 0.0, 2: 6.6, 3: 6.6, 4: 0.0}),  # the car that waited rises once that shows
        (10, {}, {1: 0.0, 2: 6.6, 3: 6.6, 4: 6.6}),
        (RETRY_S - 11, {}, {1: 0.0, 2: 6.6, 3: 6.6, 4: 6.6}),
        (1, {}, {1: 0.0, 2: 6.6, 3: 6.6, 4: 6.6}),  # from now on it waits for a turn like any paused car
        (300, {}, {1: 0.0, 2: 6.6, 3: 0.0, 4: 6.6}),  # its turn: CP03/1, running longest, gives way
        (10, {}, {1: 6.6, 2: 6.6, 3: 0.0, 4: 6.6}),
        (20, {}, {1: 0.0, 2: 6.6, 3: 0.0, 4: 6.6}),  # it does not resume: it gives way at once
        (10, {}, {1: 0.0, 2: 6.6, 3: 6.6, 4: 6.6}),
    ])


def test_table_the_battery_goes_offline_and_comes_back():
    square = Square(budget(32, battery_a=16.0))
    run_table(square, [
        (0, {1: {}, 2: {}, 3: {}}, {1: 16.0, 2: 16.0, 3: 16.0}),
    ])
    assert {d.grid_only_a for d in square.last.connectors} == {10.6}
    square.budget = budget(32)
    run_table(square, [
        (1, {}, {1: 10.6, 2: 10.6, 3: 10.6}),  # decreases go out at once, whatever their size
        (30, {}, {1: 10.6, 2: 10.6, 3: 10.6}),
    ])
    square.budget = budget(32, battery_a=16.0)
    run_table(square, [(5, {}, {1: 16.0, 2: 16.0, 3: 16.0})])
