"""Table tests of the bay-light rules (signage.md): each row, the reserve, and cycles on a fake clock."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from drivers.contract.clock import wire_ts
from signage.commands import light_command, same_command
from signage.rules import (
    BayInputs,
    Closure,
    Light,
    Override,
    SignageSettings,
    decide,
    track_session_over,
)
from signage.texts import MAX_TEXT_CHARS, pictogram_for, text_for

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=timezone.utc)
SETTINGS = SignageSettings(min_free_ev_bays=1, grace_s=900, min_dwell_s=30, language="nl")


def bay(bay_id: str = "B01", **fields) -> BayInputs:
    base = dict(
        bay_id=bay_id,
        has_sensor=False,
        known=True,
        connector_status="Available",
        charger_online=True,
        occupied=None,
        session_over_at=None,
        spare_a=32.0,
    )
    base.update(fields)
    return BayInputs(**base)


def light(color: str, reason: str, at: datetime = T0 - timedelta(hours=1), language: str = "nl") -> Light:
    return Light(color, reason, text_for(color, reason, language), pictogram_for(color), at)


def one(b: BayInputs, prev: Light | None = None, settings: SignageSettings = SETTINGS, now: datetime = T0) -> Light:
    previous = {b.bay_id: prev} if prev is not None else {}
    return decide([b], previous, settings, now).lights[b.bay_id]


# ---- the table, row by row ------------------------------------------------------------------

OVER_RECENT = T0 - timedelta(seconds=100)
OVER_LONG_AGO = T0 - timedelta(seconds=1000)
UNTIL = T0 + timedelta(minutes=30)

ROWS = [
    # (what, inputs, previous light, expected colour, expected reason)
    ("override beats a fault", bay(connector_status="Faulted", override=Override("blue", UNTIL)), None,
     "blue", "override"),
    ("override beats charging", bay(connector_status="Charging", override=Override("green", UNTIL)), None,
     "green", "override"),
    ("override off", bay(override=Override("off", UNTIL)), None, "off", "override"),
    ("expired override is ignored", bay(connector_status="Charging", override=Override("green", T0)), None,
     "blue", "charging"),
    ("closure beats charging", bay(connector_status="Charging", closure=Closure("green", "Markt")), None,
     "green", "closure"),
    ("override beats closure", bay(closure=Closure("green"), override=Override("blue", UNTIL)), None,
     "blue", "override"),
    ("charger offline", bay(connector_status="Charging", charger_online=False), None, "green", "fault"),
    ("Faulted", bay(connector_status="Faulted"), None, "green", "fault"),
    ("Unavailable", bay(connector_status="Unavailable"), None, "green", "fault"),
    ("no status once known", bay(connector_status=None), None, "green", "fault"),
    ("status not understood", bay(connector_status="Occupied"), None, "green", "fault"),
    ("Preparing", bay(connector_status="Preparing"), None, "blue", "plugged"),
    ("Charging", bay(connector_status="Charging"), None, "blue", "charging"),
    ("SuspendedEVSE", bay(connector_status="SuspendedEVSE"), None, "blue", "charging"),
    ("Reserved, sensor empty", bay(connector_status="Reserved", has_sensor=True, occupied=False), None,
     "blue", "reserved"),
    ("Reserved, already blue", bay(connector_status="Reserved"), light("blue", "charging"), "blue", "reserved"),
    ("Reserved, no sensor, green: no trap", bay(connector_status="Reserved"), None, "green", "open"),
    ("session over in grace", bay(connector_status="SuspendedEV", session_over_at=OVER_RECENT), None,
     "blue", "finished"),
    ("session over in grace, unplugged, sensor empty",
     bay(has_sensor=True, occupied=False, session_over_at=OVER_RECENT), None, "blue", "finished"),
    ("unplugged in grace, no sensor, was blue", bay(session_over_at=OVER_RECENT), light("blue", "charging"),
     "blue", "finished"),
    ("unplugged in grace, no sensor, was green: no trap", bay(session_over_at=OVER_RECENT),
     light("green", "open"), "green", "open"),
    ("grace over, still plugged", bay(connector_status="Finishing", session_over_at=OVER_LONG_AGO), None,
     "green", "finished"),
    ("grace over, sensor occupied", bay(has_sensor=True, occupied=True, session_over_at=OVER_LONG_AGO), None,
     "green", "finished"),
    ("grace over, sensor without reading", bay(has_sensor=True, session_over_at=OVER_LONG_AGO), None,
     "green", "finished"),
    ("grace over, no sensor, unplugged", bay(session_over_at=OVER_LONG_AGO), None, "green", "open"),
    ("plugged, end of session never seen", bay(connector_status="SuspendedEV"), None, "green", "finished"),
    ("eligible, reserve needs it", bay(has_sensor=True, occupied=False), None, "blue", "reserved"),
    ("eligible, grace over", bay(has_sensor=True, occupied=False, session_over_at=OVER_LONG_AGO), None,
     "blue", "reserved"),
    ("no sensor: never reserved", bay(), None, "green", "open"),
    ("sensor occupied", bay(has_sensor=True, occupied=True), None, "green", "open"),
    ("sensor without reading counts as occupied", bay(has_sensor=True, occupied=None), None, "green", "open"),
    ("eligible needs the charger online", bay(has_sensor=True, occupied=False, charger_online=False), None,
     "green", "fault"),
]


@pytest.mark.parametrize("what,inputs,prev,color,reason", ROWS, ids=[r[0] for r in ROWS])
def test_table_row(what, inputs, prev, color, reason):
    got = one(inputs, prev)
    assert (got.color, got.reason) == (color, reason)


def test_reserve_not_needed_is_green_open():
    settings = replace(SETTINGS, min_free_ev_bays=0)
    assert one(bay(has_sensor=True, occupied=False), settings=settings).reason == "open"


def test_override_off_has_no_text_and_no_pictogram():
    got = one(bay(override=Override("off", UNTIL)))
    assert (got.color, got.text, got.pictogram) == ("off", "", "none")


def test_closure_carries_its_own_text_or_the_colours():
    assert one(bay(closure=Closure("green", "Markt tot 14:00"))).text == "Markt tot 14:00"
    assert one(bay(closure=Closure("blue"))).text == "Alleen elektrisch laden"
    assert one(bay(closure=Closure("off", "Markt"))).text == ""


def test_unknown_bays_get_no_light_and_no_change():
    d = decide([bay("B01", known=False), bay("B02")], {}, SETTINGS, T0)
    assert set(d.lights) == {"B02"}
    assert [c.bay_id for c in d.changes] == ["B02"]


def test_texts_follow_the_language():
    en = replace(SETTINGS, language="en")
    assert one(bay(connector_status="Charging")).text == "Alleen opladen"
    assert one(bay(connector_status="Charging"), settings=en).text == "EV charging only"
    assert one(bay(), settings=en).text == "Parking for everyone"
    assert one(bay()).text == "Vrij parkeren"


def test_duplicate_bay_ids_are_refused():
    with pytest.raises(ValueError):
        decide([bay("B01"), bay("B01")], {}, SETTINGS, T0)


def test_bad_settings_and_colours_are_refused():
    with pytest.raises(ValueError):
        SignageSettings(min_free_ev_bays=1, grace_s=900, min_dwell_s=30, language="de")
    with pytest.raises(ValueError):
        Override("red", UNTIL)
    with pytest.raises(ValueError):
        Closure("yellow")


# ---- the reserve ----------------------------------------------------------------------------


def empty(bay_id: str, spare_a: float = 32.0, **fields) -> BayInputs:
    return bay(bay_id, has_sensor=True, occupied=False, spare_a=spare_a, **fields)


def blue_ids(d) -> list[str]:
    return [b for b, lt in d.lights.items() if lt.color == "blue"]


def test_reserve_ranks_by_spare_power_then_bay_id():
    bays = [empty("B01", 16.0), empty("B02", 32.0), empty("B03", 16.0), empty("B04", 11.0)]
    d = decide(bays, {}, replace(SETTINGS, min_free_ev_bays=2), T0)
    assert blue_ids(d) == ["B01", "B02"]


def test_reserve_is_at_most_the_eligible_bays():
    bays = [empty("B01"), bay("B02", has_sensor=True, occupied=True), bay("B03")]
    d = decide(bays, {}, replace(SETTINGS, min_free_ev_bays=3), T0)
    assert blue_ids(d) == ["B01"]


def test_reserve_keeps_its_bays_rather_than_swap():
    prev = {"B01": light("blue", "reserved"), "B02": light("green", "open")}
    d = decide([empty("B01", 11.0), empty("B02", 32.0)], prev, SETTINGS, T0)
    assert blue_ids(d) == ["B01"]
    assert d.changes == ()


def test_reserve_shrinking_releases_the_lowest_ranked():
    prev = {"B01": light("blue", "reserved"), "B02": light("blue", "reserved"), "B03": light("blue", "reserved")}
    bays = [empty("B01", 16.0), empty("B02", 32.0), empty("B03", 16.0)]
    d = decide(bays, prev, replace(SETTINGS, min_free_ev_bays=2), T0)
    assert blue_ids(d) == ["B01", "B02"]
    assert [(c.bay_id, c.new.color, c.new.reason) for c in d.changes] == [("B03", "green", "open")]


def test_bay_in_grace_is_blue_but_not_part_of_the_reserve():
    bays = [empty("B01", session_over_at=OVER_RECENT), empty("B02", 11.0)]
    d = decide(bays, {"B01": light("blue", "charging")}, SETTINGS, T0)
    assert {b: lt.reason for b, lt in d.lights.items()} == {"B01": "finished", "B02": "reserved"}


def test_reserve_waits_for_the_dwell_of_a_green_bay():
    prev = {"B01": light("green", "open", at=T0 - timedelta(seconds=10))}
    d = decide([empty("B01")], prev, SETTINGS, T0)
    assert d.lights["B01"] is prev["B01"]
    assert d.changes == ()


# ---- cycles on a fake clock (OpenEMS style) -------------------------------------------------


def run_cycles(bays: list[BayInputs], steps, settings: SignageSettings = SETTINGS):
    """Each step: (seconds to leap, {bay: changed fields}, {bay: (colour, reason)} expected after the cycle)."""
    square = {b.bay_id: b for b in bays}
    previous: dict[str, Light] = {}
    now = T0
    for n, (leap_s, changes, expected) in enumerate(steps):
        now += timedelta(seconds=leap_s)
        for bay_id, fields in changes.items():
            old = square[bay_id]
            if "connector_status" in fields:
                over = track_session_over(old.connector_status, fields["connector_status"], old.session_over_at, now)
                fields = {"session_over_at": over, "known": True, **fields}
            square[bay_id] = replace(old, **fields)
        d = decide(list(square.values()), previous, settings, now)
        got = {b: (lt.color, lt.reason) for b, lt in d.lights.items() if b in expected}
        assert got == expected, f"step {n} (t = {(now - T0).total_seconds():g} s)"
        previous = dict(d.lights)
    return previous


def test_a_charging_session_without_sensor():
    run_cycles(
        [bay("B01", known=False, connector_status=None)],
        [
            (0, {}, {}),
            (1, {"B01": {"connector_status": "Available"}}, {"B01": ("green", "open")}),
            (5, {"B01": {"connector_status": "Preparing"}}, {"B01": ("blue", "plugged")}),  # plug-in: at once
            (10, {"B01": {"connector_status": "Charging"}}, {"B01": ("blue", "charging")}),
            (3600, {"B01": {"connector_status": "SuspendedEV"}}, {"B01": ("blue", "finished")}),
            (899, {}, {"B01": ("blue", "finished")}),
            (1, {}, {"B01": ("green", "finished")}),  # end of grace: at once
            (5, {"B01": {"connector_status": "Finishing"}}, {"B01": ("green", "finished")}),
            (5, {"B01": {"connector_status": "Available"}}, {"B01": ("green", "open")}),
            (5, {"B01": {"connector_status": "Preparing"}}, {"B01": ("blue", "plugged")}),
        ],
    )


def test_a_return_to_charging_cancels_the_end_of_session():
    run_cycles(
        [bay("B01", connector_status="Charging")],
        [
            (0, {}, {"B01": ("blue", "charging")}),
            (60, {"B01": {"connector_status": "SuspendedEV"}}, {"B01": ("blue", "finished")}),
            (800, {"B01": {"connector_status": "Charging"}}, {"B01": ("blue", "charging")}),
            (200, {}, {"B01": ("blue", "charging")}),
        ],
    )


def test_reserve_bay_is_calm_when_a_car_parks_and_leaves():
    run_cycles(
        [empty("B01")],
        [
            (0, {}, {"B01": ("blue", "reserved")}),
            (5, {"B01": {"occupied": True}}, {"B01": ("blue", "reserved")}),  # dwell holds
            (25, {}, {"B01": ("green", "open")}),  # 30 s after it turned blue
            (1, {"B01": {"occupied": False}}, {"B01": ("green", "open")}),  # dwell holds
            (28, {}, {"B01": ("green", "open")}),
            (1, {}, {"B01": ("blue", "reserved")}),
        ],
    )


def test_plug_in_on_a_reserve_bay_keeps_the_colour_and_its_time():
    previous = run_cycles(
        [empty("B01")],
        [
            (0, {}, {"B01": ("blue", "reserved")}),
            (3, {"B01": {"occupied": True, "connector_status": "Preparing"}}, {"B01": ("blue", "plugged")}),
        ],
    )
    assert previous["B01"].changed_at == T0


def test_faults_are_immediate_and_recovery_is_calm():
    run_cycles(
        [empty("B01")],
        [
            (0, {}, {"B01": ("blue", "reserved")}),
            (2, {"B01": {"charger_online": False}}, {"B01": ("green", "fault")}),
            (3, {"B01": {"charger_online": True}}, {"B01": ("green", "fault")}),  # held by dwell, old reason
            (26, {}, {"B01": ("green", "fault")}),
            (1, {}, {"B01": ("blue", "reserved")}),  # 30 s after it turned green
        ],
    )


def test_override_holds_until_its_end_and_is_immediate_both_ways():
    until = T0 + timedelta(seconds=600)
    run_cycles(
        [bay("B01", connector_status="Charging")],
        [
            (0, {}, {"B01": ("blue", "charging")}),
            (1, {"B01": {"override": Override("green", until, who="tech", why="cable check")}},
             {"B01": ("green", "override")}),
            (1, {"B01": {"override": Override("off", until)}}, {"B01": ("off", "override")}),
            (597, {}, {"B01": ("off", "override")}),
            (1, {}, {"B01": ("blue", "charging")}),  # override ended: at once
        ],
    )


def test_override_cleared_on_a_bay_without_sensor_does_not_trap():
    run_cycles(
        [bay("B01", override=Override("blue", T0 + timedelta(seconds=60)))],
        [
            (0, {}, {"B01": ("blue", "override")}),
            (10, {"B01": {"override": None}}, {"B01": ("green", "open")}),
        ],
    )


def test_no_sensor_bay_stays_green_until_a_plug_in():
    run_cycles(
        [bay("B01")],
        [
            (0, {}, {"B01": ("green", "open")}),
            (100, {"B01": {"connector_status": "Reserved"}}, {"B01": ("green", "open")}),
            (100, {"B01": {"connector_status": "Available"}}, {"B01": ("green", "open")}),
            (1, {"B01": {"connector_status": "Preparing"}}, {"B01": ("blue", "plugged")}),
        ],
    )


def test_zero_grace_turns_green_when_the_session_ends():
    run_cycles(
        [bay("B01", connector_status="Preparing")],
        [
            (0, {}, {"B01": ("blue", "plugged")}),
            (5, {"B01": {"connector_status": "Charging"}}, {"B01": ("blue", "charging")}),
            (5, {"B01": {"connector_status": "SuspendedEV"}}, {"B01": ("green", "finished")}),
        ],
        settings=replace(SETTINGS, grace_s=0),
    )


def test_new_eligible_bay_does_not_take_the_reserve_over():
    run_cycles(
        [empty("B01", 16.0), bay("B02", has_sensor=True, occupied=True, spare_a=32.0)],
        [
            (0, {}, {"B01": ("blue", "reserved"), "B02": ("green", "open")}),
            (100, {"B02": {"occupied": False}}, {"B01": ("blue", "reserved"), "B02": ("green", "open")}),
            (100, {"B01": {"occupied": True}}, {"B01": ("green", "open"), "B02": ("blue", "reserved")}),
            (100, {"B01": {"occupied": False}}, {"B01": ("green", "open"), "B02": ("blue", "reserved")}),
        ],
    )


def test_end_of_grace_is_immediate_even_within_the_dwell():
    run_cycles(
        [bay("B01", connector_status="Preparing")],
        [
            (0, {}, {"B01": ("blue", "plugged")}),
            (5, {"B01": {"connector_status": "SuspendedEV"}}, {"B01": ("blue", "finished")}),  # never drew
            (20, {}, {"B01": ("green", "finished")}),  # 25 s after the colour changed, dwell is 60 s
        ],
        settings=replace(SETTINGS, grace_s=20, min_dwell_s=60),
    )


def test_a_bay_leaving_its_grace_does_not_take_over_the_reserve():
    run_cycles(
        [empty("B01", 11.0), bay("B02", spare_a=32.0, has_sensor=True, occupied=True, connector_status="Charging")],
        [
            (0, {}, {"B01": ("blue", "reserved"), "B02": ("blue", "charging")}),
            (100, {"B02": {"connector_status": "Finishing"}},
             {"B01": ("blue", "reserved"), "B02": ("blue", "finished")}),
            (100, {"B02": {"connector_status": "Available", "occupied": False}},
             {"B01": ("blue", "reserved"), "B02": ("blue", "finished")}),
            (800, {}, {"B01": ("blue", "reserved"), "B02": ("green", "open")}),  # grace over: at once
        ],
    )


def test_a_car_that_stops_briefly_on_a_reserve_bay_changes_nothing():
    run_cycles(
        [empty("B01", 32.0), empty("B02", 16.0)],
        [
            (0, {}, {"B01": ("blue", "reserved"), "B02": ("green", "open")}),
            (10, {"B01": {"occupied": True}}, {"B01": ("blue", "reserved"), "B02": ("green", "open")}),  # dwell
            (5, {"B01": {"occupied": False}}, {"B01": ("blue", "reserved"), "B02": ("green", "open")}),
            (100, {}, {"B01": ("blue", "reserved"), "B02": ("green", "open")}),
        ],
    )


# ---- explanations ---------------------------------------------------------------------------


def test_changes_are_explained_with_json_inputs():
    ov = Override("green", UNTIL, who="J. de Vries", why="works")
    d = decide([bay("B01", connector_status="Preparing"), bay("B02", override=ov)], {}, SETTINGS, T0)
    plug, held = d.changes
    assert plug.why == "EV plugged in at connector (Preparing)"
    assert plug.inputs["status"] == "Preparing"
    assert held.why == "Technician override to green until 2026-11-28 13:30 UTC by J. de Vries: works"
    assert held.inputs["override"] == {"color": "green", "until": "2026-11-28T13:30:00.000Z",
                                       "who": "J. de Vries", "why": "works"}
    json.dumps([dict(c.inputs) for c in d.changes])


def test_end_of_override_is_said():
    prev = {"B01": light("green", "override")}
    (change,) = decide([bay("B01", connector_status="Charging")], prev, SETTINGS, T0).changes
    assert change.why == "Override ended. EV charging at connector (Charging)"


def test_unchanged_light_is_the_same_object_and_no_change():
    prev = {"B01": light("blue", "charging")}
    d = decide([bay("B01", connector_status="Charging")], prev, SETTINGS, T0)
    assert d.lights["B01"] is prev["B01"]
    assert d.changes == ()


def test_text_change_keeps_the_colour_time():
    prev = {"B01": light("blue", "charging", language="en")}
    d = decide([bay("B01", connector_status="Charging")], prev, SETTINGS, T0)
    assert d.lights["B01"].text == "Alleen opladen"
    assert d.lights["B01"].changed_at == prev["B01"].changed_at
    assert len(d.changes) == 1


# ---- session over ---------------------------------------------------------------------------

AT = T0
EARLIER = T0 - timedelta(minutes=5)


@pytest.mark.parametrize(
    "prev_status,new_status,prev_over,expected",
    [
        ("Charging", "SuspendedEV", None, AT),
        ("Charging", "Finishing", None, AT),
        ("Charging", "Available", None, AT),
        ("SuspendedEVSE", "SuspendedEV", None, AT),
        ("Preparing", "SuspendedEV", None, AT),
        ("Preparing", "Finishing", None, AT),
        ("Preparing", "Available", None, None),
        ("SuspendedEV", "Charging", EARLIER, None),
        ("SuspendedEV", "SuspendedEVSE", EARLIER, None),
        ("Available", "Preparing", EARLIER, None),
        ("SuspendedEV", "Finishing", EARLIER, EARLIER),
        ("Finishing", "Available", EARLIER, EARLIER),
        ("SuspendedEV", "SuspendedEV", EARLIER, EARLIER),
        ("SuspendedEV", "Faulted", EARLIER, EARLIER),
        (None, "SuspendedEV", None, None),
        (None, "Available", None, None),
        ("Charging", "Faulted", None, None),
    ],
)
def test_track_session_over(prev_status, new_status, prev_over, expected):
    assert track_session_over(prev_status, new_status, prev_over, AT) == expected


# ---- texts and commands ---------------------------------------------------------------------

REASONS = ["plugged", "charging", "reserved", "finished", "open", "fault", "override", "closure", "startup"]


@pytest.mark.parametrize("language", ["nl", "en"])
@pytest.mark.parametrize("color", ["blue", "green", "off"])
@pytest.mark.parametrize("reason", REASONS)
def test_every_text_fits_a_sign(language, color, reason):
    text = text_for(color, reason, language)
    assert len(text) <= MAX_TEXT_CHARS
    assert (text == "") == (color == "off")


def test_texts_refuse_unknown_language_and_colour():
    with pytest.raises(ValueError):
        text_for("blue", "charging", "fr")
    with pytest.raises(ValueError):
        text_for("red", "charging", "nl")
    with pytest.raises(ValueError):
        pictogram_for("red")


def test_format_ts():
    assert wire_ts(datetime(2026, 11, 28, 13, 5, 9, 123456, tzinfo=timezone.utc)) == "2026-11-28T13:05:09.123Z"
    cet = timezone(timedelta(hours=1))
    assert wire_ts(datetime(2026, 11, 28, 14, 5, 9, tzinfo=cet)) == "2026-11-28T13:05:09.000Z"
    with pytest.raises(ValueError):
        wire_ts(datetime(2026, 11, 28, 13, 5, 9))


def test_light_command_is_the_wire_payload():
    cmd = light_command(light("blue", "charging"), 17, datetime(2026, 11, 28, 13, 5, 9, 123000, tzinfo=timezone.utc))
    assert cmd == {"color": "blue", "text": "Alleen opladen", "pictogram": "charging",
                   "seq": 17, "ts": "2026-11-28T13:05:09.123Z", "reason": "charging"}
    assert json.loads(json.dumps(cmd)) == cmd


def test_same_command_ignores_seq_and_ts():
    a = light_command(light("blue", "charging"), 17, T0)
    assert same_command(a, light_command(light("blue", "charging"), 18, T0 + timedelta(seconds=5)))
    assert not same_command(a, light_command(light("blue", "plugged"), 17, T0))
    assert not same_command(a, light_command(light("blue", "charging", language="en"), 17, T0))
