"""Crash safety in the store and the controller: lease bounds written before leases go out, runs
that did not stop cleanly, sessions that ended while the gateway did not see it, and what a
restarted daemon counts for a connector."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import pytest

from config.loader import load_config_text
from controller.shell.charging import SmartCharging
from controller.shell.power import PowerControl
from controller.shell.reconcile import reconcile_sessions
from controller.shell.restart import RESTART_ALARM, start_run
from controller.shell.state import SquareState
from controller.shell.transactions import Transactions
from controller.store.database import Store
from controller.store.lease_journal import LeaseJournal
from controller.store.runs import RECONCILED, LeaseBound
from controller.store.schema import MIGRATIONS
from controller.store.secrets import TagVault
from drivers.contract import events as ev
from drivers.contract.orders import Order

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=UTC)
VAULT = TagVault(bytes(range(32)))
TAG = "04A2B3C4D5E6F7"

TOML = """
[site]
id = "testplein"
name = "Test"
timezone = "Europe/Amsterdam"
[grid]
phases = 3
limit_a = 32
[control]
lease_s = 60
[[chargers]]
id = "CP01"
max_current_a = 32
connectors = 2
[[bays]]
id = "B01"
charger = "CP01"
connector = 1
[[bays]]
id = "B02"
charger = "CP01"
connector = 2
"""


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def cfg(tmp_path: Path):
    return load_config_text(TOML, "t.toml", base_dir=tmp_path)


@pytest.fixture
async def store(tmp_path: Path):
    async with await Store.open(tmp_path / "db" / "laadplein.db", VAULT) as s:
        yield s


class NoCalls:
    async def call(self, charger_id, action, payload):
        raise AssertionError("no call expected")

    def connected(self) -> dict[str, str]:
        return {}


# ---- the lease journal -----------------------------------------------------------------------


class SpyLeases:
    """The store's lease bounds (`Store.leases`), recording what the journal writes."""

    def __init__(self, fail: bool = False) -> None:
        self.puts: list[LeaseBound] = []
        self.lowered: list[tuple[str, int, float]] = []
        self.dropped: list[tuple[str, int]] = []
        self.fail = fail

    async def put(self, bound, at):
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error")
        self.puts.append(bound)

    async def lower(self, key, tx_id, limit_a):
        self.lowered.append((key, tx_id, limit_a))

    async def drop(self, key, tx_id):
        self.dropped.append((key, tx_id))


class SpyStore:
    """A store with only its lease bounds, as the journal uses it."""

    def __init__(self, leases: SpyLeases) -> None:
        self.leases = leases


async def test_journal_writes_before_a_lease_goes_above_the_bound_and_never_holds_up_one_within_it() -> None:
    spy = SpyLeases()
    j = LeaseJournal(SpyStore(spy), lease_s=60)
    first = Order("CP01/1", 16.0, 16.0, "first")
    assert await j.before_send(first, "CP01", 1, 7, at(0), 8.0)
    assert [(b.limit_a, b.tx_id) for b in spy.puts] == [(16.0, 7)]
    # one lease ahead: the bound runs until the lease ends (start 5 s before sending) plus lease_s
    assert spy.puts[0].ends_at == at(60 - 5 + 60)
    # a decrease and a renewal within the bound need no write, before or after sending
    for order, t in ((Order("CP01/1", 10.0, 10.0, "decrease"), 10), (Order("CP01/1", 16.0, 16.0, "renew"), 40)):
        assert await j.before_send(order, "CP01", 1, 7, at(t), 8.0)
        await j.after_send(order, "CP01", 1, 7, at(t))
    assert len(spy.puts) == 1
    # a rise above the bound's limit is written first, even by 0.1 A
    assert await j.before_send(Order("CP01/1", 16.1, 16.1, "increase"), "CP01", 1, 7, at(50), 8.0)
    assert spy.puts[-1].limit_a == 16.1 and len(spy.puts) == 2
    # a decrease that runs past the bound's end goes out at once; the end is extended after it
    late = Order("CP01/1", 12.0, 12.0, "decrease")
    assert await j.before_send(late, "CP01", 1, 7, at(120), 8.0)  # the bound of t=50 ends at 165
    assert len(spy.puts) == 2
    await j.after_send(late, "CP01", 1, 7, at(120))
    assert spy.puts[-1].limit_a == 16.1 and spy.puts[-1].ends_at == at(120 + 55 + 60)
    # a new transaction starts from its own first lease
    assert await j.before_send(Order("CP01/1", 8.0, 8.0, "first"), "CP01", 1, 8, at(130), 8.0)
    assert (spy.puts[-1].limit_a, spy.puts[-1].tx_id) == (8.0, 8)


async def test_journal_lowers_the_bound_when_a_lower_lease_is_accepted_and_drops_it_at_the_end() -> None:
    spy = SpyLeases()
    j = LeaseJournal(SpyStore(spy), lease_s=60)
    await j.before_send(Order("CP01/1", 20.0, 20.0, "first"), "CP01", 1, 7, at(0), 8.0)
    down = Order("CP01/1", 9.0, 9.0, "decrease")
    await j.before_send(down, "CP01", 1, 7, at(5), 8.0)
    await j.accepted(down, 7)
    assert spy.lowered == [("CP01/1", 7, 9.0)] and j.bound("CP01/1").limit_a == 9.0
    await j.accepted(Order("CP01/1", 9.0, 9.0, "renew"), 7)  # not lower: nothing to write
    assert len(spy.lowered) == 1
    await j.ended("CP01/1")
    await j.ended("CP01/1")
    assert spy.dropped == [("CP01/1", 7)] and j.bound("CP01/1") is None


async def test_journal_that_cannot_write_lets_out_only_leases_within_the_bound_or_the_safe_default() -> None:
    j = LeaseJournal(SpyStore(SpyLeases(fail=True)), lease_s=60, restored={
        "CP01/1": LeaseBound("CP01/1", "CP01", 1, 7, 20.0, at(30)),
    })
    assert not await j.before_send(Order("CP01/1", 16.0, 16.0, "first"), "CP01", 2, 9, at(0), 8.0)
    assert not await j.before_send(Order("CP01/1", 24.0, 24.0, "increase"), "CP01", 1, 7, at(0), 8.0)
    assert await j.before_send(Order("CP01/1", 18.0, 18.0, "decrease"), "CP01", 1, 7, at(10), 8.0)
    # the bound has run out: only a lease a restart would count anyway (the safe default) goes
    assert not await j.before_send(Order("CP01/1", 10.0, 10.0, "decrease"), "CP01", 1, 7, at(40), 8.0)
    assert await j.before_send(Order("CP01/1", 8.0, 8.0, "first"), "CP01", 2, 9, at(0), 8.0)


# ---- the store ------------------------------------------------------------------------------------


async def test_lease_bounds_round_trip_and_are_dropped_with_a_reconciled_session(store: Store) -> None:
    tx = await store.start_transaction("CP01", 1, "B01", VAULT.hash_tag(TAG), 1000, at(0))
    await store.leases.put(LeaseBound("CP01/1", "CP01", 1, tx, 16.0, at(120)), at(1))
    await store.leases.lower("CP01/1", tx, 20.0)  # not lower: unchanged
    assert (await store.leases.all())["CP01/1"].limit_a == 16.0
    await store.leases.lower("CP01/1", tx, 10.0)
    assert (await store.leases.all())["CP01/1"] == LeaseBound("CP01/1", "CP01", 1, tx, 10.0, at(120))
    await store.add_meter_samples([("CP01", 1, tx, at(30), 10.0, 10.0, 10.0, 6900.0, 1500.0),
                                   ("CP01", 1, tx, at(60), 10.0, 10.0, 10.0, 6900.0, 2100.4)])
    row = await store.runs.reconcile_session(tx, at(90))
    assert row["meter_stop_wh"] == 2100 and row["energy_wh"] == 1100
    assert await store.leases.all() == {}
    assert await store.runs.reconcile_session(tx, at(91)) is None  # no longer open
    s = await store.session(tx)
    assert (s["stopped"], s["stop_reason"], s["energy_wh"]) == ("2026-11-28T13:01:30.000Z", RECONCILED, 1100)
    # the charger's own StopTransaction, arriving late, replaces the gateway's guess ...
    s = await store.stop_transaction(tx, 2500, at(80), "EVDisconnected")
    assert (s["stop_reason"], s["energy_wh"], s["stopped"]) == ("EVDisconnected", 1500, "2026-11-28T13:01:20.000Z")
    # ... but a real stop is never replaced
    s = await store.stop_transaction(tx, 9999, at(85), "Local")
    assert s["meter_stop_wh"] == 2500


async def test_session_without_samples_is_reconciled_at_its_start_reading(store: Store) -> None:
    tx = await store.start_transaction("CP01", 2, "B02", VAULT.hash_tag(TAG), 4000, at(0))
    row = await store.runs.reconcile_session(tx, at(10))
    assert (row["meter_stop_wh"], row["energy_wh"], row["last_sample_at"]) == (4000, 0, None)


async def test_runs_tell_a_clean_stop_from_an_unclean_one(store: Store) -> None:
    run, prev = await store.runs.begin(at(0), 111)
    assert prev is None
    await store.runs.alive(run.id, at(60))
    run2, prev = await store.runs.begin(at(100), 222)  # the first run never recorded its stop
    assert prev.id == run.id and prev.stopped_at is None and prev.alive_at == at(60) and prev.pid == 111
    await store.runs.end(run2.id, at(200))
    _, prev = await store.runs.begin(at(300), 333)
    assert prev.id == run2.id and prev.stopped_at == at(200)


async def test_a_version_1_database_migrates_and_its_open_sessions_are_untracked(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("CREATE TABLE meta (schema_version INTEGER NOT NULL)")
        await db.execute("INSERT INTO meta VALUES (1)")
        for sql in MIGRATIONS[0]:
            await db.execute(sql)
        await db.execute(
            "INSERT INTO sessions (charger_id, connector_id, bay_id, tag_hash, meter_start_wh, started_at)"
            " VALUES ('CP01', 1, 'B01', ?, 0, '2026-11-28T12:00:00.000Z')", (VAULT.hash_tag(TAG),))
    async with await Store.open(path, VAULT) as store:
        old = await store.open_sessions()
        assert [s["leases_tracked"] for s in old] == [False]
        await store.start_transaction("CP01", 2, "B02", VAULT.hash_tag(TAG), 0, at(0))
        assert [s["leases_tracked"] for s in await store.open_sessions()] == [False, True]
        assert "leases_tracked" not in (await store.sessions())[0]  # not part of the API's answer


# ---- a restarted daemon -----------------------------------------------------------------------------


async def _restored(cfg, store, bounds=None):
    clock = Clock()
    state = SquareState(cfg, store, clock=clock)
    await state.restore()
    charging = SmartCharging(cfg, NoCalls(), clock, asyncio.Event())
    charging.journal = LeaseJournal(store, cfg.control.lease_s, bounds if bounds is not None else await store.leases.all())
    return state, charging, PowerControl(state, charging)


async def test_restored_session_counts_at_its_lease_bound_then_its_safe_default(cfg, store: Store) -> None:
    tx = await store.start_transaction("CP01", 1, "B01", VAULT.hash_tag(TAG), 0, at(-30))
    await store.leases.put(LeaseBound("CP01/1", "CP01", 1, tx, 24.0, at(90)), at(-20))
    state, charging, _ = await _restored(cfg, store)
    book = charging.book
    assert charging.safe_defaults["CP01/1"] == 16.0  # 32 A over two connectors
    assert book.in_force_a("CP01/1", at(0)) == 24.0
    assert book.in_force_a("CP01/1", at(89)) == 24.0
    assert book.in_force_a("CP01/1", at(90)) == 16.0
    assert book.in_force_a("CP01/2", at(0)) == charging.safe_defaults["CP01/2"]


async def test_restored_session_without_a_bound_got_no_lease_but_an_untracked_one_counts_at_the_maximum(cfg, store: Store) -> None:
    await store.start_transaction("CP01", 1, "B01", VAULT.hash_tag(TAG), 0, at(-30))
    tx2 = await store.start_transaction("CP01", 2, "B02", VAULT.hash_tag(TAG), 0, at(-30))
    await store._conn.db.execute("UPDATE sessions SET leases_tracked = 0 WHERE id = ?", (tx2,))
    # a bound of another (older) transaction on the connector does not count
    stale = {"CP01/1": LeaseBound("CP01/1", "CP01", 1, tx2 + 100, 30.0, at(300))}
    _, charging, _ = await _restored(cfg, store, stale)
    assert charging.book.in_force_a("CP01/1", at(0)) == charging.safe_defaults["CP01/1"]
    assert charging.book.in_force_a("CP01/2", at(0)) == 32.0
    assert charging.book.in_force_a("CP01/2", at(cfg.control.lease_s)) == charging.safe_defaults["CP01/2"]


async def test_start_after_an_unclean_stop_raises_the_restart_alarm_with_what_was_restored(cfg, store: Store) -> None:
    state = SquareState(cfg, store, clock=Clock())
    await store.runs.begin(at(-600), 1)  # never stopped
    await store.start_transaction("CP01", 1, "B01", VAULT.hash_tag(TAG), 0, at(-30))
    await state.restore()
    run = await start_run(store, state, lease_bounds=1)
    alarms = await store.active_alarms()
    assert [a["key"] for a in alarms] == [RESTART_ALARM]
    assert "uncleanly" in alarms[0]["message"] and "600 s before this start" in alarms[0]["message"]
    assert "restored 1 open session(s)" in alarms[0]["action"] and "1 lease bound(s)" in alarms[0]["action"]
    await store.runs.end(run.id, at(1))
    await start_run(store, state, lease_bounds=0)  # after a clean stop: no alarm, the old one cleared
    assert await store.active_alarms() == []


async def test_sessions_that_ended_unseen_are_closed_once_the_charger_reports_the_connector_free(cfg, store: Store) -> None:
    tx1 = await store.start_transaction("CP01", 1, "B01", VAULT.hash_tag(TAG), 100, at(-300))
    tx2 = await store.start_transaction("CP01", 2, "B02", VAULT.hash_tag(TAG), 100, at(-300))
    clock = Clock()
    state = SquareState(cfg, store, clock=clock)
    await state.restore()
    state.record(ev.ChargerConnected(charger_id="CP01", ocpp_version="ocpp1.6", at=at(0), remote="x"))
    state.record(ev.ConnectorStatusChanged(charger_id="CP01", connector_id=1, status="Available", at=at(1), error_code="NoError"))
    state.record(ev.ConnectorStatusChanged(charger_id="CP01", connector_id=2, status="Charging", at=at(1), error_code="NoError"))
    await reconcile_sessions(state, at(60), after_s=60)
    assert (await store.session(tx1))["stopped"] is None  # 59 s since the status: not yet
    await reconcile_sessions(state, at(61), after_s=60)
    s1, s2 = await store.session(tx1), await store.session(tx2)
    assert s1["stop_reason"] == RECONCILED and s1["stopped"] == "2026-11-28T13:00:01.000Z"
    assert s2["stopped"] is None  # still charging
    assert state.chargers["CP01"].connectors[1].transaction_id is None and state.reconciled == 1
    notes = [e for e in state.pending_log if e.kind == "session_reconciled"]
    assert len(notes) == 1 and f"transaction {tx1}" in notes[0].message and notes[0].bay_id == "B01"


async def test_a_new_transaction_on_a_connector_closes_the_one_left_open(cfg, store: Store) -> None:
    tx1 = await store.start_transaction("CP01", 1, "B01", VAULT.hash_tag(TAG), 100, at(-300))
    state = SquareState(cfg, store, clock=Clock())
    await state.restore()
    answer = await Transactions(state).start_transaction("CP01", 1, TAG, 500, at(5))
    old = await store.session(tx1)
    assert old["stop_reason"] == RECONCILED and old["stopped"] == "2026-11-28T13:00:05.000Z"
    assert state.chargers["CP01"].connectors[1].transaction_id == answer.transaction_id != tx1


async def test_a_status_older_than_the_transaction_never_closes_it(cfg, store: Store) -> None:
    clock = Clock()
    state = SquareState(cfg, store, clock=clock)
    await state.restore()
    state.record(ev.ChargerConnected(charger_id="CP01", ocpp_version="ocpp1.6", at=at(0), remote="x"))
    # plugged in and reported Available/Preparing long ago; the badge comes 100 s later
    state.record(ev.ConnectorStatusChanged(charger_id="CP01", connector_id=1, status="Available", at=at(100), error_code="NoError"))
    clock.now = at(200)
    answer = await Transactions(state).start_transaction("CP01", 1, TAG, 0, at(200))
    await reconcile_sessions(state, at(200.1), after_s=60)
    await reconcile_sessions(state, at(400), after_s=60)
    assert (await store.session(answer.transaction_id))["stopped"] is None
    # some chargers stay Preparing after the start until the car takes current: not a sign either
    state.record(ev.ConnectorStatusChanged(charger_id="CP01", connector_id=1, status="Preparing", at=at(401), error_code="NoError"))
    await reconcile_sessions(state, at(600), after_s=60)
    assert (await store.session(answer.transaction_id))["stopped"] is None
