"""The charging-profile rules the simulated charger applies (OCPP 1.6 §3.13, 2.0.1 K), with a fixed clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sim.charger_math import (
    Follow,
    charging_status,
    follow_limit,
    plain_draw,
    sampled_values,
    sampled_values201,
)
from drivers.sim.profiles import (
    ProfileStore,
    composite_schedule,
    composite_schedule201,
    parse_profile,
    parse_profile201,
    purpose201,
)

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
MAX_A = 32.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def payload(
    profile_id: int,
    purpose: str = "TxDefaultProfile",
    limit: float | list[tuple[int, float]] = 16.0,
    *,
    stack: int = 0,
    kind: str = "Absolute",
    start: datetime | None = T0,
    duration_s: int | None = None,
    tx: int | None = None,
    unit: str = "A",
    recurrency: str | None = None,
    phases: int | None = None,
) -> dict[str, Any]:
    periods = limit if isinstance(limit, list) else [(0, limit)]
    schedule: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": s, "limit": a, **({"numberPhases": phases} if phases else {})} for s, a in periods
        ],
    }
    if start is not None:
        schedule["startSchedule"] = start.isoformat().replace("+00:00", "Z")
    if duration_s is not None:
        schedule["duration"] = duration_s
    body: dict[str, Any] = {
        "chargingProfileId": profile_id,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
    }
    if tx is not None:
        body["transactionId"] = tx
    if recurrency is not None:
        body["recurrencyKind"] = recurrency
    return body


def store_with(*installs: tuple[int, dict[str, Any]], tx_id: int | None = 7) -> ProfileStore:
    store = ProfileStore(connectors=2)
    for connector, body in installs:
        assert store.install(connector, parse_profile(body), tx_id) == "Accepted"
    return store


def limit(store: ProfileStore, seconds: float, connector: int = 1, tx_id: int | None = 7, tx_start: datetime | None = T0) -> float:
    return store.limit_a(connector, at(seconds), tx_id, tx_start, MAX_A, 3)


# --- parsing ---------------------------------------------------------------------------------


def test_parse_reads_camel_and_snake_case_and_decimals() -> None:
    camel = parse_profile(payload(3, "TxProfile", [(0, 10.5), (60, 8)], stack=2, duration_s=300, tx=9))
    snake = parse_profile(
        {
            "charging_profile_id": 3,
            "stack_level": 2,
            "charging_profile_purpose": "TxProfile",
            "charging_profile_kind": "Absolute",
            "transaction_id": 9,
            "charging_schedule": {
                "charging_rate_unit": "A",
                "start_schedule": "2026-11-28T12:00:00Z",
                "duration": 300,
                "charging_schedule_period": [{"start_period": 0, "limit": Decimal("10.5")}, {"start_period": 60, "limit": 8}],
            },
        }
    )
    assert camel == snake
    assert camel.start_schedule == T0 and camel.duration_s == 300 and [p.limit for p in camel.periods] == [10.5, 8.0]


@pytest.mark.parametrize(
    "change",
    [
        {"chargingProfilePurpose": "Other"},
        {"chargingProfileKind": "Sometimes"},
        {"chargingProfileKind": "Recurring"},  # no recurrencyKind
        {"stackLevel": -1},
        {"stackLevel": True},
        {"chargingProfileId": "3"},
        {"transactionId": 5},  # only a TxProfile names a transaction
        {"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": []}},
        {"chargingSchedule": {"chargingRateUnit": "kW", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 5}]}},
        {"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 10, "limit": 5}]}},
        {"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": -1}]}},
        {"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": float("nan")}]}},
        {"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6, "numberPhases": 4}]}},
        {
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6}, {"startPeriod": 0, "limit": 8}],
            }
        },
        {"chargingSchedule": {"chargingRateUnit": "A", "startSchedule": "noon", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6}]}},
        {"validFrom": "2026-11-28T12:00:00Z", "validTo": "2026-11-28T11:00:00Z"},
    ],
)
def test_bad_profiles_raise(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_profile({**payload(1), **change})


def test_a_recurring_profile_needs_a_start() -> None:
    with pytest.raises(ValueError):
        parse_profile(payload(1, kind="Recurring", recurrency="Daily", start=None))


# --- installing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connector", "body", "tx_id", "status"),
    [
        (1, payload(1, "TxProfile"), None, "Rejected"),  # no transaction on the connector
        (1, payload(1, "TxProfile", tx=8), 7, "Rejected"),  # another transaction
        (1, payload(1, "TxProfile", tx=7), 7, "Accepted"),
        (1, payload(1, "TxProfile"), 7, "Accepted"),  # no transactionId: the running one
        (0, payload(1, "TxProfile"), 7, "Rejected"),
        (1, payload(1, "ChargePointMaxProfile"), None, "Rejected"),
        (0, payload(1, "ChargePointMaxProfile"), None, "Accepted"),
        (0, payload(1, "TxDefaultProfile"), None, "Accepted"),
        (3, payload(1, "TxDefaultProfile"), None, "Rejected"),  # the charger has two connectors
    ],
)
def test_install_accepts_or_rejects(connector: int, body: dict[str, Any], tx_id: int | None, status: str) -> None:
    assert ProfileStore(connectors=2).install(connector, parse_profile(body), tx_id) == status


def test_the_same_id_replaces_the_older_profile_even_on_another_connector() -> None:
    store = store_with((1, payload(5, limit=10)), (2, payload(5, limit=12)))
    assert store.profiles(1) == [] and [p.periods[0].limit for p in store.profiles(2)] == [12.0]
    assert limit(store, 1, connector=1) == MAX_A and limit(store, 1, connector=2) == 12


def test_the_same_stack_level_and_purpose_replaces_on_that_connector() -> None:
    store = store_with((1, payload(5, limit=10, stack=1)), (1, payload(6, limit=14, stack=1)), (2, payload(7, limit=9, stack=1)))
    assert [p.profile_id for p in store.profiles(1)] == [6] and limit(store, 1) == 14
    assert limit(store, 1, connector=2) == 9


# --- the limit in force ------------------------------------------------------------------------


def test_without_profiles_the_charger_gives_its_maximum() -> None:
    assert limit(ProfileStore(), 0) == MAX_A
    assert limit(ProfileStore(), 0, tx_id=None, tx_start=None) == MAX_A


def test_a_default_on_connector_zero_applies_to_every_connector_and_a_connector_default_wins() -> None:
    store = store_with((0, payload(1, limit=10)))
    assert limit(store, 5, connector=1) == 10 and limit(store, 5, connector=2, tx_id=None, tx_start=None) == 10
    store.install(2, parse_profile(payload(2, limit=13)))
    assert limit(store, 5, connector=2) == 13 and limit(store, 5, connector=1) == 10


def test_a_higher_stack_level_wins_and_a_lower_one_takes_over_when_it_ends() -> None:
    store = store_with((1, payload(1, limit=10, stack=0)), (1, payload(2, limit=20, stack=3, duration_s=60)))
    assert limit(store, 30) == 20
    assert limit(store, 60) == 10


def test_a_tx_profile_wins_over_the_default_and_falls_back_to_it_when_its_duration_runs_out() -> None:
    store = store_with(
        (1, payload(1, limit=6, stack=0)),
        (1, payload(2, "TxProfile", limit=25, stack=1, tx=7, start=at(-5), duration_s=30)),
    )
    assert limit(store, 0) == 25 and limit(store, 24.9) == 25
    assert limit(store, 25) == 6  # 30 s after its start, 5 s before now
    assert limit(store, 0, tx_id=8) == 6  # another transaction on the connector: not its profile
    assert limit(store, 0, tx_id=None, tx_start=None) == 6


def test_a_tx_profile_goes_with_its_transaction() -> None:
    store = store_with((1, payload(1, limit=6)), (1, payload(2, "TxProfile", limit=25, stack=1)))
    store.end_transaction(1)
    assert [p.profile_id for p in store.profiles(1)] == [1]


def test_a_lower_tx_profile_gives_the_limit_when_the_higher_one_has_run_out() -> None:
    store = store_with(
        (1, payload(1, "TxProfile", limit=8, stack=1)),
        (1, payload(2, "TxProfile", limit=20, stack=2, duration_s=10)),
    )
    assert limit(store, 5) == 20 and limit(store, 10) == 8


def test_relative_counts_from_the_transaction_start_and_absolute_from_start_schedule() -> None:
    relative = store_with((1, payload(1, "TxProfile", [(0, 10), (60, 20)], kind="Relative", start=None, duration_s=120)))
    absolute = store_with((1, payload(1, "TxProfile", [(0, 10), (60, 20)], start=T0, duration_s=120)))
    tx_start = at(100)
    assert limit(relative, 130, tx_start=tx_start) == 10 and limit(absolute, 130, tx_start=tx_start) == MAX_A
    assert limit(relative, 170, tx_start=tx_start) == 20 and limit(absolute, 70, tx_start=tx_start) == 20
    assert limit(relative, 220, tx_start=tx_start) == MAX_A  # 120 s after the transaction started


def test_an_absolute_schedule_in_the_future_gives_no_limit_yet() -> None:
    store = store_with((1, payload(1, limit=10, start=at(60))))
    assert limit(store, 30) == MAX_A and limit(store, 60) == 10


def test_absolute_without_start_counts_from_the_transaction() -> None:
    store = store_with((1, payload(1, "TxProfile", limit=10.5, start=None, duration_s=60)))
    assert limit(store, 30, tx_start=at(0)) == 10.5 and limit(store, 61, tx_start=at(0)) == MAX_A


def test_a_daily_profile_recurs() -> None:
    store = store_with((0, payload(1, "ChargePointMaxProfile", [(0, 8), (3600, 16)], kind="Recurring", recurrency="Daily", duration_s=7200)))
    day = 86_400
    assert [limit(store, s) for s in (10, 3700, 7300, day + 10, day + 3700, 3 * day + 7300)] == [8, 16, MAX_A, 8, 16, MAX_A]


def test_valid_from_and_valid_to_bound_a_profile() -> None:
    body = {**payload(1, limit=10), "validFrom": "2026-11-28T12:01:00Z", "validTo": "2026-11-28T12:02:00Z"}
    store = store_with((1, body))
    assert [limit(store, s) for s in (30, 90, 120)] == [MAX_A, 10, MAX_A]


def test_watts_turn_into_amps_on_the_phases_used() -> None:
    store = store_with((1, payload(1, limit=11_040, unit="W")))
    assert limit(store, 0) == pytest.approx(16)
    store = store_with((1, payload(1, limit=2_300, unit="W", phases=1)))
    assert limit(store, 0) == pytest.approx(10)


def test_charge_point_max_caps_every_connector() -> None:
    store = store_with((0, payload(1, "ChargePointMaxProfile", limit=12)), (1, payload(2, "TxProfile", limit=20, stack=1)))
    assert limit(store, 0) == 12 and limit(store, 0, connector=2, tx_id=None) == 12
    assert store.limit_a(1, at(0), 7, T0, 10.0, 3) == 10  # the charger's own maximum still counts


# --- clearing --------------------------------------------------------------------------------


def full_store() -> ProfileStore:
    return store_with(
        (0, payload(1, "ChargePointMaxProfile", limit=30)),
        (0, payload(2, limit=8)),
        (1, payload(3, limit=10, stack=1)),
        (1, payload(4, "TxProfile", limit=20, stack=2)),
        (2, payload(5, limit=12, stack=2)),
    )


def ids(store: ProfileStore) -> list[int]:
    return sorted(p.profile_id for profiles in store.installed.values() for p in profiles)


@pytest.mark.parametrize(
    ("filters", "left"),
    [
        ({"id": 3}, [1, 2, 4, 5]),
        ({"id": 3, "connector_id": 2}, [1, 2, 4, 5]),  # an id wins over the other fields
        ({"connector_id": 1}, [1, 2, 5]),
        ({"connector_id": 0}, [3, 4, 5]),
        ({"purpose": "TxDefaultProfile"}, [1, 4]),
        ({"stack_level": 2}, [1, 2, 3]),
        ({"connector_id": 1, "purpose": "TxDefaultProfile"}, [1, 2, 4, 5]),
        ({"purpose": "TxDefaultProfile", "stack_level": 2}, [1, 2, 3, 4]),
        ({}, []),
    ],
)
def test_clear_by_each_filter(filters: dict[str, Any], left: list[int]) -> None:
    store = full_store()
    assert store.clear(**filters) is True
    assert ids(store) == left


def test_clear_says_when_nothing_matched() -> None:
    store = full_store()
    assert store.clear(id=99) is False and store.clear(connector_id=2, purpose="TxProfile") is False
    assert ids(store) == [1, 2, 3, 4, 5]


# --- composite schedule ---------------------------------------------------------------------


def test_the_composite_schedule_shows_a_lease_then_the_default() -> None:
    store = store_with(
        (0, payload(1, limit=8)),
        (1, payload(2, "TxProfile", [(0, 20), (30, 14)], stack=1, start=at(-5), duration_s=65)),
    )
    periods = store.composite(1, T0, 120, 7, T0, MAX_A, 3)
    assert periods == ((0, 20.0), (25, 14.0), (60, 8.0))
    schedule = composite_schedule(periods, 120, "2026-11-28T12:00:00.000Z", "W", 3)
    assert schedule["charging_schedule_period"][0] == {"start_period": 0, "limit": 13_800.0}


# --- reaction time, status and meter ------------------------------------------------------


def test_a_new_limit_shows_only_after_the_reaction_time_up_or_down() -> None:
    state = follow_limit(Follow(32.0), 10.0, now_s=100.0, reaction_s=2.0)
    assert state.applied_a == 32.0
    assert follow_limit(state, 10.0, 101.9, 2.0).applied_a == 32.0
    state = follow_limit(state, 10.0, 102.0, 2.0)
    assert state == Follow(10.0)
    raised = follow_limit(state, 16.0, 110.0, 2.0)
    assert raised.applied_a == 10.0 and follow_limit(raised, 16.0, 112.0, 2.0).applied_a == 16.0
    # a target that changes again restarts the wait; one that goes back cancels it
    again = follow_limit(follow_limit(raised, 20.0, 111.0, 2.0), 20.0, 112.5, 2.0)
    assert again.applied_a == 10.0 and again.pending == (20.0, 113.0)
    assert follow_limit(again, 10.0, 112.6, 2.0) == Follow(10.0)


def test_status_and_plain_draw() -> None:
    assert [charging_status(5.9, False), charging_status(6.0, True), charging_status(16, False)] == [
        "SuspendedEVSE",
        "SuspendedEV",
        "Charging",
    ]
    assert plain_draw(20, 16, 3, 3) == (16 * 230 * 3, (16, 16, 16))
    assert plain_draw(20, 16, 1, 3) == (16 * 230, (16, 0.0, 0.0))
    assert plain_draw(5, 16, 3, 3) == (0.0, (0.0, 0.0, 0.0))
    values = sampled_values(3680.0, (16.0, 0.0, 0.0), 1234.4, 20.0)
    assert [v["measurand"] for v in values].count("Current.Import") == 3 and values[3]["value"] == "3680"


# --- properties -------------------------------------------------------------------------------

_purposes = st.sampled_from(["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"])
_profiles = st.builds(
    lambda pid, purpose, stack, kind, limit_a, start_s, duration_s, unit: (
        0 if purpose == "ChargePointMaxProfile" else 1,
        payload(
            pid,
            purpose,
            limit_a * (690 if unit == "W" else 1),
            stack=stack,
            kind=kind,
            start=None if kind == "Relative" else at(start_s),
            duration_s=duration_s,
            unit=unit,
            recurrency="Daily" if kind == "Recurring" else None,
        ),
    ),
    st.integers(1, 6),
    _purposes,
    st.integers(0, 3),
    st.sampled_from(["Absolute", "Relative", "Recurring"]),
    st.floats(0, 100, allow_nan=False),
    st.integers(-3600, 3600),
    st.none() | st.integers(0, 7200),
    st.sampled_from(["A", "W"]),
)


@settings(max_examples=300, deadline=None)
@given(
    installs=st.lists(_profiles, max_size=8),
    now_s=st.integers(-7200, 200_000),
    max_a=st.floats(6, 80, allow_nan=False),
    tx=st.booleans(),
)
def test_the_limit_never_exceeds_the_charger_maximum_nor_goes_below_zero(
    installs: list[tuple[int, dict[str, Any]]], now_s: int, max_a: float, tx: bool
) -> None:
    store = ProfileStore(connectors=2)
    for connector, body in installs:
        store.install(connector, parse_profile(body), 7 if tx else None)
    tx_id, tx_start = (7, at(0)) if tx else (None, None)
    for connector in (0, 1, 2):
        assert 0.0 <= store.limit_a(connector, at(now_s), tx_id, tx_start, max_a, 3) <= max_a
    periods = store.composite(1, at(now_s), 86_400, tx_id, tx_start, max_a, 3)
    assert periods[0][0] == 0 and all(0 <= a <= max_a for _, a in periods)
    assert [s for s, _ in periods] == sorted({s for s, _ in periods})


@settings(max_examples=200, deadline=None)
@given(
    default_a=st.floats(0, 32, allow_nan=False),
    lease_a=st.floats(0, 32, allow_nan=False),
    lease_s=st.integers(1, 3600),
    after_s=st.integers(0, 3600),
)
def test_a_lease_that_ran_out_always_falls_back_to_the_default(default_a: float, lease_a: float, lease_s: int, after_s: int) -> None:
    store = store_with(
        (1, payload(1, limit=default_a, start=at(-7200))),
        (1, payload(2, "TxProfile", limit=lease_a, stack=1, start=at(-5), duration_s=lease_s)),
    )
    now_s = lease_s - 5 + after_s
    assert limit(store, now_s) == default_a
    if lease_s > 5:
        assert limit(store, 0) == lease_a


def test_a_deeper_decrease_on_the_way_keeps_the_first_ones_due_time():
    state = follow_limit(Follow(16.0), 12.0, 0.0, 10.0)
    state = follow_limit(state, 11.0, 4.0, 10.0)  # the battery's offer fell again before the charger reacted
    assert follow_limit(state, 11.0, 9.9, 10.0).applied_a == 16.0
    assert follow_limit(state, 11.0, 10.0, 10.0).applied_a == 11.0
    # a rise after a decrease waits its own reaction time
    state = follow_limit(Follow(16.0), 12.0, 0.0, 10.0)
    state = follow_limit(state, 14.0, 4.0, 10.0)
    assert follow_limit(state, 14.0, 10.0, 10.0).applied_a == 16.0


# --- the OCPP 2.0.1 shape ---------------------------------------------------------------------


def payload201(profile_id: int, purpose: str = "TxDefaultProfile", limit: float = 16.0, *, tx: str | None = None, **kw: Any) -> dict[str, Any]:
    """A 2.0.1 chargingProfile: `id`, a list of schedules (each with its own id), a string transactionId."""
    v16 = payload(profile_id, "ChargePointMaxProfile" if purpose == "ChargingStationMaxProfile" else purpose, limit, **kw)
    body = {
        "id": profile_id,
        "stackLevel": v16["stackLevel"],
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": v16["chargingProfileKind"],
        "chargingSchedule": [{"id": 1, **v16["chargingSchedule"]}],
    }
    return body | ({"transactionId": tx} if tx is not None else {})


def test_a_2_0_1_profile_reads_like_its_1_6_twin() -> None:
    twin = parse_profile(payload(3, "TxProfile", 10.5, stack=2, duration_s=300, tx=9))
    profile = parse_profile201(payload201(3, "TxProfile", 10.5, stack=2, duration_s=300, tx="a1b2"))
    assert profile.transaction_id == "a1b2" and profile == replace(twin, transaction_id="a1b2")
    snake = parse_profile201({
        "id": 3, "stack_level": 2, "charging_profile_purpose": "TxProfile", "charging_profile_kind": "Absolute",
        "transaction_id": "a1b2",
        "charging_schedule": [{"id": 1, "charging_rate_unit": "A", "start_schedule": "2026-11-28T12:00:00Z", "duration": 300,
                               "charging_schedule_period": [{"start_period": 0, "limit": Decimal("10.5")}]}],
    })
    assert snake == profile
    station_max = parse_profile201(payload201(4, "ChargingStationMaxProfile", 20.0))
    assert station_max.purpose == "ChargePointMaxProfile" and purpose201("ChargingStationMaxProfile") == "ChargePointMaxProfile"
    assert purpose201("TxProfile") == "TxProfile" and purpose201(None) is None


def test_a_2_0_1_profile_follows_its_first_schedule() -> None:
    body = payload201(5, limit=8.0)
    body["chargingSchedule"].append({"id": 2, "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 30}]})
    assert [p.limit for p in parse_profile201(body).periods] == [8.0]


@pytest.mark.parametrize(
    "body",
    [
        payload201(1, "TxProfile"),  # a 2.0.1 TxProfile names its transaction
        payload201(1, "TxProfile", tx=""),
        payload201(1, "TxProfile", tx="x" * 37),
        payload201(1, "TxDefaultProfile", tx="a1b2"),
        {**payload201(1, "TxProfile", tx="a1b2"), "transactionId": 7},
        {**payload201(1), "chargingProfilePurpose": "ChargingStationExternalConstraints"},
        {**payload201(1), "chargingProfilePurpose": "ChargePointMaxProfile"},  # 1.6 words
        {**payload201(1), "chargingSchedule": []},
        {**payload201(1), "chargingSchedule": payload(1)["chargingSchedule"]},  # one object: the 1.6 shape
        {**payload201(1), "stackLevel": -1},
        "TxProfile",
    ],
)
def test_bad_2_0_1_profiles_raise(body: Any) -> None:
    with pytest.raises(ValueError):
        parse_profile201(body)


def test_2_0_1_transactions_are_named_by_strings_and_evse_0_defaults_apply_everywhere() -> None:
    store = ProfileStore(connectors=2)
    assert store.install(0, parse_profile201(payload201(1, limit=8.0)), None) == "Accepted"
    lease = parse_profile201(payload201(11, "TxProfile", 20.0, stack=1, start=at(-5), duration_s=65, tx="tx-1"))
    assert store.install(1, lease, "tx-2") == "Rejected"
    assert store.install(1, lease, "tx-1") == "Accepted"
    assert store.limit_a(1, at(0), "tx-1", T0, MAX_A, 3) == 20.0
    assert store.limit_a(1, at(0), "tx-2", T0, MAX_A, 3) == 8.0  # another transaction: the default
    assert store.limit_a(2, at(0), None, None, MAX_A, 3) == 8.0
    assert store.limit_a(1, at(60), "tx-1", T0, MAX_A, 3) == 8.0  # the lease ran out
    assert store.install(0, parse_profile201(payload201(2, "ChargingStationMaxProfile", 6.0)), None) == "Accepted"
    assert store.limit_a(1, at(0), "tx-1", T0, MAX_A, 3) == 6.0
    assert store.clear(purpose=purpose201("ChargingStationMaxProfile")) and store.limit_a(1, at(0), "tx-1", T0, MAX_A, 3) == 20.0


def test_the_2_0_1_composite_schedule_and_meter_values() -> None:
    schedule = composite_schedule201(((0, 20.0), (60, 8.0)), 120, 1, "2026-11-28T12:00:00.000Z", "W", 3)
    assert schedule == {
        "evse_id": 1, "duration": 120, "schedule_start": "2026-11-28T12:00:00.000Z", "charging_rate_unit": "W",
        "charging_schedule_period": [{"start_period": 0, "limit": 13_800.0}, {"start_period": 60, "limit": 5_520.0}],
    }
    values = sampled_values(3680.0, (16.0, 0.0, 0.0), 1234.4, 20.0)
    every = sampled_values201(values)
    assert len(every) == len(values) and all(isinstance(v["value"], float) for v in every)
    assert every[0] == {"value": 16.0, "measurand": "Current.Import", "phase": "L1", "unitOfMeasure": {"unit": "A"}}
    energy = sampled_values201(values, ("Energy.Active.Import.Register",), "Transaction.End")
    assert energy == [{"value": 1234.0, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"},
                       "context": "Transaction.End"}]
    assert sampled_values201(values, ()) == []
