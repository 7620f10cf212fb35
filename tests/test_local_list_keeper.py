"""The keeper of chargers' local lists against model chargers that hold a list the way OCPP says a
charger does: what goes out on connect and on every change, refusals, chargers without a list,
retries, and lists cut off between their parts."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from ocpp.messages import MessageType, get_validator

from config.loader import load_config_text
from controller.shell import local_list
from controller.shell.local_list import LocalListKeeper, retry_delay_s
from controller.shell.state import SquareState
from controller.store.database import Store
from controller.store.secrets import TagVault
from drivers.contract.backend import (
    CallErrorReceived,
    CallTimedOut,
    ChargerNotConnected,
)
from drivers.contract.events import ChargerBooted, ChargerConnected, ChargerDisconnected
from drivers.ocpp.local_list import DIFFERENTIAL, FULL, V16, V201
from tests.test_local_list import (
    LIB,
    LONG_TAG,
    T0,
    apply,
    at,
    get_variable_result,
    set_variable_result,
)


@pytest.fixture
async def store(tmp_path: Path):
    async with await Store.open(tmp_path / "state" / "laadplein.db", TagVault(bytes(range(32)))) as s:
        yield s


CONFIG = """
[site]
id = "t"
[grid]
limit_a = 80
[ocpp]
auth = "{auth}"
[[chargers]]
id = "CP01"
max_current_a = 32
[[chargers]]
id = "CP02"
max_current_a = 32
[[bays]]
id = "B01"
charger = "CP01"
connector = 1
[[bays]]
id = "B02"
charger = "CP02"
connector = 1
"""


class ModelCharger:
    """A charger's local list as OCPP says it behaves; checks every request and answer against the schemas."""

    def __init__(self, ocpp: str, *, per_message: int = 50, version: int = 0) -> None:
        self.ocpp = ocpp
        self.per_message = per_message
        self.version = version
        self.held: dict[str, dict] = {}
        self.calls: list[tuple[str, dict]] = []
        self.faults: dict[str, list] = {}  # action -> what to raise or answer next, in turn

    def sends(self) -> list[dict]:
        return [p for a, p in self.calls if a == "SendLocalList"]

    def answer(self, action: str, payload: dict) -> dict:
        lib = LIB[self.ocpp]
        get_validator(MessageType.Call, action, lib).validate(payload)
        self.calls.append((action, payload))
        queued = self.faults.get(action)
        fault = queued.pop(0) if queued else None  # None in the queue: answered as usual that time
        if isinstance(fault, Exception):
            raise fault
        if fault is not None:
            out = fault
        elif action == "ChangeConfiguration":
            out = {"status": "Accepted"}
        elif action == "GetConfiguration":
            out = {"configurationKey": [{"key": "SendLocalListMaxLength", "readonly": True, "value": str(self.per_message)}]}
        elif action == "SetVariables":
            out = set_variable_result("Accepted")
        elif action == "GetVariables":
            out = get_variable_result("Accepted", str(self.per_message))
        elif action == "GetLocalListVersion":
            out = {"listVersion" if self.ocpp == V16 else "versionNumber": self.version}
        elif action == "SendLocalList":
            if len(payload.get("localAuthorizationList", [])) > self.per_message:
                out = {"status": "Failed"}
            else:
                status, self.version = apply(self.held, self.version, payload, self.ocpp)
                out = {"status": status}
        else:
            raise CallErrorReceived("NotImplemented", action)
        get_validator(MessageType.CallResult, action, lib).validate(out)
        return out


class Square:
    """The keeper with its state, store and model chargers; a fake monotonic clock for its retries."""

    def __init__(self, state: SquareState, keeper: LocalListKeeper, clock: list[float]) -> None:
        self.state = state
        self.keeper = keeper
        self.clock = clock
        self.models: dict[str, ModelCharger] = {}
        self.connects = 0
        self.cut_after: dict[str, int] = {}  # charger -> its link drops once it has taken this many lists

    async def call(self, charger_id: str, action: str, payload: dict) -> dict:
        await asyncio.sleep(0)
        if not self.state.chargers[charger_id].online:
            raise ChargerNotConnected(f"connection of charger {charger_id} closed")
        model = self.models[charger_id]
        answer = model.answer(action, payload)
        if action == "SendLocalList" and len(model.sends()) == self.cut_after.get(charger_id):
            del self.cut_after[charger_id]
            self.disconnect(charger_id)
        return answer

    def connect(self, cid: str, model: ModelCharger, firmware: str = "1.0") -> None:
        self.models[cid] = model
        self.connects += 1
        self.state.record(ChargerConnected(cid, model.ocpp, at(self.connects), "127.0.0.1:1"))
        self.state.record(ChargerBooted(cid, at(self.connects), "Model", "M1", firmware))
        self.keeper.wake.set()

    def disconnect(self, cid: str) -> None:
        self.state.record(ChargerDisconnected(cid, at(self.connects), "gone"))

    async def settle(self, timeout_s: float = 5.0) -> None:
        """Until the keeper has nothing left to do (store writes run on a thread: bounded polling)."""
        deadline = time.monotonic() + timeout_s
        while True:
            await asyncio.sleep(0.002)
            recs = self.keeper.chargers.values()
            done = not any(r.busy for r in recs) and not (self.keeper.enabled and self.keeper.wake.is_set())
            if done and all(
                not live.online or r.unsupported or r.retry_at > self.clock[0] or (r.set_up and r.version == self.keeper.version)
                for cid, live in self.state.chargers.items() if (r := self.keeper.chargers.get(cid)) is not None
            ):
                return
            assert time.monotonic() < deadline, "the keeper did not settle"


@pytest.fixture
async def square(store: Store):
    squares: list[asyncio.Task] = []

    async def make(auth: str = "local_list") -> Square:
        cfg = load_config_text(CONFIG.format(auth=auth), "t.toml", None)
        state = SquareState(cfg, store, clock=lambda: T0)
        clock = [0.0]
        sq = Square(state, None, clock)  # type: ignore[arg-type]
        sq.keeper = LocalListKeeper(state, sq, poll_s=3600, monotonic=lambda: clock[0])
        squares.append(asyncio.create_task(sq.keeper.run()))
        await sq.settle()
        return sq

    yield make
    for task in squares:
        task.cancel()
    await asyncio.gather(*squares, return_exceptions=True)


def held_tags(model: ModelCharger) -> dict[str, str]:
    return {tag: info["status"] for tag, info in model.held.items()}


async def test_a_charger_that_connects_gets_the_whole_list_in_parts(square) -> None:
    sq = await square()
    for i in range(5):
        await sq.keeper.put(f"TAG{i}", "Accepted", None, None)
    model = ModelCharger(V16, per_message=2, version=0)
    sq.connect("CP01", model)
    await sq.settle()
    assert [a for a, _ in model.calls[:3]] == ["ChangeConfiguration", "GetConfiguration", "GetLocalListVersion"]
    assert model.calls[0][1] == {"key": "LocalAuthListEnabled", "value": "true"}
    sends = model.sends()
    assert [(s["updateType"], s["listVersion"]) for s in sends] == [(FULL, 4), (DIFFERENTIAL, 5), (DIFFERENTIAL, 6)]
    assert model.version == 6 == await sq.state.store.tokens.version()
    assert held_tags(model) == {f"TAG{i}": "Accepted" for i in range(5)}
    # In step: reconnecting with the same version sends no list.
    sq.connect("CP01", model)
    await sq.settle()
    assert len(model.sends()) == 3 and model.calls[-1][0] == "GetLocalListVersion"


async def test_changes_go_out_as_differentials_and_removal_drops_the_info(square) -> None:
    sq = await square()
    await sq.keeper.put("KEEP01", "Accepted", None, None)
    m16, m201 = ModelCharger(V16), ModelCharger(V201)
    sq.connect("CP01", m16)
    sq.connect("CP02", m201)
    await sq.settle()
    assert [a for a, _ in m201.calls[:3]] == ["SetVariables", "GetVariables", "GetLocalListVersion"]
    await sq.keeper.put("NEW0001", "Blocked", at(600), "G1")
    await sq.settle()
    assert m16.sends()[-1] == {
        "listVersion": 3, "updateType": DIFFERENTIAL,
        "localAuthorizationList": [{"idTag": "NEW0001", "idTagInfo": {
            "status": "Blocked", "expiryDate": "2026-11-28T13:10:00.000Z", "parentIdTag": "G1"}}],
    }
    assert m201.sends()[-1]["localAuthorizationList"][0]["idTokenInfo"]["groupIdToken"] == {"idToken": "G1", "type": "Central"}
    assert await sq.keeper.remove("KEEP01") is True
    assert await sq.keeper.remove("KEEP01") is False
    await sq.settle()
    assert m16.sends()[-1] == {"listVersion": 4, "updateType": DIFFERENTIAL, "localAuthorizationList": [{"idTag": "KEEP01"}]}
    assert m201.sends()[-1]["localAuthorizationList"] == [{"idToken": {"idToken": "KEEP01", "type": "ISO14443"}}]
    for model in (m16, m201):
        assert held_tags(model) == {"NEW0001": "Blocked"} and model.version == 4


async def test_version_mismatch_or_failure_gets_the_whole_list(square) -> None:
    sq = await square()
    await sq.keeper.put("AAA", "Accepted", None, None)
    model = ModelCharger(V16)
    sq.connect("CP01", model)
    await sq.settle()
    model.version = 10  # it says it holds a newer list, so a Differential cannot go on top
    await sq.keeper.put("BBB", "Accepted", None, None)
    await sq.settle()
    assert [s["updateType"] for s in model.sends()] == [FULL, DIFFERENTIAL, FULL]
    assert model.version == 3 and held_tags(model) == {"AAA": "Accepted", "BBB": "Accepted"}
    model.faults["SendLocalList"] = [{"status": "Failed"}]
    await sq.keeper.put("CCC", "Accepted", None, None)
    await sq.settle()
    assert [s["updateType"] for s in model.sends()][-2:] == [DIFFERENTIAL, FULL]
    assert held_tags(model) == {"AAA": "Accepted", "BBB": "Accepted", "CCC": "Accepted"}


async def test_an_offline_charger_catches_up_when_it_connects(square) -> None:
    sq = await square()
    await sq.keeper.put("AAA", "Accepted", None, None)
    model = ModelCharger(V201)
    sq.connect("CP01", model)
    await sq.settle()
    sq.disconnect("CP01")
    await sq.keeper.put("BBB", "Accepted", None, None)
    await sq.keeper.remove("AAA")
    await sq.settle()
    assert len(model.sends()) == 1  # nothing while it is gone
    sq.connect("CP01", model)
    await sq.settle()
    last = model.sends()[-1]
    assert last["updateType"] == DIFFERENTIAL and last["versionNumber"] == 4 and len(model.sends()) == 2
    assert held_tags(model) == {"BBB": "Accepted"}
    # One that comes back with a version the gateway has no changes for gets the whole list.
    sq.disconnect("CP01")
    model.version, model.held = 0, {"STALE": {"status": "Accepted"}}
    sq.connect("CP01", model)
    await sq.settle()
    assert model.sends()[-1]["updateType"] == FULL and held_tags(model) == {"BBB": "Accepted"}


async def test_a_charger_without_a_list_is_said_once_and_left_alone(square, caplog) -> None:
    sq = await square()
    await sq.keeper.put("AAA", "Accepted", None, None)
    model = ModelCharger(V16)
    model.faults["GetLocalListVersion"] = [CallErrorReceived("NotImplemented", "no")]
    sq.connect("CP01", model)
    await sq.settle()
    await sq.keeper.put("BBB", "Accepted", None, None)
    sq.connect("CP01", model)  # same firmware: still none
    await sq.settle()
    assert model.sends() == [] and [a for a, _ in model.calls] == ["ChangeConfiguration", "GetConfiguration", "GetLocalListVersion"]
    notes = [e for e in sq.state.pending_log if e.kind == "local_list_unsupported"]
    assert len(notes) == 1 and notes[0].charger_id == "CP01" and "NotImplemented" in notes[0].message
    assert len([r for r in caplog.records if "has none" in r.getMessage()]) == 1
    sq.connect("CP01", model, firmware="2.0")  # new firmware may bring one
    await sq.settle()
    assert held_tags(model) == {"AAA": "Accepted", "BBB": "Accepted"}


@pytest.mark.parametrize(
    ("ocpp", "action", "fault"),
    [
        (V16, "ChangeConfiguration", {"status": "NotSupported"}),
        (V16, "GetLocalListVersion", {"listVersion": -1}),
        (V16, "SendLocalList", {"status": "NotSupported"}),
        (V201, "SetVariables", set_variable_result("UnknownComponent")),
        (V201, "SendLocalList", CallErrorReceived("NotImplemented", "no")),
    ],
)
async def test_every_way_of_saying_no_list(square, ocpp, action, fault) -> None:
    sq = await square()
    model = ModelCharger(ocpp)
    model.faults[action] = [fault]
    sq.connect("CP01", model)
    await sq.settle()
    assert sq.keeper.chargers["CP01"].unsupported
    calls = len(model.calls)
    await sq.keeper.put("AAA", "Accepted", None, None)
    await sq.settle()
    assert len(model.calls) == calls


async def test_failures_are_retried_later_with_growing_waits(square) -> None:
    sq = await square()
    await sq.keeper.put("AAA", "Accepted", None, None)
    model = ModelCharger(V16)
    model.faults["GetLocalListVersion"] = [CallTimedOut("slow"), CallErrorReceived("InternalError", "oops")]
    sq.connect("CP01", model)
    await sq.settle()
    rec = sq.keeper.chargers["CP01"]
    assert rec.failures == 1 and model.sends() == []
    sq.clock[0] = retry_delay_s(1) - 0.1
    sq.keeper.wake.set()
    await sq.settle()
    assert len(model.calls) == 3  # not yet
    sq.clock[0] = retry_delay_s(1)
    sq.keeper.wake.set()
    await sq.settle()
    assert rec.failures == 2 and model.sends() == []
    sq.clock[0] += retry_delay_s(2)
    sq.keeper.wake.set()
    await sq.settle()
    assert held_tags(model) == {"AAA": "Accepted"} and rec.failures == 0
    assert retry_delay_s(1) < retry_delay_s(2) < retry_delay_s(30) == retry_delay_s(40)


async def test_long_tags_skip_ocpp16_and_tags_stay_out_of_logs(square, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    sq = await square()
    await sq.keeper.put(LONG_TAG, "Accepted", None, None)
    await sq.keeper.put("04A1B2C3D4", "Accepted", at(-5), None)
    m16, m201 = ModelCharger(V16), ModelCharger(V201)
    sq.connect("CP01", m16)
    sq.connect("CP02", m201)
    await sq.settle()
    assert held_tags(m16) == {"04A1B2C3D4": "Expired"}
    assert held_tags(m201) == {LONG_TAG: "Accepted", "04A1B2C3D4": "Expired"}
    text = "\n".join(r.getMessage() for r in caplog.records) + repr([e.message for e in sq.state.pending_log])
    assert sq.state.store.hash_tag(LONG_TAG)[:8] in text  # the skipped tag is named by its hash
    assert LONG_TAG not in text and "04A1B2C3D4" not in text


async def test_with_free_authorization_changes_are_kept_and_not_sent(square) -> None:
    sq = await square(auth="free")
    model = ModelCharger(V16)
    sq.connect("CP01", model)
    await sq.keeper.put("AAA", "Accepted", None, None)
    await sq.settle()
    assert model.calls == [] and await sq.state.store.tokens.version() == 2


# ---- a list cut off between its parts ----------------------------------------------------------


def kinds(model: ModelCharger) -> list[tuple[str, int]]:
    return [(s["updateType"], s["listVersion" if model.ocpp == V16 else "versionNumber"]) for s in model.sends()]


def cut_off(sq: Square, cid: str, model: ModelCharger, how: str, parts: int) -> None:
    """Let the charger take `parts` SendLocalList, then lose the rest: its link drops, or a call times out."""
    if how == "link drops":
        sq.cut_after[cid] = len(model.sends()) + parts
    else:
        model.faults["SendLocalList"] = [None] * parts + [CallTimedOut("slow")]


async def resume(sq: Square, cid: str, model: ModelCharger, how: str) -> None:
    """The next round after the cut: the charger connects again, or the retry is due."""
    if how == "link drops":
        assert not sq.state.chargers[cid].online
        sq.connect(cid, model)
    else:
        sq.clock[0] += retry_delay_s(sq.keeper.chargers[cid].failures)
        sq.keeper.wake.set()
    await sq.settle()


@pytest.mark.parametrize("how", ["link drops", "call times out"])
@pytest.mark.parametrize("parts", [1, 2])
async def test_a_whole_list_cut_off_between_its_parts_goes_whole_again(square, how, parts) -> None:
    sq = await square()
    for i in range(5):
        await sq.keeper.put(f"TAG{i}", "Accepted", None, None)
    model = ModelCharger(V16, per_message=2)
    cut_off(sq, "CP01", model, how, parts)
    sq.connect("CP01", model)
    await sq.settle()
    # It took the first part(s), Full @4 (and @5): it says it holds a version the journal has changes after.
    assert model.version == 3 + parts and len(model.held) == 2 * parts
    before = len(model.sends())  # a timed-out part is among them: it reached the charger, unanswered
    await resume(sq, "CP01", model, how)
    assert kinds(model)[before:] == [(FULL, 4), (DIFFERENTIAL, 5), (DIFFERENTIAL, 6)]
    assert held_tags(model) == {f"TAG{i}": "Accepted" for i in range(5)} and model.version == 6


@pytest.mark.parametrize("how", ["link drops", "call times out"])
async def test_changes_cut_off_between_their_parts_bring_the_whole_list(square, how) -> None:
    sq = await square()
    for i in range(5):
        await sq.keeper.put(f"TAG{i}", "Accepted", None, None)
    model = ModelCharger(V201, per_message=2)
    sq.connect("CP01", model)
    await sq.settle()
    assert model.version == 6
    sq.disconnect("CP01")
    # Five changes while it is gone; the Differentials carry them by tag, not in the order they were made.
    for tag in ("ZZ1", "ZZ2", "ZZ3", "AA0"):
        await sq.keeper.put(tag, "Blocked", None, None)
    await sq.keeper.remove("TAG0")
    cut_off(sq, "CP01", model, how, 1)
    sq.connect("CP01", model)
    await sq.settle()
    # Five tags changed: @9 (AA0, TAG0), @10 (ZZ1, ZZ2), @11 (ZZ3). It took @9 alone, while the
    # journal's changes after 9 are AA0 and TAG0 again: built on, ZZ1 to ZZ3 would never arrive.
    assert kinds(model)[3] == (DIFFERENTIAL, 9) and model.version == 9
    before = len(model.sends())
    await resume(sq, "CP01", model, how)
    assert kinds(model)[before][0] == FULL and model.version == 11
    assert held_tags(model) == {**{f"TAG{i}": "Accepted" for i in range(1, 5)},
                                **{t: "Blocked" for t in ("ZZ1", "ZZ2", "ZZ3", "AA0")}}


async def test_a_charger_restarted_with_a_part_of_the_list_gets_it_whole(square) -> None:
    sq = await square()
    for i in range(5):
        await sq.keeper.put(f"TAG{i}", "Accepted", None, None)
    model = ModelCharger(V16, per_message=2)
    sq.connect("CP01", model)
    await sq.settle()
    sq.disconnect("CP01")
    # It restarts having kept only the first part (version 4), as a charger may after losing power.
    model.version, model.held = 4, {t: model.held[t] for t in ("TAG0", "TAG1")}
    sq.connect("CP01", model)
    await sq.settle()
    assert kinds(model)[3][0] == FULL and held_tags(model) == {f"TAG{i}": "Accepted" for i in range(5)}


async def test_a_part_version_is_distrusted_as_long_as_the_journal_reaches_it(square, monkeypatch) -> None:
    monkeypatch.setattr(local_list, "JOURNAL_VERSIONS", 3)
    sq = await square()
    for i in range(5):
        await sq.keeper.put(f"TAG{i}", "Accepted", None, None)
    model = ModelCharger(V16, per_message=2)
    cut_off(sq, "CP01", model, "link drops", 1)
    sq.connect("CP01", model)
    await sq.settle()
    assert model.version == 4
    # Version 7 keeps changes 5 to 7 in the journal: enough to bridge from 4, so 4 must still be known as a part.
    await sq.keeper.put("NEW01", "Accepted", None, None)
    sq.connect("CP01", model)
    await sq.settle()
    assert kinds(model)[1][0] == FULL and model.version == 7
    assert held_tags(model) == {**{f"TAG{i}": "Accepted" for i in range(5)}, "NEW01": "Accepted"}
