"""The simulated charger's outbox: transaction messages kept while the gateway is gone, delivered in order.

The Outbox on its own first (no I/O), then the charger against a small OCPP 1.6 central system
on 127.0.0.1 that can go away and come back on the same port, as a killed daemon does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpp.exceptions import InternalError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import ServerConnection

from drivers.contract.clock import wire_ts
from drivers.sim import charger16 as sim_charger
from drivers.sim.charger16 import SimCharger
from drivers.sim.outbox import Outbox, SimChargerError, TxMessage
from tests.integration import sim_rig
from tests.integration.sim_rig import WAIT_S, eventually, open_rig

pytestmark = pytest.mark.integration

_quiet = logging.getLogger("tests.central")
_quiet.setLevel(logging.CRITICAL)  # a refused call is logged with a traceback by the library


# --- the outbox alone ------------------------------------------------------------------------


def msg(action: str = "MeterValues", tx: int | None = 7, at: str = "t", wh: float = 0.0) -> TxMessage:
    return TxMessage(action, None, 1, tx, at, wh)


def test_messages_leave_in_the_order_they_came() -> None:
    box = Outbox()
    a, b, c = box.put(msg(at="1")), box.put(msg(at="2")), box.put(msg("StopTransaction", at="3"))
    assert [m.seq for m in box.pending()] == [1, 2, 3] and box.last_seq == 3
    assert box.head() is a
    assert box.delivered(a) and box.head() is b
    assert box.withdraw(c) and not box.withdraw(c)
    assert box.pending() == [b]
    assert not box.delivered(c)  # withdrawn earlier: its late answer is not a delivery


def test_a_refused_message_is_tried_again_then_given_up() -> None:
    box = Outbox(attempts=3)
    a, b = box.put(msg(at="1")), box.put(msg(at="2"))
    assert not box.refused(a) and not box.refused(a)
    assert box.head() is a  # still first: newer messages wait behind it
    assert box.refused(a)
    assert box.pending() == [b] and box.dropped == [a]


def test_a_full_outbox_lets_the_oldest_meter_values_go_never_a_stop() -> None:
    box = Outbox(limit=3)
    stop, m1, m2 = box.put(msg("StopTransaction")), box.put(msg(at="1")), box.put(msg(at="2"))
    m3 = box.put(msg(at="3"))
    assert box.pending() == [stop, m2, m3] and box.dropped == [m1]
    full = Outbox(limit=2)
    full.put(msg("StopTransaction"))
    full.put(msg("StartTransaction", tx=None))
    with pytest.raises(SimChargerError):
        full.put(msg("StopTransaction"))


async def test_waiters_wake_when_messages_come_and_go() -> None:
    box = Outbox()
    got: list[TxMessage] = []
    settled: list[int] = []

    async def take() -> None:
        got.append(await box.next())

    async def settle(seq: int) -> None:
        await box.settled(seq)
        settled.append(seq)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(take())
        await asyncio.sleep(0)
        assert got == []
        a = box.put(msg(at="1"))
        b = box.put(msg(at="2"))
        tasks.create_task(settle(1))
        tasks.create_task(settle(2))
        await asyncio.sleep(0)
        assert got == [a] and settled == []  # next() leaves the message in
        box.delivered(a)
        await asyncio.sleep(0)
        assert settled == [1]
        box.withdraw(b)
    assert settled == [1, 2]
    await box.settled(5)  # nothing waiting: at once


# --- the charger against a central system that goes away and comes back -----------------------


@dataclass
class Heard(sim_rig.Heard):
    """What the central systems heard, and how they are to answer it."""

    hold: set[str] = field(default_factory=set)  # actions received and never answered
    refuse: Callable[[str, dict[str, Any]], bool] = lambda action, payload: False  # answer with a CALLERROR
    next_tx: int = 100


class Central(ChargePoint):
    """The central system's side of one charger connection."""

    def __init__(self, charger_id: str, connection: ServerConnection, heard: Heard) -> None:
        super().__init__(charger_id, connection, logger=_quiet)
        self.heard = heard

    async def _hear(self, action: str, payload: dict[str, Any]) -> None:
        self.heard.frames.append((action, payload))
        if action in self.heard.hold:
            await self.heard.released.wait()
            raise InternalError("held")  # sent on a closed link: never arrives
        if self.heard.refuse(action, payload):
            raise InternalError("refused")

    @on(Action.boot_notification)
    async def on_boot(self, **kw: Any) -> Any:
        await self._hear("BootNotification", kw)
        return call_result.BootNotification(current_time=wire_ts(datetime.now(UTC)), interval=300, status="Accepted")

    @on(Action.status_notification)
    async def on_status(self, **kw: Any) -> Any:
        await self._hear("StatusNotification", kw)
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, **kw: Any) -> Any:
        await self._hear("Authorize", kw)
        return call_result.Authorize(id_tag_info={"status": "Accepted"})

    @on(Action.start_transaction)
    async def on_start(self, **kw: Any) -> Any:
        await self._hear("StartTransaction", kw)
        self.heard.next_tx += 1
        return call_result.StartTransaction(transaction_id=self.heard.next_tx, id_tag_info={"status": "Accepted"})

    @on(Action.meter_values)
    async def on_meter_values(self, **kw: Any) -> Any:
        await self._hear("MeterValues", kw)
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    async def on_stop(self, **kw: Any) -> Any:
        await self._hear("StopTransaction", kw)
        return call_result.StopTransaction()


Rig = sim_rig.Rig[Heard, SimCharger, Central]


def rig(**sim_options: Any) -> AbstractAsyncContextManager[Rig]:
    options = {"meter_interval_s": 0.1, "reaction_s": 0.1, **sim_options}
    return open_rig(Central, "ocpp1.6", Heard(), lambda url: SimCharger(url, "CP01", **options))


async def set_profile(r: Rig, connector_id: int, profile: dict[str, Any]) -> str:
    answer = await r.send(call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile))
    return answer.status


def tx_frames(heard: Heard) -> list[tuple[str, int | None, str]]:
    """(action, transaction id, timestamp) of every transaction message heard, in arrival order."""
    out = []
    for action, p in heard.frames:
        if action == "MeterValues" and p.get("transaction_id") is not None:
            out.append((action, p["transaction_id"], p["meter_value"][0]["timestamp"]))
        elif action == "StopTransaction":
            out.append((action, p["transaction_id"], p["timestamp"]))
    return out


def _statuses_since_boot(heard: Heard) -> int:
    frames = [a for a, _ in heard.frames]
    boot = len(frames) - 1 - frames[::-1].index("BootNotification")
    return frames[boot:].count("StatusNotification")


async def test_what_happens_offline_is_delivered_in_order_after_the_reconnect_before_anything_newer() -> None:
    async with rig() as r:
        tx1, tx2 = await r.sim.plug_in(1), await r.sim.plug_in(2)
        await eventually(lambda: len(r.heard.of("MeterValues")) >= 4)
        await r.down()
        with pytest.raises(SimChargerError):
            await r.sim.plug_in(1)  # no transaction starts without the gateway
        await eventually(lambda: sum(m.connector == 1 for m in r.sim.outbox.pending()) >= 3)
        meter_stop = int(r.sim.energy_wh[1])
        await r.sim.stop(1)  # offline: returns at once, the stop waits in the outbox
        stop = r.sim.outbox.pending()[-1]
        assert (stop.action, stop.transaction_id, stop.meter_wh) == ("StopTransaction", tx1, meter_stop)
        await r.sim.unplug(1)
        await eventually(lambda: r.sim.outbox.last_seq >= stop.seq + 2)  # the gateway stays away a while longer
        queued = [(m.action, m.transaction_id, m.timestamp) for m in r.sim.outbox.pending()]
        heard_before = len(tx_frames(r.heard))

        back_at = wire_ts(datetime.now(UTC))
        await r.up()
        await eventually(lambda: len(tx_frames(r.heard)) >= heard_before + len(queued) + 2
                         and r.heard.frames[-1][0] != "BootNotification" and _statuses_since_boot(r.heard) >= 2)
        after = tx_frames(r.heard)[heard_before:]
        assert after[: len(queued)] == queued  # the backlog first, in its order
        assert all(a[2] > queued[-1][2] for a in after[len(queued):])  # then only newer readings
        assert {a[1] for a in after[len(queued):]} == {tx2}
        (stopped,) = r.heard.of("StopTransaction")
        assert stopped["timestamp"] == stop.timestamp < back_at and stopped["meter_stop"] == meter_stop
        # The statuses after the reconnect come once the backlog is in: connector 1 is then Available.
        frames = [a for a, _ in r.heard.frames]
        boot = len(frames) - 1 - frames[::-1].index("BootNotification")
        assert frames.index("StopTransaction", boot) < frames.index("StatusNotification", boot)
        statuses = [p for a, p in r.heard.frames[boot:] if a == "StatusNotification"]
        assert {"connector_id": 1, "status": "Available"}.items() <= statuses[0].items()
        # What the charger counts as confirmed is what the central systems heard (once each).
        heard = list(dict.fromkeys(tx_frames(r.heard)))
        confirmed = [(c.action, c.transaction_id, c.timestamp) for c in r.sim.confirmed if c.action != "StartTransaction"]
        assert confirmed == heard[: len(confirmed)] and len(confirmed) >= len(heard) - 1


async def test_a_message_the_link_took_with_it_is_sent_again_after_the_reconnect() -> None:
    async with rig(meter_interval_s=5.0) as r:
        tx = await r.sim.plug_in(1)
        r.heard.hold = {"StopTransaction"}
        async with asyncio.TaskGroup() as tasks:
            stopping = tasks.create_task(r.sim.stop(1))
            await eventually(lambda: len(r.heard.of("StopTransaction")) == 1)
            assert not stopping.done()  # waiting for the answer
            await r.down()
        assert [m.action for m in r.sim.outbox.pending()] == ["StopTransaction"]
        assert not any(c.action == "StopTransaction" for c in r.sim.confirmed)
        r.heard.hold = set()
        await r.up()
        await eventually(lambda: not r.sim.outbox.pending() and len(r.heard.of("StopTransaction")) == 2)
        first, again = r.heard.of("StopTransaction")
        assert first == again and first["transaction_id"] == tx  # the same message: time, reading
        assert [c.action for c in r.sim.confirmed] == ["StartTransaction", "StopTransaction"]


async def test_a_refused_message_is_tried_three_times_then_the_next_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_charger, "TX_RETRY_S", 0.01)
    async with rig(meter_interval_s=0.2) as r:
        await r.sim.plug_in(1)
        await eventually(lambda: len(r.heard.of("MeterValues")) >= 1)
        await r.down()
        await eventually(lambda: len(r.sim.outbox) >= 2)
        bad, good = r.sim.outbox.pending()[:2]
        tries = {"good": 0}

        def refuse(action: str, payload: dict[str, Any]) -> bool:
            at = payload.get("meter_value", [{}])[0].get("timestamp")
            if at == good.timestamp:
                tries["good"] += 1
                return tries["good"] == 1  # refused once, answered the second time
            return at == bad.timestamp

        r.heard.refuse = refuse
        heard_before = len(r.heard.frames)  # `bad` may have been heard once already, as the link went
        await r.up()
        await eventually(lambda: r.sim.outbox.head() is None or r.sim.outbox.head().seq > good.seq)
        stamps = [p["meter_value"][0]["timestamp"] for a, p in r.heard.frames[heard_before:] if a == "MeterValues"]
        assert stamps.count(bad.timestamp) == 3 and stamps.count(good.timestamp) == 2
        assert r.sim.outbox.dropped == [bad]
        confirmed = [c.timestamp for c in r.sim.confirmed]
        assert good.timestamp in confirmed and bad.timestamp not in confirmed
        # nothing newer overtook the refused one
        first_good = stamps.index(good.timestamp)
        assert all(s <= good.timestamp for s in stamps[:first_good])


async def plug_in_or_error(sim: SimCharger, connector: int) -> BaseException | None:
    """A car plugging in whose start may fail: the error instead of raising it."""
    try:
        await sim.plug_in(connector)
    except SimChargerError as exc:
        return exc
    return None


async def test_a_start_the_gateway_never_answers_is_not_a_transaction() -> None:
    async with rig(meter_interval_s=5.0) as r:
        r.heard.hold = {"StartTransaction"}

        async with asyncio.TaskGroup() as tasks:
            starting = tasks.create_task(plug_in_or_error(r.sim, 2))
            await eventually(lambda: len(r.heard.of("StartTransaction")) == 1)
            await r.down()
        assert "went before the start" in str(starting.result())
        assert r.sim.transactions == {} and r.sim.statuses[2] == "Preparing"
        assert r.sim.outbox.pending() == []
        r.heard.hold = set()
        await r.up()
        await eventually(lambda: r.sim.connected)
        tx = await r.sim.plug_in(2)  # the driver taps the card again
        assert len(r.heard.of("StartTransaction")) == 2 and r.sim.transactions == {2: tx}


async def test_without_the_gateway_the_lease_runs_out_and_the_log_shows_the_safe_default() -> None:
    async with rig() as r:
        tx = await r.sim.plug_in(1)
        now = datetime.now(UTC)
        default = {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
                   "chargingProfileKind": "Absolute",
                   "chargingSchedule": {"startSchedule": wire_ts(now), "chargingRateUnit": "A",
                                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8.0}]}}
        lease = {"chargingProfileId": 11, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "transactionId": tx,
                 "chargingProfileKind": "Absolute",
                 "chargingSchedule": {"startSchedule": wire_ts(now - timedelta(seconds=5)), "duration": 6,
                                      "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20.0}]}}
        assert await set_profile(r, 1, default) == "Accepted" and await set_profile(r, 1, lease) == "Accepted"
        await eventually(lambda: r.sim.applied_a(1) == 20.0)
        await r.down()
        await eventually(lambda: r.sim.applied_a(1) == 8.0)
        log = r.sim.applied_log[1]
        assert [a for _, a in log][-2:] == [20.0, 8.0]
        assert log[0][1] == 32.0  # the charger's maximum before any profile
        assert log[-1][0] - log[-2][0] >= 0.1 - 0.01  # the fall came after its reaction time at least
        assert [(c, a) for _, c, a in r.sim.applied_history if c == 1][-2:] == [(1, 20.0), (1, 8.0)]


async def test_a_call_the_link_took_with_it_ends_at_once_and_frees_the_link_for_the_next() -> None:
    async with rig(meter_interval_s=5.0) as r:
        r.heard.hold = {"Authorize"}


        async with asyncio.TaskGroup() as tasks:
            starting = tasks.create_task(plug_in_or_error(r.sim, 1))
            await eventually(lambda: len(r.heard.of("Authorize")) == 1)
            await r.down()
            async with asyncio.timeout(1.0):  # not the library's 10 s call timeout
                failed = await starting
        assert isinstance(failed, sim_charger.CallLost)
        r.heard.hold = set()
        await r.up()
        async with asyncio.timeout(WAIT_S):  # a call still holding the library's lock would block the boot
            await eventually(lambda: r.sim.connected)
            tx = await r.sim.plug_in(1)
        assert r.sim.transactions == {1: tx}
