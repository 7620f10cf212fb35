"""Smart charging over OCPP: set up each charger that connects, send the leases the core decides.

The shell around `controller.core.sharing` and `controller.core.leases`: every call to a charger runs in a
task of this component's TaskGroup (never inside an OCPP handler), under the OCPP call timeout, and
its answer goes back into the lease book. A charger that refuses profiles falls back to a
ChargePointMaxProfile of its safe-default share, else counts as drawing its maximum; the cycle
raises an alarm for either.

Kept in one file past 400 lines: the set-up (what a charger holds of the gateway's, what it holds
of other people's) and the leases read and write one record per charger, its mode, and the
fallback that either may end in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from config.schema import SquareConfig
from controller.core.leases import LeaseBook
from controller.core.sharing import safe_default_a
from controller.shell.bounds import OperatorBounds
from controller.store.lease_journal import LeaseJournal
from drivers.contract.backend import (
    CallErrorReceived,
    CallFailed,
    CallTimedOut,
    ChargerNotConnected,
    InvalidRequest,
)
from drivers.contract.orders import Order
from drivers.ocpp import profiles16 as p16
from drivers.ocpp.dialects import Dialect, dialect
from drivers.ocpp.found_profiles import from_composite

log = logging.getLogger("laadplein.charging")

TX_MODE, MAX_MODE, NONE_MODE, SETUP_MODE, CONFORMANCE_MODE = "tx", "max", "none", "setting up", "conformance"
CONFORMANCE_PROBLEM = "conformance mode: the gateway sends it nothing of its own; counted at its maximum"


class SetupStore(Protocol):
    """What smart charging needs of the store's set-up memory (`controller.store.setups.SetupMemory`)."""

    async def put(self, charger_id: str, items: dict[str, str], at: datetime) -> None: ...

    async def forget(self, charger_id: str) -> None: ...


def _profile_item(payload: dict[str, Any]) -> tuple[str, str]:
    """A SetChargingProfile payload as a set-up item: ("profile:<id>", its canonical JSON)."""
    profile = payload.get("csChargingProfiles") or payload.get("chargingProfile") or {}
    profile_id = profile.get("chargingProfileId", profile.get("id"))
    return f"profile:{profile_id}", json.dumps(payload, sort_keys=True, separators=(",", ":"))


class ChargerCalls(Protocol):
    """What smart charging needs of the OCPP server: a request to a charger, answered or raising CallFailed."""

    async def call(self, charger_id: str, action: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    def connected(self) -> dict[str, str]:
        """Charger id -> negotiated subprotocol ("ocpp1.6", "ocpp2.0.1") of every open connection."""


@dataclass
class ChargerSetup:
    """How far a charger's set-up got, and what it can do."""

    connected_at: datetime
    mode: str = SETUP_MODE
    done: bool = False
    problem: str = ""  # why it is not in TX_MODE, for the alarm
    full: bool = False  # sends all of the set-up (nothing remembered of the charger)


def connector_key(charger_id: str, connector_id: int) -> str:
    """The key of a connector in the lease book and the core: "CP01/1"."""
    return f"{charger_id}/{connector_id}"


class SmartCharging:
    """Owns the lease book and the calls that carry it out."""

    def __init__(self, cfg: SquareConfig, calls: ChargerCalls, clock: Callable[[], datetime], wake: asyncio.Event) -> None:
        self.cfg = cfg
        self.calls = calls
        self.clock = clock
        self.wake = wake
        battery = cfg.battery
        self.book = LeaseBook(
            lease_s=cfg.control.lease_s,
            reaction_s=cfg.control.reaction_s,
            battery_revert_s=float(battery.revert_timeout_s) if battery is not None else None,
            poll_s=battery.poll_s if battery is not None else 1.0,
        )
        self.keys: list[str] = []  # every connector, in bay order (then the rest by key)
        self.safe_defaults: dict[str, float] = {}
        self.rotations: dict[str, str] = {}  # key -> "RST"...
        self._compute_safe_defaults()
        self.setups: dict[str, ChargerSetup] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._sleep = asyncio.sleep  # between set-up attempts (a test may hold it)
        self._refusals: dict[str, int] = {}  # charger -> leases refused in a row
        self._hold_until: dict[str, datetime] = {}  # key -> no new lease before (after a refusal)
        self._clearing: set[str] = set()  # leases being taken back
        self._sending: set[str] = set()  # leases on their way (never taken back meanwhile)
        self.journal: LeaseJournal | None = None  # set by the daemon: leases written down before they go out
        self.conformance = cfg.ocpp.conformance_mode
        self.memory: SetupStore | None = None  # set by the daemon, with `accepted` as the store had it
        self.accepted: dict[str, dict[str, str]] = {}  # charger -> set-up item -> value it accepted
        self._boots: dict[str, datetime] = {}  # charger -> its last BootNotification seen
        self.bounds: OperatorBounds | None = None  # set by the daemon: other people's profiles
        self._request_id = 990000  # GetChargingProfiles requests of the gateway's own
        self._touched: dict[str, int] = {}  # charger -> the operator's profile requests seen

    def _compute_safe_defaults(self) -> None:
        cfg = self.cfg
        by_bay = [connector_key(b.charger, b.connector) for b in sorted(cfg.bays, key=lambda b: b.id)]
        rest = sorted(
            connector_key(c.id, n) for c in cfg.chargers for n in range(1, c.connectors + 1)
        )
        self.keys = by_bay + [k for k in rest if k not in by_bay]
        shares = safe_default_a(cfg.grid.limit_a - cfg.grid.base_load_a, self.keys, cfg.control.min_current_a)
        for key in self.keys:
            charger_id = key.split("/")[0]
            share_a = min(shares[key], self.cfg.charger(charger_id).max_current_a)
            self.safe_defaults[key] = share_a
            self.book.set_safe_default(key, share_a)
        for c in cfg.chargers:
            if c.phase_rotation is not None:
                for n in range(1, c.connectors + 1):
                    self.rotations[connector_key(c.id, n)] = c.phase_rotation

    async def run(self) -> None:
        """Own the calls to chargers until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            try:
                await asyncio.Event().wait()
            finally:
                self._tasks = None

    def _spawn(self, coro: Any, name: str, on_crash: Callable[[], None] | None = None) -> None:
        if self._tasks is None:
            coro.close()
            if on_crash is not None:
                on_crash()
            return
        self._tasks.create_task(self._guarded(coro, name, on_crash), name=name)

    async def _guarded(self, coro: Any, name: str, on_crash: Callable[[], None] | None) -> None:
        """One call's task: a bug in it is logged, never the end of the daemon's other work."""
        try:
            await coro
        except Exception:
            log.exception("smart charging: %s failed", name)
            if on_crash is not None:
                on_crash()

    # ---- charger set-up -----------------------------------------------------------------------

    def charger_seen(self, charger_id: str, connected_at: datetime | None, online: bool, booted_at: datetime | None = None) -> None:
        """Called every cycle: start the set-up of a charger that (re)connected or booted.

        A BootNotification (new firmware, a reset) voids what the charger accepted before: all of the
        set-up goes out again. In conformance mode nothing goes out: the charger counts at its maximum.
        """
        setup = self.setups.get(charger_id)
        if not online or connected_at is None:
            return
        if self.conformance:
            if setup is None or setup.connected_at != connected_at:
                self.setups[charger_id] = ChargerSetup(connected_at, CONFORMANCE_MODE, True, CONFORMANCE_PROBLEM)
            return
        booted = booted_at is not None and self._boots.get(charger_id) != booted_at
        if booted:
            self._boots[charger_id] = booted_at  # type: ignore[assignment]
            if self.accepted.pop(charger_id, None) is not None:
                log.info("charger %s booted: its whole set-up goes out again", charger_id)
        # A boot right after the connect (the usual order) needs no second set-up when the first one
        # sends everything anyway.
        if setup is None or setup.connected_at != connected_at or (booted and not (setup.full and not setup.done)):
            if self.bounds is not None:
                self._touched[charger_id] = self.bounds.touched.get(charger_id, 0)  # this set-up covers it
            setup = self.setups[charger_id] = ChargerSetup(connected_at, full=charger_id not in self.accepted)
            self._spawn(self._set_up(charger_id, setup), f"setup-{charger_id}")
        else:
            self._notice_operator(charger_id, connected_at)

    def _notice_operator(self, charger_id: str, connected_at: datetime) -> None:
        """A profile request of the operator's may have replaced or cleared the gateway's own (1.6 replaces
        a profile of the same stack level and purpose): what it remembers of the charger is void (the
        API has forgotten it on disk already), the set-up goes out again now, and so do the leases."""
        touched = self.bounds.touched.get(charger_id, 0) if self.bounds is not None else 0
        if self._touched.get(charger_id, 0) == touched:
            return
        self._touched[charger_id] = touched
        self.accepted.pop(charger_id, None)
        if self.bounds is not None:
            self.bounds.forget_composites(charger_id)
        log.info("charger %s: the operator changed its profiles; its set-up and leases go out again", charger_id)
        for key in self.keys:
            if key.startswith(charger_id + "/"):
                self.book.resend(key)
        setup = self.setups[charger_id] = ChargerSetup(connected_at, full=True)
        self._spawn(self._set_up(charger_id, setup), f"setup-{charger_id}")

    async def _forget(self, charger_id: str) -> None:
        try:
            await self.memory.forget(charger_id)  # type: ignore[union-attr]
        except (sqlite3.Error, OSError) as exc:
            log.warning("charger %s: its old set-up could not be struck from the store (%s)", charger_id, exc)

    def dialect(self, charger_id: str) -> Dialect:
        """The charger's OCPP version's adapter (1.6 while it is not connected)."""
        return dialect(self.calls.connected().get(charger_id))

    def mode(self, charger_id: str) -> str:
        """tx | max | none | setting up | conformance (also for a charger never seen)."""
        setup = self.setups.get(charger_id)
        return setup.mode if setup is not None else SETUP_MODE

    async def _set_up(self, charger_id: str, setup: ChargerSetup) -> None:
        """control.md "Charger set-up on connect": safe default, meter values, phase rotation, each sent
        only where it differs from what the charger accepted since its last BootNotification.

        Until it is done the charger's connectors count at its maximum. A set-up that gets no answer
        is tried again, every 10 s up to a minute apart, for as long as the charger stays connected.
        """
        delay_s = 10.0
        while self.setups.get(charger_id) is setup:
            try:
                await self._set_up_once(charger_id, setup)
                return
            except ChargerNotConnected:
                return  # gone: the next connect sets it up
            except CallFailed as exc:
                setup.problem = f"set-up got no answer ({exc})"
                log.warning("charger %s: %s; counted at its maximum, trying again in %.0f s", charger_id, setup.problem, delay_s)
            except Exception as exc:  # what the charger said broke a step: the charger is not left unsteered for good
                setup.problem = f"set-up failed ({type(exc).__name__}: {exc})"
                log.exception("charger %s: %s; counted at its maximum, trying again in %.0f s", charger_id, setup.problem, delay_s)
            await self._sleep(delay_s)
            delay_s = min(60.0, delay_s * 2)

    async def _set_up_once(self, charger_id: str, setup: ChargerSetup) -> None:
        charger = self.cfg.charger(charger_id)
        words = self.dialect(charger_id)
        known = charger_id in self.accepted  # else the charger may hold anything of ours from before
        held = dict(self.accepted.get(charger_id, {}))
        before = dict(held)
        sent = 0

        async def call(action: str, payload: dict[str, Any]) -> dict[str, Any]:
            nonlocal sent
            if self.setups.get(charger_id) is not setup:
                raise ChargerNotConnected(f"charger {charger_id}: a newer set-up took over")
            sent += 1
            return await self._call(charger_id, action, payload)

        if not known and self.memory is not None:
            # a boot or the operator voided what was remembered: on disk too, before anything goes out,
            # so that a restart meanwhile cannot trust the old record
            await self._forget(charger_id)
        try:
            refused: list[str] = []
            limits = {n: self._bounded_default(charger_id, n) for n in range(1, charger.connectors + 1)}
            wanted: set[str] = set()
            for label, payload in words.safe_defaults(limits):
                item, value = _profile_item(payload)
                where = payload.get("connectorId", payload.get("evseId"))
                if self.bounds is not None and isinstance(where, int) and self.bounds.holds_default_slot(charger_id, where):
                    # never clobber it: it is the fallback there, counted as such (count_defaults)
                    log.warning("charger %s: %s holds someone else's TxDefaultProfile at stack level 0; the safe default "
                                "is not sent there", charger_id, label)
                    continue
                wanted.add(item)
                if held.get(item) == value:
                    continue
                held.pop(item, None)
                try:
                    answer = await call("SetChargingProfile", payload)
                    if answer.get("status") == "Accepted":
                        held[item] = value
                    else:
                        refused.append(f"{label}: {answer.get('status')}")
                except CallErrorReceived as exc:
                    refused.append(f"{label}: {exc.code}")
            if not refused:
                # The gateway's own profiles that this set-up does not have: a ChargePointMaxProfile of an
                # earlier fallback (it would cap the charger for good), a safe default that moved.
                stale = sorted(int(i.split(":")[1]) for i in held if i.startswith("profile:") and i not in wanted)
                if not known:
                    stale = sorted({*stale, p16.MAX_PROFILE_ID})
                for profile_id in stale:
                    try:
                        answer = await call("ClearChargingProfile", words.clear_profile(profile_id))
                        if answer.get("status") in ("Accepted", "Unknown"):
                            held.pop(f"profile:{profile_id}", None)
                    except CallErrorReceived as exc:
                        log.info("charger %s: clearing its old profile %d failed (%s)", charger_id, profile_id, exc)
            if not refused:
                await self._find_profiles(charger_id, words.version, limits, held, call)
            meter = str(self.cfg.control.meter_interval_s)
            if held.get("meter") != meter:
                problems = await words.configure_meter(call, self.cfg.control.meter_interval_s)
                for problem in problems:
                    log.warning("charger %s: %s", charger_id, problem)
                if not problems:
                    held["meter"] = meter
            if charger.phase_rotation is None and "rotation" not in held:
                try:
                    found = await words.read_rotation(call, charger.connectors)
                    held["rotation"] = "read"  # what it said, none included, holds until it boots
                    held.update({f"rotation:{n}": rotation for n, rotation in found.items()})
                except (CallErrorReceived, InvalidRequest) as exc:
                    log.info("charger %s: no phase rotation (%s)", charger_id, exc)
            if charger.phase_rotation is None:
                for n in range(1, charger.connectors + 1):
                    if f"rotation:{n}" in held:
                        self.rotations[connector_key(charger_id, n)] = held[f"rotation:{n}"]
        finally:
            if self.setups.get(charger_id) is setup:  # else a newer set-up (after a boot) keeps the record
                await self._remember(charger_id, held, before)
        if self.setups.get(charger_id) is not setup:
            return  # it reconnected meanwhile: the newer set-up decides
        if not refused:
            setup.mode, setup.problem = TX_MODE, ""
            rotations = sorted({self.rotations.get(connector_key(charger_id, n), "unknown") for n in range(1, charger.connectors + 1)})
            log.info(
                "charger %s set up (%s): safe default %s A per connector, meter values every %d s, phase rotation %s",
                charger_id,
                f"{sent} requests" if sent else "it holds all of it already, nothing sent",
                "/".join(f"{self.safe_defaults[connector_key(charger_id, n)]:g}" for n in range(1, charger.connectors + 1)),
                self.cfg.control.meter_interval_s,
                "/".join(rotations),
            )
        else:
            await self._fall_back(charger_id, f"refused the safe default ({', '.join(refused)})")
        setup.done = True
        self.wake.set()

    def count_defaults(self, now: datetime) -> None:
        """What each connector falls back to where no lease holds, as the fuse counts it: the safe
        default, or someone else's TxDefaultProfile where that gives more (the charger follows it once
        a lease runs out)."""
        if self.bounds is None:
            return
        for key in self.keys:
            charger_id, n = key.split("/")
            theirs_a = self.bounds.default_a(charger_id, int(n), now)
            counted_a = self.safe_defaults[key] if theirs_a is None else max(self.safe_defaults[key], theirs_a)
            counted_a = min(counted_a, float(self.cfg.charger(charger_id).max_current_a))
            if counted_a != self.book.safe_default_a(key):
                if counted_a > self.safe_defaults[key]:
                    log.warning("%s: someone else's TxDefaultProfile gives %.1f A where no lease holds; counted at that",
                                key, counted_a)
                self.book.set_safe_default(key, counted_a)

    def _bounded_default(self, charger_id: str, n: int) -> float:
        """A connector's safe default (A), never above a bound someone else set there; below the
        minimum that means 0."""
        key = connector_key(charger_id, n)
        share_a = self.safe_defaults[key]
        cap_a = self.bounds.cap_a(charger_id, n, None, self.clock()) if self.bounds is not None else None
        if cap_a is None or cap_a >= share_a:
            return share_a
        return 0.0 if cap_a < self.cfg.control.min_current_a else cap_a

    async def _find_profiles(
        self, charger_id: str, version: str, limits: dict[int, float], held: dict[str, str], call: Callable[..., Any],
    ) -> None:
        """Look for profiles someone else set (control.md): a 2.0.1 charger reports them all
        (ReportChargingProfiles, after GetChargingProfiles); a 1.6 charger shows per connector a
        composite schedule, which is someone else's bound where it goes below the safe default the
        gateway gave it (`limits`). A connector with a lease is not looked at (the lease is in its
        composite)."""
        if self.bounds is None:
            return
        if version == "ocpp2.0.1":
            self._request_id += 1
            try:
                # K09.FR.03 asks for a criterion: every source of limits there is lists them all
                criteria = {"chargingLimitSource": ["CSO", "EMS", "SO", "Other"]}
                await call("GetChargingProfiles", {"requestId": self._request_id, "chargingProfile": criteria})
            except CallErrorReceived as exc:
                log.info("charger %s: its charging profiles could not be listed (%s)", charger_id, exc)
            return
        for n in sorted(limits):
            key = connector_key(charger_id, n)
            item = f"composite:{n}"
            # "none" (nothing of anyone else's lower) holds until the charger's profiles change; a bound
            # is read again, its schedule from now on
            if held.get(item) == "none" or self.book.lease_ends_at(key) is not None:
                continue
            try:
                answer = await call("GetCompositeSchedule", {"connectorId": n, "duration": 86400, "chargingRateUnit": "A"})
            except CallErrorReceived as exc:
                log.info("charger %s/%d: no composite schedule (%s)", charger_id, n, exc)
                continue
            found = from_composite(charger_id, n, answer, limits[n], self.clock())
            held[item] = "none" if found is None else "bound"
            self.bounds.composite(charger_id, n, found)

    async def _remember(self, charger_id: str, held: dict[str, str], before: dict[str, str]) -> None:
        """Keep what the charger holds now; written to the store only when it changed."""
        self.accepted[charger_id] = held
        if self.memory is None or held == before:
            return
        try:
            await self.memory.put(charger_id, held, self.clock())
        except (sqlite3.Error, OSError, ValueError) as exc:  # the next connect sends more than needed, nothing worse
            log.warning("charger %s: its set-up could not be written down (%s)", charger_id, exc)

    async def _fall_back(self, charger_id: str, why: str) -> None:
        """A charger that refuses profiles: ChargePointMaxProfile of its safe-default share, else its maximum."""
        setup = self.setups.get(charger_id)
        if setup is None:
            return
        charger = self.cfg.charger(charger_id)
        share_a = self.charger_share_a(charger_id)
        try:
            answer = await self._call(charger_id, "SetChargingProfile", self.dialect(charger_id).charger_max(share_a, self.clock()))
            accepted = answer.get("status") == "Accepted"
        except CallFailed:
            accepted = False
        if accepted:
            held = dict(self.accepted.get(charger_id, {}))
            held[f"profile:{p16.MAX_PROFILE_ID}"] = "fallback"
            await self._remember(charger_id, held, self.accepted.get(charger_id, {}))
            setup.mode = MAX_MODE
            setup.problem = f"{why}; limited to {share_a:g} A as a whole (ChargePointMaxProfile)"
        else:
            setup.mode = NONE_MODE
            setup.problem = f"{why}; no ChargePointMaxProfile either: counted at its maximum {charger.max_current_a:g} A"
        log.warning("charger %s: %s", charger_id, setup.problem)

    # ---- what the core may count on --------------------------------------------------------

    def fixed_a(self, key: str, now: datetime) -> float:
        """What a connector that the gateway cannot steer may draw now (A).

        Not set up yet (its old defaults may be gone) or no profiles at all: the charger's maximum.
        Under a ChargePointMaxProfile one car may take the whole charger's share.
        """
        charger_id = key.split("/")[0]
        mode = self.mode(charger_id)
        charger = self.cfg.charger(charger_id)
        if mode in (NONE_MODE, SETUP_MODE, CONFORMANCE_MODE):
            return float(charger.max_current_a)
        if mode == MAX_MODE:
            return max(self.book.in_force_a(key, now), self.charger_share_a(charger_id))
        return self.book.in_force_a(key, now)

    def charger_share_a(self, charger_id: str) -> float:
        """The sum of a charger's connectors' safe defaults, at most its maximum (A)."""
        charger = self.cfg.charger(charger_id)
        share_a = sum(self.safe_defaults[connector_key(charger_id, n)] for n in range(1, charger.connectors + 1))
        return min(share_a, float(charger.max_current_a))

    # ---- leases ---------------------------------------------------------------------------

    def send(self, orders: list[Order], transactions: dict[str, int], now: datetime, wire_ids: dict[str, str] | None = None) -> None:
        """Carry out the book's orders of `now`, each in its own task (its schedule counts from `now`).

        `transactions` are the gateway's ids; `wire_ids` the names OCPP 2.0.1 chargers gave them.
        """
        for order in orders:
            tx = transactions.get(order.key)
            if tx is None:
                self.book.sent(order, self.clock(), False)
                continue
            charger_id, connector = order.key.split("/")
            self._spawn(
                self._send_lease(order, charger_id, int(connector), tx, now, (wire_ids or {}).get(order.key)),
                f"lease-{order.key}",
                on_crash=lambda o=order: self.book.sent(o, self.clock(), None),
            )

    def clear_lease(self, key: str) -> None:
        """Take a lease back (ClearChargingProfile by its id, which needs no clock): the charger
        returns to its safe default. Until the charger confirms, the book keeps counting the lease."""
        if key in self._clearing or key in self._sending or self.conformance:
            return  # one call at a time per connector: the clock check asks again next cycle
        self._clearing.add(key)
        charger_id, connector = key.split("/")
        self._spawn(self._clear_lease(key, charger_id, int(connector)), f"clear-{key}", on_crash=lambda: self._clearing.discard(key))

    async def _clear_lease(self, key: str, charger_id: str, connector_id: int) -> None:
        try:
            answer = await self._call(charger_id, "ClearChargingProfile", self.dialect(charger_id).clear_profile(p16.lease_profile_id(connector_id)))
            if answer.get("status") in ("Accepted", "Unknown"):
                self.book.end_session(key)
                if self.journal is not None:
                    await self.journal.ended(key)
                log.info("%s: lease taken back (%s); the safe default holds", key, answer.get("status"))
        except CallFailed as exc:
            log.warning("%s: taking the lease back failed (%s); it runs out by itself", key, exc)
        finally:
            self._clearing.discard(key)
            self.wake.set()

    def may_lease(self, key: str, now: datetime) -> bool:
        """False while a connector waits after a refused lease."""
        until = self._hold_until.get(key)
        return until is None or now >= until

    async def _send_lease(
        self, order: Order, charger_id: str, connector_id: int, transaction_id: int, now: datetime, wire_id: str | None = None,
    ) -> None:
        wire_tx = wire_id if wire_id is not None else transaction_id
        payload = self.dialect(charger_id).lease(order, connector_id, wire_tx, now, self.cfg.control.lease_s)
        safe_a = self.safe_defaults.get(order.key, 0.0)
        if self.journal is not None and not await self.journal.before_send(
            order, charger_id, connector_id, transaction_id, now, safe_a
        ):
            # Without the bound on disk a restart could not know what the charger holds: do not send.
            self.book.sent(order, self.clock(), False)
            self._hold_until[order.key] = self.clock() + timedelta(seconds=10)
            return
        self._sending.add(order.key)
        try:
            await self._call_lease(order, charger_id, connector_id, transaction_id, payload)
        finally:
            self._sending.discard(order.key)
        if self.journal is not None:
            await self.journal.after_send(order, charger_id, connector_id, transaction_id, now)

    async def _call_lease(
        self, order: Order, charger_id: str, connector_id: int, transaction_id: int, payload: dict[str, Any],
    ) -> None:
        try:
            answer = await self._call(charger_id, "SetChargingProfile", payload)
        except ChargerNotConnected:
            # The connection may have dropped after the frame went out: the charger may hold it.
            self.book.sent(order, self.clock(), None)
            return
        except CallErrorReceived as exc:
            self.book.sent(order, self.clock(), False)
            await self._refused(order, charger_id, f"answered a lease with {exc.code}", final=exc.code == "NotSupported")
            return
        except CallFailed as exc:
            # No answer: the charger may hold the new lease, or not; the book counts the higher.
            log.warning("charger %s/%d: lease %.1f A got no answer (%s)", charger_id, connector_id, order.limit_a, exc)
            self.book.sent(order, self.clock(), None)
            return
        status = answer.get("status")
        self.book.sent(order, self.clock(), status == "Accepted")
        if status == "Accepted":
            self._refusals.pop(charger_id, None)
            if self.journal is not None:
                await self.journal.accepted(order, transaction_id)
        else:
            await self._refused(order, charger_id, f"refused a lease ({status})", final=False)

    async def _refused(self, order: Order, charger_id: str, why: str, *, final: bool) -> None:
        """A refused lease is retried after 10 s (a charger may refuse while a transaction settles);
        the third refusal in a row, or NotSupported, means the charger does not take leases."""
        count = self._refusals.get(charger_id, 0) + 1
        self._refusals[charger_id] = count
        if final or count >= 3:
            await self._fall_back(charger_id, why + ("" if final else f", {count} times in a row"))
        else:
            log.warning("charger %s: %s for %s; trying again in 10 s", charger_id, why, order.key)
            self._hold_until[order.key] = self.clock() + timedelta(seconds=10)
        self.wake.set()

    async def _call(self, charger_id: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        # The server bounds every call by ocpp.call_timeout_s; this is only a backstop.
        try:
            # a request split within the charger's message limits (and their read) takes several calls
            async with asyncio.timeout(4 * self.cfg.ocpp.call_timeout_s + 5):
                answer = await self.calls.call(charger_id, action, payload)
        except TimeoutError:
            raise CallTimedOut(f"{action} to charger {charger_id}: no answer") from None
        if not isinstance(answer, dict):
            raise CallTimedOut(f"{action} to charger {charger_id}: an answer that is not an object")
        return answer
