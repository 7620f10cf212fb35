"""Keeps every charger's local authorization list in step with the gateway's (`ocpp.auth = "local_list"`).

A charger that connects gets its list switched on, is asked which version it holds, and gets the
whole list when that is not the gateway's. A change through the API raises the list's version and
goes to every connected charger as a Differential; a charger that refuses one gets the whole list.
Chargers offline catch up when they connect. A charger without a local list is said once (log and
event) and left alone: it asks the gateway online and cannot authorize offline.

A list too long for one message goes in parts, each numbered with a version of its own, and those
numbers are versions of the gateway's list too. A charger that took only some parts (the link
dropped, a call timed out, it restarted) says it holds such a version while it holds a piece of the
list: a version ever used for a part before the last one is therefore never built on with
Differentials, and a charger that says it holds one gets the whole list again.

Every call runs in a task of this component's TaskGroup under the OCPP call timeout, never in an
OCPP handler. Tags never reach a log line: only the first characters of their hash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from controller.shell.state import SquareState
from controller.store.secrets import normalise_tag
from drivers.contract.backend import CallErrorReceived, CallFailed, ChargerNotConnected
from drivers.contract.clock import parse_ts
from drivers.ocpp import local_list as wire
from drivers.ocpp.local_list import FULL, ListEntry, Push, Support

log = logging.getLogger("laadplein.local_list")

POLL_S = 1.0  # how soon a charger that connected is noticed
JOURNAL_VERSIONS = 1000  # changes kept to send as Differentials; a charger further behind gets the whole list
RETRY_FIRST_S = 10.0  # after a failed attempt; doubled each time up to RETRY_MAX_S
RETRY_MAX_S = 600.0


class ListCalls(Protocol):
    """What the keeper needs of the OCPP server: a request to a charger, answered or raising CallFailed."""

    async def call(self, charger_id: str, action: str, payload: dict[str, Any]) -> dict[str, Any]: ...


class Unsupported(Exception):
    """The charger has no local list; the message says how it showed it."""


@dataclass
class ChargerList:
    """What the keeper knows of one charger's local list."""

    connected_at: datetime | None = None  # the connection it was (or is being) set up on
    set_up: bool = False
    version: int | None = None  # the version it holds, as far as known; None: unknown
    per_message: int = wire.DEFAULT_ITEMS_PER_MESSAGE
    unsupported: str = ""  # why it is left alone; "" while it has a list
    firmware: str = ""  # the firmware it was found without a list on: a new one is tried again
    busy: bool = False
    failures: int = 0
    retry_at: float = 0.0  # monotonic seconds: no new attempt before


def retry_delay_s(failures: int) -> float:
    """Seconds to wait after `failures` failed attempts in a row (doubling, capped)."""
    return min(RETRY_FIRST_S * 2 ** max(failures - 1, 0), RETRY_MAX_S)


class LocalListKeeper:
    """Owns the list's changes and the calls that carry them to chargers."""

    def __init__(
        self,
        state: SquareState,
        calls: ListCalls,
        *,
        poll_s: float = POLL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.store = state.store
        self.calls = calls
        self.poll_s = poll_s
        self.monotonic = monotonic
        self.wake = asyncio.Event()  # set to look at the chargers now rather than at the next poll
        self.chargers: dict[str, ChargerList] = {}
        self.version: int | None = None  # the gateway's list version, once read
        self._journal: dict[int, ListEntry] = {}  # version -> the change that made it
        # Versions sent on a part before the last one, to any charger: a charger holding one may hold
        # only some of a list. Global rather than per charger, so that nothing a charger reports can
        # slip past it; the cost is a whole list now and then where a Differential would have done.
        # Kept as long as the journal could bridge from them (both live in memory only: after a
        # restart the journal is empty and only the current version is taken as in step).
        self._part_versions: set[int] = set()
        self._lock = asyncio.Lock()  # one change at a time: each gets its own version, in order
        self._tasks: asyncio.TaskGroup | None = None

    @property
    def enabled(self) -> bool:
        """True when chargers are to hold the list (config `ocpp.auth = "local_list"`)."""
        return self.state.cfg.ocpp.auth == "local_list"

    # ---- changes (the API) ------------------------------------------------------------------

    async def put(self, tag: str, status: str, expiry: datetime | None, group: str | None) -> str:
        """Add or change a tag; its hash. The new version goes to connected chargers as a Differential."""
        async with self._lock:
            version = await self.store.tokens.put(tag, status, expiry, group)
            self._changed(version, ListEntry(normalise_tag(tag), status, expiry, group))
        return self.store.hash_tag(tag)

    async def remove(self, tag: str) -> bool:
        """Remove a tag; False if it was not on the list. Connected chargers drop it by a Differential."""
        async with self._lock:
            if not await self.store.tokens.delete(tag):
                return False
            self._changed(await self.store.tokens.version(), ListEntry(normalise_tag(tag), None))
        return True

    def _changed(self, version: int, entry: ListEntry) -> None:
        self._journal[version] = entry
        for old in [v for v in self._journal if v <= version - JOURNAL_VERSIONS]:
            del self._journal[old]
        # A charger at v is bridged from v + 1 on: once that change is gone it gets the whole list anyway.
        self._part_versions = {v for v in self._part_versions if v + 1 > version - JOURNAL_VERSIONS}
        self.version = version
        self.wake.set()

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep chargers' lists in step until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            try:
                if not self.enabled:
                    log.info("local list: ocpp.auth is %r: token changes are kept, not sent to chargers",
                             self.state.cfg.ocpp.auth)
                    await asyncio.Event().wait()
                async with self._lock:
                    if self.version is None:
                        self.version = await self.store.tokens.version()
                log.info("local list: version %d; chargers are brought in step as they connect", self.version)
                while True:
                    self.look()
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), timeout=self.poll_s)
                    except TimeoutError:
                        pass
            finally:
                self._tasks = None

    def look(self) -> None:
        """Notice chargers that (re)connected and start the work each one needs."""
        if self.state.cfg.ocpp.conformance_mode:
            return  # no request of the gateway's own (control.md): the list changes, nobody is told
        now = self.monotonic()
        for cid, live in sorted(self.state.chargers.items()):
            rec = self.chargers.setdefault(cid, ChargerList())
            if not live.online or live.connected_at is None:
                continue
            if live.connected_at != rec.connected_at:
                rec.connected_at, rec.set_up, rec.version = live.connected_at, False, None
                rec.failures, rec.retry_at = 0, 0.0
                if rec.unsupported and live.firmware != rec.firmware:
                    rec.unsupported = ""  # new firmware may have brought a list
            if rec.busy or rec.unsupported or now < rec.retry_at:
                continue
            if rec.set_up and rec.version == self.version:
                continue
            if live.ocpp_version not in wire.VERSIONS:
                continue
            rec.busy = True
            self._spawn(cid, rec, live.connected_at, live.ocpp_version)

    def _spawn(self, cid: str, rec: ChargerList, connected_at: datetime, version: str) -> None:
        if self._tasks is None:
            rec.busy = False
            return
        self._tasks.create_task(self._guarded(cid, rec, connected_at, version), name=f"local-list-{cid}")

    async def _guarded(self, cid: str, rec: ChargerList, connected_at: datetime, version: str) -> None:
        """One charger's round of work; what goes wrong is said and retried later, never the daemon's end."""
        try:
            await self._bring_in_step(cid, rec, connected_at, version)
            rec.failures = 0
        except ChargerNotConnected:
            # It is set up again when it connects; until the state says it is gone, do not spin.
            rec.retry_at = self.monotonic() + self.poll_s
        except Unsupported as exc:
            self._unsupported(cid, rec, str(exc))
        except CallErrorReceived as exc:
            if wire.unsupported_callerror(exc.code):
                self._unsupported(cid, rec, f"it answered {exc.code}")
            else:
                self._failed(cid, rec, f"it answered a CALLERROR {exc.code}: {exc.description}")
        except CallFailed as exc:
            self._failed(cid, rec, str(exc))
        except Exception:  # a bug here must not end the daemon's other work
            log.exception("local list: charger %s: failed", cid)
            self._failed(cid, rec, "an error in the gateway")
        finally:
            rec.busy = False
            self.wake.set()

    def _failed(self, cid: str, rec: ChargerList, why: str) -> None:
        rec.failures += 1
        delay_s = retry_delay_s(rec.failures)
        rec.retry_at = self.monotonic() + delay_s
        self.state.rare(logging.WARNING, cid, "local-list", "local list: charger %s: %s; trying again in %.0f s",
                        cid, why, delay_s)

    def _unsupported(self, cid: str, rec: ChargerList, why: str) -> None:
        rec.unsupported = why
        rec.firmware = self.state.chargers[cid].firmware if cid in self.state.chargers else ""
        log.warning("local list: charger %s has none (%s): it asks the gateway for every tag while online "
                    "and cannot authorize while the gateway is gone", cid, why)
        self.state.note(
            "local_list_unsupported",
            f"charger {cid}: no local authorization list ({why}); tags are checked online only",
            charger_id=cid,
            data={"why": why},
        )

    # ---- one charger ------------------------------------------------------------------------

    async def _call(self, cid: str, rec: ChargerList, connected_at: datetime, request: tuple[str, dict]) -> dict:
        """One request on the connection this round of work is for; what it learns is for that one only."""
        if rec.connected_at != connected_at:
            raise ChargerNotConnected(f"charger {cid} connected again meanwhile")
        action, payload = request
        answer = await self.calls.call(cid, action, payload)
        if rec.connected_at != connected_at:
            raise ChargerNotConnected(f"charger {cid} connected again meanwhile")
        return answer

    async def _bring_in_step(self, cid: str, rec: ChargerList, connected_at: datetime, version: str) -> None:
        if not rec.set_up:
            await self._set_up(cid, rec, connected_at, version)
        while True:
            async with self._lock:  # the list and its version as they are between two changes
                target = self.version
                if target is None or rec.version == target:
                    return
                pushes = await self._plan(cid, rec, version, target)
            if await self._send(cid, rec, connected_at, version, pushes):
                self._report(cid, target, pushes)

    async def _send(
        self, cid: str, rec: ChargerList, connected_at: datetime, version: str, pushes: tuple[Push, ...]
    ) -> bool:
        """Send the pushes in order; False when a change was refused (the whole list goes next)."""
        for push in pushes:
            if push is not pushes[-1]:
                # Noted before it goes out: the charger may apply it and be cut off before its answer.
                self._part_versions.add(push.list_version)
            payload = wire.send_local_list(version, push, self.state.clock())
            answer = wire.send_answer(version, await self._call(cid, rec, connected_at, ("SendLocalList", payload)))
            if answer == "NotSupported":
                raise Unsupported("it answered SendLocalList with NotSupported")
            if answer != "Accepted":
                rec.version = None  # part of it may have been applied: only a Full is sure now
                if pushes[0].update_type == FULL:
                    raise CallFailed(f"it answered the whole list (version {push.list_version}) with {answer}")
                log.info("local list: charger %s answered a change with %s; sending the whole list", cid, answer)
                return False
            rec.version = push.list_version
        return True

    def _report(self, cid: str, target: int, pushes: tuple[Push, ...]) -> None:
        entries = sum(len(p.entries) for p in pushes)
        if pushes[0].update_type != FULL:
            log.info("local list: charger %s now holds version %d (%d change(s))", cid, target, entries)
            return
        log.info("local list: charger %s now holds version %d (%d tag(s) in %d message(s))", cid, target, entries, len(pushes))
        self.state.note(
            "local_list_sent",
            f"charger {cid}: local list version {target} sent whole ({entries} tag(s))",
            charger_id=cid,
            data={"version": target, "tags": entries, "messages": len(pushes)},
        )

    async def _set_up(self, cid: str, rec: ChargerList, connected_at: datetime, version: str) -> None:
        support, word = wire.enable_answer(version, await self._call(cid, rec, connected_at, wire.enable_request(version)))
        if support is Support.NO:
            raise Unsupported(f"switching the list on was answered {word}")
        if support is Support.REFUSED:
            self.state.rare(logging.WARNING, cid, "local-list-enable",
                            "local list: charger %s refused to switch its list on (%s); sending it anyway", cid, word)
        try:
            rec.per_message = wire.items_answer(version, await self._call(cid, rec, connected_at, wire.items_request(version)))
        except CallErrorReceived:
            rec.per_message = wire.DEFAULT_ITEMS_PER_MESSAGE  # it does not say: the common size
        held = wire.version_answer(version, await self._call(cid, rec, connected_at, wire.version_request(version)))
        if held is None:
            raise Unsupported("GetLocalListVersion says it has no local list")
        rec.version, rec.set_up = held, True

    async def _plan(self, cid: str, rec: ChargerList, version: str, target: int) -> tuple[Push, ...]:
        """Differentials when the journal holds every change since the charger's version, else the whole list."""
        if rec.version in self._part_versions:
            log.info("local list: charger %s says it holds version %d, which numbered one part of a list sent "
                     "in parts: it may hold only some of it and gets the whole list", cid, rec.version)
        elif rec.version is not None:
            changes = wire.changes_between(self._journal, rec.version, target)
            if changes is not None:
                sendable = tuple(e for e in changes if self._fits(cid, version, e))
                return wire.plan_differential(sendable, rec.version, target, rec.per_message)
        rows = await self.store.tokens.tags()
        entries = [
            ListEntry(r["tag"], r["status"], parse_ts(r["expiry"]) if r["expiry"] else None, r["group"]) for r in rows
        ]
        return wire.plan_full([e for e in entries if self._fits(cid, version, e)], target, rec.per_message)

    def _fits(self, cid: str, version: str, entry: ListEntry) -> bool:
        if wire.fits(version, entry):
            return True
        self.state.rare(
            logging.WARNING, cid, f"local-list-long-{version}",
            "local list: charger %s (%s) takes tags of at most %d characters: tag %s… is not sent to it",
            cid, version, wire.MAX_ID_CHARS[version], self.store.hash_tag(entry.tag)[:8],
        )
        return False
