"""What a charger already holds is not sent again (control.md, "Charger set-up on connect"): the real
daemon and a simulated OCPP 1.6 charger that, like a real one, boots when it starts and not when it
merely reconnects. A reconnect, also to a restarted daemon, sends no set-up; a BootNotification (a
reset) sends all of it again; the connectors the charger did not report are asked for after 5 s."""

from __future__ import annotations

import asyncio

import pytest

from drivers.sim.charger16 import SimCharger
from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration

SET_UP = ("SetChargingProfile", "ClearChargingProfile", "ChangeConfiguration", "GetConfiguration", "GetCompositeSchedule")


def set_up_requests(sim: SimCharger, after: int = 0) -> list[str]:
    return [action for action, _ in sim.received[after:] if action in SET_UP]


async def test_a_reconnect_sends_no_set_up_and_a_boot_sends_all_of_it(make_daemon):
    d = make_daemon(chargers=1, grid_limit_a=32, control="period_s = 0.5\nmeter_interval_s = 5\n")
    d.start()
    sim = SimCharger(d.ocpp_url, "CP01", connectors=2, meter_interval_s=1.0)
    sim.boot_on_reconnect = False
    try:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(sim.run(asyncio.Event()), name="sim-CP01")
            try:
                await wait_until(lambda: "charger CP01 set up (" in d.log(), 15, "the first set-up")
                first = set_up_requests(sim)
                assert first.count("SetChargingProfile") == 2 and "ChangeConfiguration" in first

                # the daemon restarts (the charger stays up): it remembered what the charger holds
                mark = len(sim.received)
                d.stop()
                d.start()
                await wait_until(lambda: d.log().count("charger CP01 set up (") >= 1 and sim.connected, 20, "set up again")
                await asyncio.sleep(1)
                assert set_up_requests(sim, mark) == [], sim.received[mark:]
                assert "it holds all of it already, nothing sent" in d.log()
                # it did not report its connectors on this connection: asked for, after 5 s, in one request
                await wait_until(lambda: any(a == "TriggerMessage" for a, _ in sim.received[mark:]), 10, "the status asked")
                assert [p for a, p in sim.received[mark:] if a == "TriggerMessage"] == [{"requestedMessage": "StatusNotification"}]

                # a reset: the charger boots, and everything goes out again
                mark = len(sim.received)
                status, answer = await d.aapi("POST", "/api/chargers/CP01/call/Reset", {"type": "Soft"})
                assert (status, answer) == (200, {"status": "Accepted"})
                await wait_until(lambda: set_up_requests(sim, mark).count("SetChargingProfile") >= 2, 20, "the set-up after the boot")
                print(f"\nset-up requests: first connect {len(first)}, reconnect to a restarted daemon 0, "
                      f"after a boot {len(set_up_requests(sim, mark))}")
            finally:
                run.cancel()
    finally:
        d.stop()
