"""Smart charging's calls to chargers, against a scripted charger: set-up, leases, refusals, failures."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from config.loader import load_config_text
from controller.shell.charging import (
    MAX_MODE,
    NONE_MODE,
    SETUP_MODE,
    TX_MODE,
    SmartCharging,
)
from drivers.contract.backend import (
    CallErrorReceived,
    CallTimedOut,
    ChargerNotConnected,
)
from drivers.contract.orders import Order
from drivers.ocpp import profiles16 as p16

T0 = datetime(2026, 11, 28, 13, 0, tzinfo=timezone.utc)
CONFIG = """
[site]
id = "t"
[grid]
limit_a = 32
[control]
meter_interval_s = 5
[[chargers]]
id = "CP01"
max_current_a = 32
connectors = 2
[[chargers]]
id = "CP02"
max_current_a = 32
connectors = 2
phase_rotation = "STR"
[[bays]]
id = "B01"
charger = "CP01"
connector = 1
[[bays]]
id = "B02"
charger = "CP01"
connector = 2
[[bays]]
id = "B03"
charger = "CP02"
connector = 1
[[bays]]
id = "B04"
charger = "CP02"
connector = 2
"""


class ScriptedCharger:
    """Answers calls by a rule per action; records every call."""

    def __init__(self, rules=None) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        self.rules = rules or {}

    async def call(self, charger_id, action, payload):
        self.calls.append((charger_id, action, payload))
        rule = self.rules.get(action)
        if callable(rule):
            return rule(payload)
        if isinstance(rule, Exception):
            raise rule
        if action == "GetConfiguration":
            return {"configurationKey": [{"key": "ConnectorPhaseRotation", "readonly": True, "value": "0.TRS"}]}
        return {"status": rule or "Accepted"}

    def connected(self) -> dict[str, str]:
        return {}  # a 1.6 charger as far as the dialect goes

    def actions(self):
        return [a for _, a, _ in self.calls]


async def running(calls, clock=lambda: T0):
    cfg = load_config_text(CONFIG, "t.toml", None)
    ch = SmartCharging(cfg, calls, clock, asyncio.Event())
    task = asyncio.create_task(ch.run())
    await asyncio.sleep(0)
    return ch, task


async def settle(ch, until, timeout_s=2.0):
    async with asyncio.timeout(timeout_s):
        while not until():
            await asyncio.sleep(0.01)


async def stop(task):
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_set_up_on_connect_sets_the_safe_default_meter_values_and_reads_the_rotation():
    calls = ScriptedCharger()
    ch, task = await running(calls)
    try:
        assert ch.mode("CP01") == SETUP_MODE and ch.fixed_a("CP01/1", T0) == 32.0  # not set up: its maximum
        ch.charger_seen("CP01", T0, True)
        await settle(ch, lambda: ch.mode("CP01") == TX_MODE)
        assert calls.actions()[:3] == ["SetChargingProfile", "SetChargingProfile", "ClearChargingProfile"]
        # only its own profiles, by id: never "whatever TxDefaultProfile it holds"
        assert [p for _, a, p in calls.calls if a == "ClearChargingProfile"] == [{"id": p16.MAX_PROFILE_ID}]
        ids = [p["csChargingProfiles"]["chargingProfileId"] for _, a, p in calls.calls if a == "SetChargingProfile"]
        assert all(i in p16.OWN_PROFILE_IDS for i in ids) and len(set(ids)) == 2
        defaults = [p for _, a, p in calls.calls if a == "SetChargingProfile"]
        assert [d["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] for d in defaults] == [8.0, 8.0]
        settings = {p["key"]: p["value"] for _, a, p in calls.calls if a == "ChangeConfiguration"}
        assert settings["MeterValueSampleInterval"] == "5" and "Current.Import" in settings["MeterValuesSampledData"]
        assert ch.rotations["CP01/1"] == "TRS" and ch.rotations["CP02/1"] == "STR"  # read, or from the config
        assert ch.fixed_a("CP01/1", T0) == 8.0
    finally:
        await stop(task)


async def test_a_charger_that_refuses_the_safe_default_gets_a_max_profile_or_counts_at_its_maximum():
    calls = ScriptedCharger({"SetChargingProfile": lambda p: {
        "status": "Accepted" if p["csChargingProfiles"]["chargingProfilePurpose"] == "ChargePointMaxProfile" else "Rejected"}})
    ch, task = await running(calls)
    try:
        ch.charger_seen("CP01", T0, True)
        await settle(ch, lambda: ch.setups["CP01"].done)
        assert ch.mode("CP01") == MAX_MODE and "ChargePointMaxProfile" in ch.setups["CP01"].problem
        cp_max = [p for _, a, p in calls.calls if a == "SetChargingProfile"][-1]["csChargingProfiles"]
        assert cp_max["chargingProfileKind"] == "Absolute" and cp_max["chargingSchedule"]["startSchedule"].endswith("Z")
        # one car may take the whole charger's share under a ChargePointMaxProfile
        assert ch.fixed_a("CP01/1", T0) == 16.0
    finally:
        await stop(task)
    calls = ScriptedCharger({"SetChargingProfile": CallErrorReceived("NotSupported", "no smart charging")})
    ch, task = await running(calls)
    try:
        ch.charger_seen("CP02", T0, True)
        await settle(ch, lambda: ch.setups["CP02"].done)
        assert ch.mode("CP02") == NONE_MODE and ch.fixed_a("CP02/2", T0) == 32.0
    finally:
        await stop(task)


async def test_a_set_up_without_answer_is_retried_and_counts_at_the_maximum_meanwhile():
    answers = iter([CallTimedOut("no answer")])

    def first_times_out(payload):
        err = next(answers, None)
        if err is not None:
            raise err
        return {"status": "Accepted"}

    calls = ScriptedCharger({"ClearChargingProfile": first_times_out})
    gate, waits = asyncio.Event(), []

    async def held_sleep(s):
        waits.append(s)
        await gate.wait()

    ch, task = await running(calls)
    ch._sleep = held_sleep
    try:
        ch.charger_seen("CP01", T0, True)
        await settle(ch, lambda: bool(waits))
        assert waits == [10.0] and "no answer" in ch.setups["CP01"].problem
        assert ch.mode("CP01") == SETUP_MODE and ch.fixed_a("CP01/1", T0) == 32.0
        gate.set()
        await settle(ch, lambda: ch.mode("CP01") == TX_MODE)
        assert ch.fixed_a("CP01/1", T0) == 8.0
    finally:
        await stop(task)


async def test_leases_refused_three_times_mean_the_fallback_and_a_lost_connection_counts_as_held():
    leases_refused = {"n": 0}

    def answer(p):
        purpose = p["csChargingProfiles"]["chargingProfilePurpose"]
        if purpose == "TxProfile":
            leases_refused["n"] += 1
            return {"status": "Rejected"}
        return {"status": "Accepted"}

    now = {"t": T0}
    calls = ScriptedCharger({"SetChargingProfile": answer})
    ch, task = await running(calls, clock=lambda: now["t"])
    try:
        ch.charger_seen("CP01", T0, True)
        await settle(ch, lambda: ch.mode("CP01") == TX_MODE)
        for i in range(3):
            assert ch.may_lease("CP01/1", now["t"])
            order = Order("CP01/1", 16.0, 16.0, "first")
            ch.book._entry("CP01/1").pending = (order, now["t"], 8.0)
            ch.send([order], {"CP01/1": 7}, now["t"])
            await settle(ch, lambda: ch.book._entry("CP01/1").pending is None)
            if i < 2:
                assert not ch.may_lease("CP01/1", now["t"]) and ch.mode("CP01") == TX_MODE
                now["t"] += timedelta(seconds=11)
        await settle(ch, lambda: ch.mode("CP01") == MAX_MODE)
        assert leases_refused["n"] == 3
    finally:
        await stop(task)
    calls = ScriptedCharger()
    ch, task = await running(calls)
    try:
        ch.charger_seen("CP02", T0, True)
        await settle(ch, lambda: ch.mode("CP02") == TX_MODE)
        calls.rules["SetChargingProfile"] = ChargerNotConnected("gone")
        order = Order("CP02/1", 20.0, 20.0, "first")
        ch.book._entry("CP02/1").pending = (order, T0, 8.0)
        ch.send([order], {"CP02/1": 9}, T0)
        await settle(ch, lambda: ch.book._entry("CP02/1").pending is None)
        assert ch.book.in_force_a("CP02/1", T0 + timedelta(seconds=1)) == 20.0  # it may hold it
    finally:
        await stop(task)


async def test_a_bug_in_one_call_task_does_not_end_smart_charging():
    calls = ScriptedCharger({"GetConfiguration": lambda p: {"configurationKey": 5}})
    ch, task = await running(calls)
    try:
        ch.charger_seen("CP01", T0, True)
        await settle(ch, lambda: ch.mode("CP01") == TX_MODE)  # a malformed answer is ignored
        calls.rules["SetChargingProfile"] = lambda p: 1 / 0
        order = Order("CP01/1", 16.0, 16.0, "first")
        ch.book._entry("CP01/1").pending = (order, T0, 8.0)
        ch.send([order], {"CP01/1": 3}, T0)
        await settle(ch, lambda: ch.book._entry("CP01/1").pending is None)
        assert not task.done()
        assert ch.book.in_force_a("CP01/1", T0) == 16.0  # unknown: counted as held
    finally:
        await stop(task)


def test_payload_limits_round_down_and_malformed_rotation_answers_are_ignored():
    prof = p16.safe_default(1, 16.66)["csChargingProfiles"]
    assert prof["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 16.6
    assert p16.phase_rotation({"configurationKey": 5}, 2) == {}
    assert p16.phase_rotation({"configurationKey": [5, {"key": "ConnectorPhaseRotation", "value": None}]}, 2) == {}


async def test_a_lease_taken_back_leaves_the_safe_default():
    calls = ScriptedCharger()
    ch, task = await running(calls)
    try:
        ch.charger_seen("CP01", T0, True)
        await settle(ch, lambda: ch.mode("CP01") == TX_MODE)
        order = Order("CP01/2", 20.0, 20.0, "first")
        ch.book._entry("CP01/2").pending = (order, T0, 8.0)
        ch.send([order], {"CP01/2": 5}, T0)
        await settle(ch, lambda: ch.book.lease_ends_at("CP01/2") is not None)
        ch.clear_lease("CP01/2")
        assert ch.book.in_force_a("CP01/2", T0) == 20.0  # until the charger confirms
        await settle(ch, lambda: ch.book.lease_ends_at("CP01/2") is None)
        assert calls.calls[-1][1:] == ("ClearChargingProfile", {"id": p16.lease_profile_id(2)})
        assert ch.book.in_force_a("CP01/2", T0) == 8.0
    finally:
        await stop(task)


class RecordingMemory:
    """The store's set-up memory, in a dict."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, str]] = {}

    async def put(self, charger_id, items, at):
        self.rows[charger_id] = dict(items)

    async def forget(self, charger_id):
        self.rows.pop(charger_id, None)


async def test_a_reconnect_resends_only_what_differs_and_a_boot_resends_everything():
    calls = ScriptedCharger()
    ch, task = await running(calls)
    ch.memory = memory = RecordingMemory()
    try:
        ch.charger_seen("CP01", T0, True)
        await settle(ch, lambda: ch.mode("CP01") == TX_MODE)
        first = len(calls.calls)
        assert first == 6  # two safe defaults, the old fallback cleared, two settings, the rotation
        assert memory.rows["CP01"]["meter"] == "5" and memory.rows["CP01"]["rotation:1"] == "TRS"

        # the same charger back on a new connection: it holds all of it
        ch.charger_seen("CP01", T0 + timedelta(minutes=1), True)
        await settle(ch, lambda: ch.setups["CP01"].done and ch.mode("CP01") == TX_MODE)
        assert len(calls.calls) == first and ch.rotations["CP01/1"] == "TRS"

        # a restarted daemon that remembered it sends nothing either
        await stop(task)
        ch, task = await running(calls)
        ch.memory, ch.accepted = memory, {k: dict(v) for k, v in memory.rows.items()}
        ch.charger_seen("CP01", T0 + timedelta(minutes=2), True)
        await settle(ch, lambda: ch.setups["CP01"].done)
        assert len(calls.calls) == first and ch.rotations["CP01/1"] == "TRS"

        # a different safe default (the config changed) goes out alone
        ch.safe_defaults["CP01/2"] = 6.0
        ch.charger_seen("CP01", T0 + timedelta(minutes=3), True)
        await settle(ch, lambda: ch.setups["CP01"].done)
        assert [(a, p["connectorId"]) for _, a, p in calls.calls[first:]] == [("SetChargingProfile", 2)]

        # a BootNotification: everything again
        now = len(calls.calls)
        ch.charger_seen("CP01", T0 + timedelta(minutes=3), True, booted_at=T0 + timedelta(minutes=4))
        await settle(ch, lambda: ch.setups["CP01"].done)
        assert calls.actions()[now:].count("SetChargingProfile") == 2 and "ChangeConfiguration" in calls.actions()[now:]
    finally:
        await stop(task)


async def test_after_a_fallback_the_max_profile_is_cleared_by_its_own_id_once_the_safe_default_is_taken():
    refuse = {"on": True}
    calls = ScriptedCharger({"SetChargingProfile": lambda p: {
        "status": "Accepted" if not refuse["on"] or p["csChargingProfiles"]["chargingProfilePurpose"] == "ChargePointMaxProfile"
        else "Rejected"}})
    ch, task = await running(calls)
    ch.memory = RecordingMemory()
    try:
        ch.charger_seen("CP01", T0, True)
        await settle(ch, lambda: ch.setups["CP01"].done)
        assert ch.mode("CP01") == MAX_MODE
        refuse["on"] = False
        mark = len(calls.calls)
        ch.charger_seen("CP01", T0 + timedelta(minutes=1), True)
        await settle(ch, lambda: ch.mode("CP01") == TX_MODE)
        clears = [p for _, a, p in calls.calls[mark:] if a == "ClearChargingProfile"]
        assert clears == [{"id": p16.MAX_PROFILE_ID}]
    finally:
        await stop(task)


async def test_in_conformance_mode_no_request_goes_out_and_chargers_count_at_their_maximum():
    calls = ScriptedCharger()
    cfg = load_config_text(CONFIG + "\n[ocpp]\nconformance_mode = true\n", "t.toml", None)
    ch = SmartCharging(cfg, calls, lambda: T0, asyncio.Event())
    task = asyncio.create_task(ch.run())
    await asyncio.sleep(0)
    try:
        ch.charger_seen("CP01", T0, True, booted_at=T0)
        await asyncio.sleep(0.1)
        ch.clear_lease("CP01/1")
        await asyncio.sleep(0.1)
        assert calls.calls == []
        assert ch.mode("CP01") == "conformance" and ch.fixed_a("CP01/1", T0) == 32.0
    finally:
        await stop(task)


async def test_an_operators_profile_request_voids_what_is_remembered_and_the_set_up_and_leases_go_out_again():
    from controller.shell.bounds import OperatorBounds

    calls = ScriptedCharger()
    ch, task = await running(calls)
    ch.memory, ch.bounds = RecordingMemory(), OperatorBounds()
    try:
        ch.charger_seen("CP01", T0, True)
        await settle(ch, lambda: ch.mode("CP01") == TX_MODE)
        first = len(calls.calls)
        ch.charger_seen("CP01", T0, True)
        assert len(calls.calls) == first  # nothing new: nothing goes out
        ch.bounds.operator_request("CP01")  # e.g. a TxDefaultProfile at stack level 0 replaced the safe default
        ch.charger_seen("CP01", T0, True)  # the same connection
        await settle(ch, lambda: ch.setups["CP01"].done and calls.actions()[first:].count("SetChargingProfile") == 2)
        assert ch.accepted["CP01"]["meter"] == "5"
    finally:
        await stop(task)


async def test_a_connector_counts_at_someone_elses_higher_default_where_no_lease_holds():
    from controller.shell.bounds import OperatorBounds
    from drivers.ocpp.found_profiles import read_profile

    ch, task = await running(ScriptedCharger())
    ch.bounds = OperatorBounds()
    try:
        ch.count_defaults(T0)
        assert ch.book.in_force_a("CP01/1", T0) == 8.0  # 32 A over 4 connectors
        ch.bounds.found(read_profile("CP01", 0, {
            "chargingProfileId": 3, "stackLevel": 3, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 40.0}]}}))
        ch.count_defaults(T0)
        assert ch.book.in_force_a("CP01/1", T0) == 32.0 and ch.book.in_force_a("CP02/1", T0) == 8.0  # at most its maximum
    finally:
        await stop(task)


async def test_the_safe_default_is_not_sent_where_the_operators_default_holds_its_slot():
    from controller.shell.bounds import OperatorBounds
    from drivers.ocpp.found_profiles import from_request, read_profile

    calls = ScriptedCharger()
    ch, task = await running(calls)
    ch.bounds = OperatorBounds()
    profile = {"chargingProfileId": 5, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Relative",
               "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0}]}}
    ch.bounds.found(read_profile("CP01", 1, {**profile, "chargingProfileId": 6}))  # the charger's word only: sent all the same
    ch.bounds.found(from_request("CP01", "SetChargingProfile", {"connectorId": 2, "csChargingProfiles": profile}))
    try:
        ch.charger_seen("CP01", T0, True)
        await settle(ch, lambda: ch.mode("CP01") == TX_MODE)
        assert [p["connectorId"] for _, a, p in calls.calls if a == "SetChargingProfile"] == [1]
    finally:
        await stop(task)
