"""Other people's charging profiles on a charger (control.md, "Other people's profiles"): the real
daemon and a simulated OCPP 1.6 charger that already holds the operator's ChargePointMaxProfile with
id 1 at stack level 0 when it connects, then gets the operator's TxProfile above the lease's stack
level through the admin API during a session.

The gateway must leave both alone (it clears only its own ids), never lease more than they allow,
and count the connector at the operator's TxProfile while the charger follows that one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from drivers.contract.clock import wire_ts
from drivers.sim.charger16 import SimCharger
from drivers.sim.profiles import parse_profile
from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration

OPERATOR_MAX_A = 10.0
OPERATOR_TX_A = 8.0


def operator_max() -> dict:
    return {
        "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "ChargePointMaxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"startSchedule": wire_ts(datetime.now(UTC) - timedelta(hours=1)),
                             "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": OPERATOR_MAX_A}]},
    }


def gateway_leases(sim: SimCharger, connector: int) -> list:
    return [p for p in sim.profiles.profiles(connector) if p.purpose == "TxProfile" and p.profile_id >= 990000]


CONTROL = "period_s = 0.5\nreaction_s = 2\nlease_s = 60\nmeter_interval_s = 1\n"


async def test_an_operators_profiles_stay_and_bound_what_the_car_gets(make_daemon):
    d = make_daemon(chargers=1, grid_limit_a=32, control=CONTROL)
    d.start()
    sim = SimCharger(d.ocpp_url, "CP01", connectors=2, meter_interval_s=1.0, reaction_s=0.5)
    assert sim.profiles.install(0, parse_profile(operator_max())) == "Accepted"
    most_a = {"v": 0.0}

    async def watch() -> None:
        while True:
            most_a["v"] = max([most_a["v"], *(sim.applied_a(c) for c in sim.transactions)])
            await asyncio.sleep(0.05)

    try:
        async with asyncio.TaskGroup() as tg:
            ready = asyncio.Event()
            run = tg.create_task(sim.run(ready), name="sim-CP01")
            await asyncio.wait_for(ready.wait(), 10)
            watcher = tg.create_task(watch(), name="watch")
            try:
                # set up: its safe default (16 A a connector) beside the operator's profile, not instead of it
                await wait_until(lambda: any(p.profile_id >= 990000 for p in sim.profiles.profiles(1)), 15, "the safe default")
                await wait_until(lambda: "kept as a bound" in d.log(), 10, "the operator's profile found")
                await sim.plug_in(1, car_max_a=32.0)
                await wait_until(lambda: bool(gateway_leases(sim, 1)), 20, "a lease")
                await asyncio.sleep(3)
                lease_a = max(period.limit for p in gateway_leases(sim, 1) for period in p.periods)
                assert lease_a <= OPERATOR_MAX_A, f"a lease of {lease_a} A under the operator's {OPERATOR_MAX_A} A"
                assert [p.profile_id for p in sim.profiles.profiles(0)] == [1]

                # the operator's TxProfile at stack level 5, above the lease: the charger follows it
                tx = sim.transactions[1]
                profile = {"connectorId": 1, "csChargingProfiles": {
                    "chargingProfileId": 77, "transactionId": tx, "stackLevel": 5, "chargingProfilePurpose": "TxProfile",
                    "chargingProfileKind": "Relative",
                    "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": OPERATOR_TX_A}]}}}
                status, answer = await d.aapi("POST", "/api/chargers/CP01/call/SetChargingProfile", profile)
                assert (status, answer) == (200, {"status": "Accepted"})
                await wait_until(lambda: sim.applied_a(1) <= OPERATOR_TX_A + 0.01, 10, "the car at the operator's TxProfile")
                status, snap = await d.aapi("GET", "/api/status")
                bay = next(b for b in snap["bays"] if b["id"] == "B01")
                assert bay["limit_a"] is not None and bay["limit_a"] >= OPERATOR_TX_A, bay  # counted at its own limit
                await asyncio.sleep(2)
                assert 77 in [p.profile_id for p in sim.profiles.profiles(1)]
                await sim.unplug(1)
                await asyncio.sleep(2)
                assert [p.profile_id for p in sim.profiles.profiles(0)] == [1]
            finally:
                watcher.cancel()
                run.cancel()
        assert most_a["v"] <= OPERATOR_MAX_A + 0.01, f"the car was allowed {most_a['v']} A"
        log = d.log()
        assert "kept as a bound" in log
        print(f"\noperator's ChargePointMaxProfile {OPERATOR_MAX_A:g} A (id 1, stack level 0) kept; lease at most "
              f"{lease_a:g} A; most the car was allowed {most_a['v']:.1f} A")
    finally:
        d.stop()


async def test_a_201_station_reports_the_operators_profiles_and_they_bound_the_lease(make_daemon):
    """A 2.0.1 station holding the operator's ChargingStationMaxProfile (id 1, stack level 0, 10 A) and
    TxDefaultProfile above the lease's stack level (id 2, stack level 3, 9 A): the gateway lists them
    (GetChargingProfiles, answered by ReportChargingProfiles), leaves both, and leases at most 9 A."""
    from drivers.sim.charger201 import SimCharger201
    from drivers.sim.profiles import parse_profile201

    def profile(profile_id: int, purpose: str, stack: int, limit: float) -> dict:
        return {"id": profile_id, "stackLevel": stack, "chargingProfilePurpose": purpose, "chargingProfileKind": "Absolute",
                "chargingSchedule": [{"id": profile_id, "chargingRateUnit": "A",
                                      "startSchedule": wire_ts(datetime.now(UTC) - timedelta(hours=1)),
                                      "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}]}

    d = make_daemon(chargers=1, grid_limit_a=32, control=CONTROL)
    d.start()
    sim = SimCharger201(d.ocpp_url, "CP01", connectors=2, meter_interval_s=1.0, reaction_s=0.5)
    assert sim.profiles.install(0, parse_profile201(profile(1, "ChargingStationMaxProfile", 0, 10.0))) == "Accepted"
    assert sim.profiles.install(0, parse_profile201(profile(2, "TxDefaultProfile", 3, 9.0))) == "Accepted"
    most_a = 0.0
    try:
        async with asyncio.TaskGroup() as tg:
            ready = asyncio.Event()
            run = tg.create_task(sim.run(ready), name="sim-CP01")
            await asyncio.wait_for(ready.wait(), 10)
            try:
                await wait_until(lambda: d.log().count("kept as a bound") >= 2, 15, "both of the operator's profiles found")
                await sim.plug_in(1, car_max_a=32.0)
                await wait_until(lambda: bool(gateway_leases(sim, 1)), 20, "a lease")
                for _ in range(60):
                    most_a = max([most_a, *(sim.applied_a(c) for c in sim.transactions)])
                    await asyncio.sleep(0.05)
                lease_a = max(period.limit for p in gateway_leases(sim, 1) for period in p.periods)
                assert lease_a <= 9.0, f"a lease of {lease_a} A under the operator's 9 A"
                await sim.unplug(1)
                await asyncio.sleep(1)
                assert sorted(p.profile_id for p in sim.profiles.profiles(0) if p.profile_id < 990000) == [1, 2]
            finally:
                run.cancel()
        assert most_a <= 9.0 + 0.01, f"the car was allowed {most_a} A"
    finally:
        d.stop()
