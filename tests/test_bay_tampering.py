"""What a hostile device on the broker can still try once the access list is in place, as the cycle sees
it (fake clock, fake link): an "empty" reading under a charging car, and light commands the gateway did
not send. Property tests of the pure rule: a sensor's lie told under a plugged-in car never reserves the
bay for the car still parked after it unplugs."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.contract import events as ev
from signage.rules import (
    BayInputs,
    Light,
    SignageSettings,
    decide,
    sensor_doubted,
    track_session_over,
)
from tests.test_cycle import T0, square, status  # noqa: F401 (the fixture)

PLUG = ev.ChargerConnected("CP01", "ocpp1.6", T0)


def occupancy(value: bool | None):
    return lambda now: ev.OccupancyChanged("B01", value, now)


async def alarm_keys(state) -> set[str]:
    return {a["key"] for a in await state.store.active_alarms()}


async def test_empty_under_a_charging_car_is_a_sensor_fault_and_no_reserve_after_unplug(square):  # noqa: F811
    state, _, link, clock, step = square
    await step(0, PLUG, status(1, "Available", T0), status(2, "Available", T0), occupancy(False))
    assert (link.last("B01")["color"], link.last("B01")["reason"]) == ("blue", "reserved")
    await step(1, occupancy(True))
    await step(1, status(1, "Preparing"))
    await step(1, status(1, "Charging"))
    assert link.last("B01")["color"] == "blue"
    # Someone on the broker says the bay is empty while the car charges.
    await step(1, occupancy(False))
    assert state.sensor_reading("B01", clock.now) is None  # doubted at once: the bay counts as occupied
    assert "sensor_contradicts:B01" not in await alarm_keys(state)  # a slow sensor gets a minute
    await step(1, status(1, "SuspendedEV"))
    await step(61)  # grace over, the car still plugged: green, it may stay as a parked car
    assert "sensor_contradicts:B01" in await alarm_keys(state)
    assert (link.last("B01")["color"], link.last("B01")["reason"]) == ("green", "finished")
    await step(5, status(1, "Available"))  # unplugged; the car is still parked
    for _ in range(5):
        await step(30)
        assert link.last("B01")["color"] == "green", link.last("B01")
    assert "sensor_contradicts:B01" in await alarm_keys(state)
    # The sensor sees a car again: it is believed again, and the car leaving frees the bay.
    await step(1, occupancy(True))
    assert "sensor_contradicts:B01" not in await alarm_keys(state)
    await step(30, occupancy(False))
    await step(11)
    assert (link.last("B01")["color"], link.last("B01")["reason"]) == ("blue", "reserved")
    kinds = [e["kind"] for e in await state.store.events(since=T0)]
    assert kinds.count("sensor_doubted") == 1 and kinds.count("sensor_trusted") == 1


async def test_a_sensor_missing_a_car_that_plugs_in_is_doubted_too(square):  # noqa: F811
    state, _, _, clock, step = square
    await step(0, PLUG, status(1, "Available", T0), status(2, "Available", T0), occupancy(False))
    await step(1, status(1, "Charging"))  # the sensor never saw the car
    assert state.sensor_reading("B01", clock.now) is None
    await step(59)
    assert "sensor_contradicts:B01" not in await alarm_keys(state)
    await step(2)
    assert "sensor_contradicts:B01" in await alarm_keys(state)


async def test_a_sensor_slower_than_the_charger_raises_no_alarm(square):  # noqa: F811
    state, _, _, clock, step = square
    await step(0, PLUG, status(1, "Available", T0), status(2, "Available", T0), occupancy(False))
    await step(1, status(1, "Preparing"))  # the car plugs in before the sensor has seen it park
    await step(1, status(1, "Charging"))
    await step(20, occupancy(True))  # a radio sensor, 20 s late
    for _ in range(3):
        await step(30)
    assert not {k for k in await alarm_keys(state) if k.startswith("sensor_contradicts")}
    assert state.sensor_reading("B01", clock.now) is True


async def test_a_foreign_light_command_is_one_alarm_naming_the_bay_until_the_fixture_acks_ours(square):  # noqa: F811
    state, _, link, _, step = square
    await step(0, PLUG, status(1, "Available", T0), status(2, "Available", T0))
    own = link.last("B01")
    for seconds in (1, 1, 1):
        await step(seconds, lambda now: ev.LightForeign("B01", 99, "blue", False, now))
    alarms = [a for a in await state.store.active_alarms() if a["key"].startswith("light_foreign")]
    assert [a["key"] for a in alarms] == ["light_foreign:B01"]
    assert "bay B01" in alarms[0]["message"] and "blue, seq 99" in alarms[0]["message"]
    kinds = [e["kind"] for e in await state.store.events(since=T0)]
    assert kinds.count("light_foreign") == 1  # a flood is one line a minute
    await step(1, lambda now: ev.LightAcked("B01", own["seq"], own["color"], now))
    assert not [k for k in await alarm_keys(state) if k.startswith("light_foreign")]


# ---- the pure rule -------------------------------------------------------------------------------

# What happens at the bay: a car comes, plugs in, charges, unplugs and stays or leaves; the sensor
# may say anything while the car is plugged in (a lie from the broker), and the truth otherwise.
STEPS = st.lists(
    st.sampled_from(["arrive", "plug", "charge", "suspend", "unplug", "leave", "lie", "lie", "truth"]),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(STEPS, st.sampled_from([0, 60, 900]), st.sampled_from([0, 30]))
def test_a_lie_under_a_plugged_car_never_reserves_the_bay_while_that_car_stays(steps, grace_s, dwell_s):
    settings_ = SignageSettings(min_free_ev_bays=1, grace_s=grace_s, min_dwell_s=dwell_s)
    now, present, status_word, reading, doubted = T0, False, "Available", False, False
    over_at = None
    stayed = False  # a car that was plugged in, unplugged, and is still parked
    lights: dict[str, Light] = {}
    for step_ in steps:
        now += timedelta(seconds=45)
        new_status, new_reading = status_word, reading
        if step_ == "arrive" and not present:
            present, new_reading = True, True
        elif step_ == "plug" and present and status_word == "Available":
            new_status = "Preparing"
        elif step_ == "charge" and status_word in ("Preparing", "SuspendedEV"):
            new_status = "Charging"
        elif step_ == "suspend" and status_word == "Charging":
            new_status = "SuspendedEV"
        elif step_ == "unplug" and status_word != "Available":
            new_status, stayed = "Available", True
        elif step_ == "leave" and present and status_word == "Available":
            present, stayed, new_reading = False, False, False
        elif step_ == "lie" and status_word != "Available":
            new_reading = False
        elif step_ == "truth":
            new_reading = present
        if new_status != status_word:
            over_at = track_session_over(status_word, new_status, over_at, now)
            status_word = new_status
        reading = new_reading
        doubted = sensor_doubted(doubted, reading, status_word)
        bay = BayInputs(bay_id="B01", has_sensor=True, known=True, connector_status=status_word, charger_online=True,
                        occupied=None if doubted else reading, session_over_at=over_at, spare_a=32.0)
        lights = dict(decide([bay], lights, settings_, now).lights)
        if stayed:
            assert lights["B01"].reason != "reserved", (step_, status_word, reading, doubted, lights["B01"])


@given(st.booleans(), st.sampled_from([None, True, False]),
       st.sampled_from(["Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing", None]))
def test_doubt_comes_from_empty_under_a_plugged_car_and_goes_only_with_a_car_seen(doubted, occupied, status_word):
    after = sensor_doubted(doubted, occupied, status_word)
    if occupied is True:
        assert after is False
    elif occupied is False and status_word not in ("Available", None):
        assert after is True
    else:
        assert after is doubted
