"""A charger naming a transaction that is not its own (another charger's, another connector's): the
message is answered, the owner's session, energy and connector stay as they were, and one alarm
names the offending charger and connector until it has been quiet for a while."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from config.loader import load_config_text
from controller.shell.alarms import FOREIGN_TX_QUIET_S, QUIET_AFTER_RESTART_S, Alarms
from controller.shell.backend import SquareBackend
from controller.shell.clock_check import ClockCheck
from controller.shell.state import SquareState
from controller.shell.transactions import Transactions
from controller.store.database import Store
from controller.store.secrets import TagVault
from drivers.contract import events as ev
from drivers.contract.words import INVALID
from drivers.ocpp.context import LinkContext
from drivers.ocpp.handlers16 import ChargerLink16
from drivers.ocpp.handlers201 import ChargerLink201

T0 = datetime(2026, 11, 28, 13, 0, 0, tzinfo=UTC)
VAULT = TagVault(bytes(range(32)))

TOML = """
[site]
id = "testplein"
name = "Test"
timezone = "Europe/Amsterdam"
[grid]
phases = 3
limit_a = 80
[[chargers]]
id = "CP01"
max_current_a = 32
connectors = 2
[[chargers]]
id = "CP02"
max_current_a = 32
connectors = 2
[[bays]]
id = "B01"
charger = "CP01"
connector = 1
[[bays]]
id = "B03"
charger = "CP02"
connector = 1
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class NoFixtures:
    connected = True

    def published_at(self, bay_id: str) -> datetime | None:
        return None


@pytest.fixture
async def square(tmp_path: Path):
    cfg = load_config_text(TOML, "t.toml", base_dir=tmp_path)
    clock = Clock()
    async with await Store.open(tmp_path / "laadplein.db", VAULT) as store:
        state = SquareState(cfg, store, clock=clock)
        yield state, Transactions(state), clock


def sample(charger: str, connector: int, tx: int | None, energy_wh: float, amps: float = 16.0) -> ev.MeterSample:
    return ev.MeterSample(charger, connector, T0, tx, (amps, amps, amps), None, energy_wh)


async def test_a_stop_with_another_chargers_transaction_is_answered_and_changes_nothing(square) -> None:
    state, tx, _ = square
    theirs = (await tx.start_transaction("CP02", 1, "TAG-B", 1000, T0)).transaction_id
    await tx.meter_values("CP02", [sample("CP02", 1, theirs, 4000)])

    status = await tx.stop_transaction("CP01", theirs, 999_999_999, T0, "Local", "TAG-A", [sample("CP01", 1, theirs, 999_999_999)])

    assert status == INVALID
    row = await state.store.session(theirs)
    assert row["stopped"] is None and row["meter_stop_wh"] is None and row["energy_wh"] == 3000
    assert state.connector("CP02", 1).transaction_id == theirs  # its leases keep a transaction to hang on
    assert [s["energy_wh"] for s in await state.store.meter_samples(theirs)] == [4000]
    assert set(state.foreign_tx) == {"CP01"}
    [entry] = [e for e in state.pending_log if e.kind == "foreign_transaction"]
    assert entry.charger_id == "CP01" and "CP02/1" in entry.message and "TAG" not in entry.message

    # its own stop still works
    assert await tx.stop_transaction("CP02", theirs, 5000, T0, "Local", None, []) is None
    assert (await state.store.session(theirs))["energy_wh"] == 4000


async def test_meter_values_naming_another_chargers_or_connectors_transaction_move_no_energy(square) -> None:
    state, tx, _ = square
    theirs = (await tx.start_transaction("CP02", 1, "TAG-B", 1000, T0)).transaction_id
    mine = (await tx.start_transaction("CP01", 2, "TAG-A", 0, T0)).transaction_id
    await tx.meter_values("CP02", [sample("CP02", 1, theirs, 2000)])

    await tx.meter_values("CP01", [sample("CP01", 1, theirs, 999_999_999)])  # another charger's
    await tx.meter_values("CP01", [sample("CP01", 1, mine, 888_888_888)])  # its own other connector's

    assert (await state.store.session(theirs))["energy_wh"] == 1000
    assert (await state.store.session(mine))["energy_wh"] is None
    assert state.connector("CP02", 1).energy_wh == 2000  # the owner's live reading is its own
    assert set(state.foreign_tx) == {"CP01"} and state.foreign_tx["CP01"].count == 2
    # a late sample of a connector's own stopped transaction still counts for it
    await tx.stop_transaction("CP02", theirs, 2500, T0, "Local", None, [])
    await tx.meter_values("CP02", [sample("CP02", 1, theirs, 2400)])
    assert len(await state.store.meter_samples(theirs)) == 2


async def test_one_alarm_per_offending_connector_cleared_after_a_quiet_hour(square) -> None:
    state, tx, clock = square
    alarms = Alarms(state, NoFixtures(), None, ClockCheck())
    theirs = (await tx.start_transaction("CP02", 1, "TAG-B", 1000, T0)).transaction_id
    for _ in range(3):
        await tx.stop_transaction("CP01", theirs, 999_999_999, T0, None, None, [sample("CP01", 1, theirs, 1)])
        await alarms.check(clock())
    active = [a for a in await state.store.active_alarms() if a["key"].startswith("foreign_transaction:")]
    assert [a["key"] for a in active] == ["foreign_transaction:CP01"]
    assert "charger CP01 connector 1" in active[0]["message"] and "CP02/1" in active[0]["message"]
    events = await state.store.events(since=T0 - timedelta(days=1))
    assert sum(1 for e in events if e["kind"] == "alarm" and "CP01" in e["message"]) == 1

    clock.now = T0 + timedelta(seconds=FOREIGN_TX_QUIET_S - 1)
    await tx.meter_values("CP01", [sample("CP01", 1, theirs, 5)])  # not quiet yet: it goes on
    clock.now += timedelta(seconds=FOREIGN_TX_QUIET_S - 1)
    await alarms.check(clock())
    assert any(a["key"] == "foreign_transaction:CP01" for a in await state.store.active_alarms())
    clock.now += timedelta(seconds=2)
    await alarms.check(clock())
    assert not any(a["key"].startswith("foreign_transaction:") for a in await state.store.active_alarms())
    assert state.foreign_tx == {}


async def test_alarms_of_records_kept_in_memory_clear_after_a_restart_once_quiet(square) -> None:
    """Raised before a restart, an alarm whose record lived in memory only (a foreign transaction, an
    implausible or disobeyed current, a flood, a foreign light command) has nothing behind it any more:
    it clears once its quiet time has passed since the start, and not before."""
    state, _, clock = square
    left = ["foreign_transaction:CP01", "implausible_current:CP01/1", "charger_over_limit:CP02",
            "current_over_limit:CP02/1", "light_foreign:B01"]
    for key in left:
        assert await state.store.raise_alarm(key, T0 - timedelta(hours=1), "from the last run", "none")
    alarms = Alarms(state, NoFixtures(), None, ClockCheck())
    await alarms.check(clock())
    active = {a["key"] for a in await state.store.active_alarms()}
    assert set(left) <= active
    for key in left:
        quiet_s = next(q for prefix, q in QUIET_AFTER_RESTART_S.items() if key.startswith(prefix))
        clock.now = T0 + timedelta(seconds=quiet_s)
        await alarms.check(clock())
        assert key not in {a["key"] for a in await state.store.active_alarms()}, key
    assert not set(left) & {a["key"] for a in await state.store.active_alarms()}


# ---- the handlers of both versions, on the real backend, without sockets ----------------------


class NoSocket:
    """A connection that is never read or written: the handlers are called directly."""

    subprotocol = "ocpp"
    remote_address = ("127.0.0.1", 1)


def link(kind, charger_id: str, backend: SquareBackend, context: LinkContext | None = None):
    return kind(charger_id, NoSocket(), context or LinkContext(backend=backend, heartbeat_interval_s=60, call_timeout_s=5))


def reading_201(wh: float) -> list[dict]:
    return [{"timestamp": "2026-11-28T13:00:00Z", "sampled_value": [
        {"value": wh, "measurand": "Energy.Active.Import.Register", "unit_of_measure": {"unit": "Wh"}}]}]


async def test_16_handlers_answer_a_foreign_stop_and_meter_values_and_apply_neither(square) -> None:
    state, _, _ = square
    backend = SquareBackend(state)
    cp01, cp02 = link(ChargerLink16, "CP01", backend), link(ChargerLink16, "CP02", backend)
    started = await cp02.on_start_transaction(connector_id=1, id_tag="TAG-B", meter_start=1000, timestamp="2026-11-28T13:00:00Z")
    theirs = started.transaction_id
    sample = [{"timestamp": "2026-11-28T13:00:01Z", "sampled_value": [{"value": "999999999", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]
    assert await cp01.on_meter_values(connector_id=1, meter_value=sample, transaction_id=theirs) is not None
    answer = await cp01.on_stop_transaction(meter_stop=999_999_999, timestamp="2026-11-28T13:00:02Z", transaction_id=theirs, id_tag="TAG-A")
    assert answer.id_tag_info.status == INVALID
    row = await state.store.session(theirs)
    assert row["stopped"] is None and row["energy_wh"] is None  # no reading of its own yet, none counted
    assert state.connector("CP02", 1).transaction_id == theirs
    assert "CP01" in state.foreign_tx


async def test_201_an_event_naming_the_chargers_transaction_on_another_evse_is_answered_not_applied(square) -> None:
    state, _, _ = square
    backend = SquareBackend(state)
    cp01 = link(ChargerLink201, "CP01", backend)
    await cp01.on_transaction_event(
        event_type="Started", timestamp="2026-11-28T13:00:00Z", trigger_reason="CablePluggedIn", seq_no=0,
        transaction_info={"transaction_id": "T-1", "charging_state": "Charging"}, evse={"id": 1, "connector_id": 1},
        meter_value=reading_201(100),
    )
    answer = await cp01.on_transaction_event(
        event_type="Ended", timestamp="2026-11-28T13:00:01Z", trigger_reason="StopAuthorized", seq_no=1,
        transaction_info={"transaction_id": "T-1", "stopped_reason": "Local"}, evse={"id": 2, "connector_id": 1},
        id_token={"id_token": "TAG-A", "type": "ISO14443"}, meter_value=reading_201(999_999_999),
    )
    assert answer.id_token_info == {"status": INVALID}
    [row] = await state.store.open_sessions()
    assert row["connector"] == 1 and row["meter_stop_wh"] is None
    assert cp01.book.evses[1].transaction == "T-1" and cp01.book.transactions["T-1"].last_seq == 0  # its seqNo not taken
    assert state.foreign_tx["CP01"].first.connector_id == 2 and state.foreign_tx["CP01"].first.owner == "CP01/1"
    # the same id from another charger is that charger's own transaction, not CP01's
    cp02 = link(ChargerLink201, "CP02", backend, cp01._context)
    await cp02.on_transaction_event(
        event_type="Ended", timestamp="2026-11-28T13:00:02Z", trigger_reason="StopAuthorized", seq_no=0,
        transaction_info={"transaction_id": "T-1", "stopped_reason": "Local"}, evse={"id": 1, "connector_id": 1},
        meter_value=reading_201(999_999_999),
    )
    assert [r["charger"] for r in await state.store.open_sessions()] == ["CP01"]


async def test_a_start_on_a_connector_the_config_does_not_have_is_recorded_not_authorized(square) -> None:
    state, tx, _ = square
    answer = await tx.start_transaction("CP01", 9, "TAG-A", 0, T0)
    assert answer.status == INVALID  # power sharing cannot steer or count connector 9 of a 2-connector charger
    assert (await state.store.session(answer.transaction_id))["connector"] == 9  # its stop still finds it
    own = await tx.start_transaction("CP01", 2, "TAG-A", 0, T0)
    assert own.status != INVALID
