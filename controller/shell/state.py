"""The live state of the square: domain events in, persisted first where a charger relies on it.

`SquareState` is every driver's event sink and, with `controller.shell.transactions`, the OCPP
driver's backend (`controller.shell.backend`). It applies events to plain records, keeps what a
charger was told is true on disk before answering, and wakes the cycle. It makes no decisions:
those are the pure deciders' job.

Kept in one file past 400 lines: every event goes through the one `_apply`, in the order the
drivers delivered it, and the records it writes are in `controller.shell.live`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from config.schema import CHARGER_ID_PATTERN, SquareConfig
from controller.core.currents import PLAUSIBLE_OVER_MAX, plausible_a
from controller.shell.bounds import OperatorBounds
from controller.shell.live import (
    ChargerLive,
    ConnectorLive,
    ForeignTxLive,
    LogEntry,
    SensorLive,
)
from controller.store.database import Store
from controller.store.passwords import ChargerPasswords, restore_passwords
from drivers.contract import events as ev
from drivers.contract.clock import parse_ts, utc_now
from drivers.contract.text import printable
from drivers.contract.words import FAULT_STATUSES, FAULTED, STATUS_WORDS
from drivers.support.fault_log import FaultLog
from signage.rules import Light, Override, sensor_doubted, track_session_over

log = logging.getLogger("laadplein.state")

BOOT_TEXT_CHARS = 50  # a charger's vendor, model and firmware as kept and shown (OCPP 2.0.1's longest)

class SquareState:
    """The square's live state: what the drivers reported, as events applied in order (`record`)."""

    def __init__(self, cfg: SquareConfig, store: Store, *, clock=utc_now) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.started_at = clock()
        self.wake = asyncio.Event()
        self.chargers: dict[str, ChargerLive] = {
            c.id: ChargerLive(connectors={n: ConnectorLive() for n in range(1, c.connectors + 1)})
            for c in cfg.chargers
        }
        self.sensors: dict[str, SensorLive] = {b.id: SensorLive() for b in cfg.bays}
        self.overrides: dict[str, Override] = {}
        self.lights: dict[str, Light] = {}
        self.commands: dict[str, dict] = {}  # bay -> last command sent (with its seq)
        self.acks: dict[str, tuple[int, str, datetime]] = {}  # bay -> what the fixture says it shows
        # bay -> the last light command someone else put on its topic: (when, its seq, its colour)
        self.foreign_lights: dict[str, tuple[datetime, int | None, str | None]] = {}
        self.broker_online = False
        self.battery = None  # drivers.contract.devices.BatteryStatus, once read
        self.battery_changed_at: datetime | None = None  # when it last went online/offline/(un)trusted
        self.battery_at: datetime | None = None  # when the battery driver last reported
        self.grid_reading = None  # drivers.contract.devices.GridReading, once read
        self.grid_reading_at: datetime | None = None
        self.tz = ZoneInfo(cfg.site.timezone)
        self.pending_log: list[LogEntry] = []
        self.passwords = ChargerPasswords.from_config(cfg.chargers)  # hashes only (controller.store.passwords)
        # charger -> its use of transaction ids not its own, until the alarm clears
        self.foreign_tx: dict[str, ForeignTxLive] = {}
        self.bounds = OperatorBounds()  # other people's charging profiles on the chargers
        self.untracked_tx: set[int] = set()  # restored sessions recorded before leases were written down
        self.reconciled = 0  # sessions closed by the gateway since start
        self._faults = FaultLog()  # a charger repeating a message gets one line a minute per kind

    # ---- restore -------------------------------------------------------------------------

    async def restore(self) -> None:
        """Load what must survive a restart: open sessions, last light commands, overrides, API-set passwords."""
        await restore_passwords(self.store, self.passwords)
        for s in await self.store.open_sessions():
            conn = self.connector(s["charger"], s["connector"])
            if conn is None:
                continue
            if conn.transaction_id is not None:
                # Two open sessions on one connector: the older one ended unseen (a charger has
                # one transaction per connector); close it at its last reading.
                await self.close_unseen(s["charger"], s["connector"], conn.transaction_id, self.clock(),
                                      "a newer transaction was recorded on the same connector")
            conn.transaction_id, conn.tx_seen_at = s["id"], self.clock()
            conn.charger_tx = s["charger_tx"]
            if not s["leases_tracked"]:
                self.untracked_tx.add(s["id"])
        self.commands = await self.store.light_commands()
        self.lights = {bay: light_from_command(cmd) for bay, cmd in self.commands.items()}
        for bay, o in (await self.store.overrides()).items():
            self.overrides[bay] = Override(color=o["color"], until=o["until"], who=o["who"], why=o["why"])
        log.info(
            "restored %d open session(s), %d light command(s), %d override(s)",
            sum(1 for c in self.chargers.values() for k in c.connectors.values() if k.transaction_id),
            len(self.commands),
            len(self.overrides),
        )

    # ---- helpers -------------------------------------------------------------------------

    def connector(self, charger_id: str, connector_id: int) -> ConnectorLive | None:
        charger = self.chargers.get(charger_id)
        if charger is None:
            return None
        return charger.connectors.get(connector_id)

    def where(self, charger_id: str, connector_id: int) -> str:
        bay = self.cfg.bay_for(charger_id, connector_id)
        return f"{charger_id}/{connector_id}" + (f" (bay {bay.id})" if bay else "")

    def note(self, kind: str, message: str, *, at: datetime | None = None, bay_id=None, charger_id=None, data=None):
        """Queue an event for the log (written by the cycle) and wake the cycle."""
        self.pending_log.append(LogEntry(kind, at or self.clock(), message, bay_id, charger_id, data))
        self.wake.set()

    def rare(self, level: int, source: str, kind: str, msg: str, *args) -> None:
        """Log `msg` once per source and kind a minute, with how many like it were held back."""
        self._faults.log(log, level, source, kind, msg, *args)

    async def close_unseen(self, charger_id: str, connector_id: int, tx_id: int, stopped_at: datetime, why: str) -> None:
        """Close transaction `tx_id` on a connector at its last meter reading, saying `why`."""
        row = await self.store.runs.reconcile_session(tx_id, stopped_at)
        conn = self.chargers.get(charger_id).connectors.get(connector_id) if charger_id in self.chargers else None
        if conn is not None and conn.transaction_id == tx_id:
            conn.transaction_id, conn.charger_tx = None, None
        if row is None:
            return
        self.reconciled += 1
        bay = self.cfg.bay_for(charger_id, connector_id)
        where = f"{charger_id}/{connector_id}" + (f" (bay {bay.id})" if bay else "")
        last = f"sampled {row['last_sample_at']}" if row["last_sample_at"] else "no meter values: its start reading"
        self.note(
            "session_reconciled",
            f"{where}: transaction {tx_id} ended while the gateway did not see it ({why}); closed at its last"
            f" meter reading, {row['energy_wh']} Wh ({last})",
            charger_id=charger_id,
            bay_id=bay.id if bay else None,
            data={"transaction_id": tx_id, "energy_wh": row["energy_wh"], "why": why},
        )
        self.rare(logging.WARNING, charger_id, "reconciled", "%s: transaction %d closed by the gateway: %s", where, tx_id, why)

    def charger_online(self, charger_id: str, now: datetime) -> bool:
        """Online: connected, or closed for less than `offline_after_s` (a quick reconnect changes no light)."""
        c = self.chargers.get(charger_id)
        if c is None:
            return False
        if c.online:
            return True
        if c.disconnected_at is None:
            return False
        return (now - c.disconnected_at).total_seconds() < self.cfg.signage.offline_after_s

    def record_battery(self, status) -> None:
        """A battery poll's outcome (online, trusted, SoC, power); wakes the cycle when trust changes."""
        prev = self.battery
        self.battery = status
        self.battery_at = self.clock()
        if prev is None or (prev.online, prev.trusted) != (status.online, status.trusted):
            self.battery_changed_at = self.clock()
            if status.online and status.trusted:
                word = f"online and trusted: SoC {status.soc_pct:.0f} %, {status.power_w:.0f} W"
            elif status.online:
                word = f"answering but not trusted: {status.reason}"
            else:
                word = f"link lost: {status.reason}"
            self.note("battery", f"battery {word}")

    def record_grid(self, reading) -> None:
        """A grid meter reading (or its failure); wakes the cycle when the meter comes or goes."""
        prev = self.grid_reading
        self.grid_reading = reading
        self.grid_reading_at = self.clock()
        if prev is None or prev.online != reading.online:
            if reading.online:
                self.note("grid_meter", "grid meter reads: " + ", ".join(f"L{p + 1} {a:.1f} A" for p, a in enumerate(reading.current_a or ())))
            else:
                self.note("grid_meter", f"grid meter lost: {reading.reason}")

    # ---- CentralSystemBackend ------------------------------------------------------------

    def charger_known(self, charger_id: str) -> bool:
        # An unknown charger's id goes into logs, events and topics: only one a config could name.
        return charger_id in self.chargers or (
            self.cfg.ocpp.allow_unknown_chargers and re.fullmatch(CHARGER_ID_PATTERN, charger_id) is not None
        )

    def charger_password_ok(self, charger_id: str, password: str | None) -> bool:
        return self.passwords.check(charger_id, password)

    def charger_password_known(self, charger_id: str, password: str | None) -> bool | None:
        return self.passwords.known(charger_id, password)

    def charger_lenient(self, charger_id: str) -> bool:
        return charger_id in self.chargers and self.cfg.charger(charger_id).lenient

    def connector_count(self, charger_id: str) -> int:
        return self.cfg.charger(charger_id).connectors if charger_id in self.chargers else 0

    def connector_tx(self, charger_id: str, connector_id: int) -> str | None:
        """The transaction on a connector as its charger names it (2.0.1's own id, else the gateway's)."""
        live = self.chargers.get(charger_id)
        conn = live.connectors.get(connector_id) if live is not None else None
        if conn is None or conn.transaction_id is None:
            return None
        return conn.charger_tx if conn.charger_tx is not None else str(conn.transaction_id)

    def record(self, event: ev.Event) -> None:
        try:
            self._apply(event)
        except Exception:  # a bad event must not take the driver down with it
            log.exception("could not apply %s", type(event).__name__)
        # Meter samples and proof of life change no light: the periodic cycle picks them up.
        if not isinstance(event, (ev.MeterSample, ev.ChargerHeard)):
            self.wake.set()

    def _apply(self, event: ev.Event) -> None:
        match event:
            case ev.ChargerConnected(charger_id=cid, ocpp_version=ver, at=at, remote=remote):
                c = self.chargers.setdefault(cid, ChargerLive())
                c.online, c.ocpp_version, c.connected_at, c.last_heard, c.remote = True, ver, at, at, remote
                self.note("charger_connected", f"charger {cid} connected from {remote} ({ver})", at=at, charger_id=cid)
            case ev.ChargerDisconnected(charger_id=cid, at=at, reason=reason):
                c = self.chargers.get(cid)
                if c is not None:
                    c.online, c.disconnected_at = False, at
                self.note("charger_disconnected", f"charger {cid} disconnected: {reason or 'closed'}", at=at, charger_id=cid)
            case ev.ChargerBooted(charger_id=cid, at=at, vendor=vendor, model=model, firmware=fw):
                c = self.chargers.setdefault(cid, ChargerLive())
                # the charger's own words, kept as they may be shown (OCPP allows 50 characters each)
                vendor, model, fw = (printable(x, BOOT_TEXT_CHARS) for x in (vendor, model, fw))
                c.vendor, c.model, c.firmware, c.booted_at = vendor, model, fw, at
                self.note("charger_booted", f"charger {cid} booted: {vendor} {model} firmware {fw}".strip(), at=at, charger_id=cid)
            case ev.ProfilesFound(charger_id=cid, profiles=profiles):
                for profile in profiles:
                    self.bounds.found(profile, self.connector_tx(cid, profile.connector_id))
            case ev.ChargerHeard(charger_id=cid, at=at):
                c = self.chargers.get(cid)
                if c is not None:
                    c.last_heard = at
                return  # proof of life only: nothing for the cycle to decide
            case ev.ConnectorStatusChanged(charger_id=cid, connector_id=n, status=status, at=at, error_code=code, info=info):
                self._apply_status(cid, n, status, at, printable(code, 50), printable(info, 50))
            case ev.MeterSample():
                self._apply_sample(event)
            case ev.ForeignTransaction():
                self._apply_foreign(event)
            case ev.ChargerOverLimit(charger_id=cid, what=what, at=at):
                c = self.chargers.get(cid)
                if c is not None:
                    since = c.over_limit[0] if c.over_limit is not None else at
                    c.over_limit = (since, at, what)
                self.note("charger_over_limit", f"charger {cid}: {what}", at=at, charger_id=cid)
            case ev.OccupancyChanged(bay_id=bay, occupied=occupied, at=at):
                s = self.sensors.get(bay)
                if s is None:
                    return
                if s.occupied != occupied or s.at is None:
                    word = {True: "occupied", False: "empty", None: "fault (unreadable message)"}[occupied]
                    self.note("occupancy", f"bay {bay}: sensor says {word}", at=at, bay_id=bay, data={"occupied": occupied})
                s.occupied, s.at = occupied, at
                self._doubt_sensor(bay, at)
            case ev.LightAcked(bay_id=bay, seq=seq, color=color, at=at):
                self.acks[bay] = (seq, color, at)
            case ev.LightForeign(bay_id=bay, seq=seq, color=color, retained=was_retained, at=at):
                self._apply_foreign_light(bay, seq, color, was_retained, at)
            case ev.BrokerConnected(at=at):
                self.broker_online = True
                self.note("broker_connected", "MQTT broker connected", at=at)
            case ev.BrokerLost(at=at, reason=reason):
                if self.broker_online:
                    self.note("broker_lost", f"MQTT broker lost: {reason}", at=at)
                self.broker_online = False
            case _:
                log.debug("ignored event %r", event)

    def _apply_foreign_light(self, bay: str, seq: int | None, color: str | None, was_retained: bool, at: datetime) -> None:
        """Someone else wrote the bay's light topic; the link has put the gateway's command back."""
        if bay not in self.sensors:
            return
        before = self.foreign_lights.get(bay)
        self.foreign_lights[bay] = (at, seq, color)
        if before is None or (at - before[0]).total_seconds() >= 60:  # a flood is one line a minute in the log
            what = f"{color}, seq {seq}" if seq is not None else "unreadable"
            how = "found retained on the broker" if was_retained else "published"
            self.note("light_foreign", f"bay {bay}: a light command the gateway did not send was {how} ({what}); "
                      "the gateway's own command is published again", at=at, bay_id=bay,
                      data={"seq": seq, "color": color, "retained": was_retained})

    def _doubt_sensor(self, bay_id: str, at: datetime) -> None:
        """A sensor that says empty while the bay's charger has a car plugged in is a sensor fault."""
        s = self.sensors.get(bay_id)
        if s is None:
            return
        bay = self.cfg.bay(bay_id)
        if not bay.sensor:
            return
        conn = self.connector(bay.charger, bay.connector)
        status = conn.status if conn is not None else None
        doubted = sensor_doubted(s.doubted_at is not None, s.occupied, status)
        if doubted and s.doubted_at is None:
            s.doubted_at = at
            self.note("sensor_doubted", f"bay {bay_id}: sensor says empty while its connector is {status} (a car "
                      "plugged in): sensor fault, the bay counts as occupied until the sensor reports a car again",
                      at=at, bay_id=bay_id, data={"status": status})
        elif not doubted and s.doubted_at is not None:
            s.doubted_at = None
            self.note("sensor_trusted", f"bay {bay_id}: sensor reports a car again; its readings count again",
                      at=at, bay_id=bay_id)

    def _apply_status(self, cid: str, n: int, status: str, at: datetime, code: str, info: str = "") -> None:
        c = self.chargers.get(cid)
        if c is None:
            return
        if n == 0:
            # The charger as a whole: Unavailable/Faulted applies to every connector's bay.
            for k, conn in c.connectors.items():
                if status in FAULT_STATUSES or conn.status is None:
                    self._apply_status(cid, k, status, at, code, info)
            return
        conn = c.connectors.get(n)
        if conn is None:
            self.rare(logging.WARNING, cid, "status-connector", "charger %s reports status for connector %d, which the config does not have", cid, n)
            return
        if status not in STATUS_WORDS:
            self.rare(logging.WARNING, cid, "status-word", "charger %s/%d: unknown status %r treated as Faulted", cid, n, status)
            status = FAULTED
        conn.session_over_at = track_session_over(conn.status, status, conn.session_over_at, at)
        if status != conn.status:
            # Receipt time, on the clock that stamps the readings too: a reading counts only when it
            # came after the status (controller.core.currents); a charger's own stamp could be anything.
            conn.status_changed_at = self.clock()
            bay = self.cfg.bay_for(cid, n)
            detail = f"{conn.status or 'unknown'} -> {status}" + (f" ({code})" if code and code != "NoError" else "")
            detail += f": {info}" if info else ""
            self.note(
                "connector_status",
                f"{self.where(cid, n)}: {detail}",
                at=at,
                charger_id=cid,
                bay_id=bay.id if bay else None,
                data={"connector": n, "status": status, "error_code": code} | ({"info": info} if info else {}),
            )
        conn.status, conn.status_at, conn.error_code = status, at, code
        bay = self.cfg.bay_for(cid, n)
        if bay is not None and bay.sensor:
            self._doubt_sensor(bay.id, at)

    def _apply_foreign(self, e: ev.ForeignTransaction) -> None:
        """A charger named another's transaction: one event-log entry per episode, a log line a minute."""
        e = replace(e, transaction=printable(e.transaction, 64))  # a 2.0.1 charger names its own
        where = self.where(e.charger_id, e.connector_id) if e.connector_id else f"{e.charger_id} (no connector named)"
        seen = self.foreign_tx.get(e.charger_id)
        if seen is None:
            self.foreign_tx[e.charger_id] = ForeignTxLive(e.at, e.at, 1, e)
            bay = self.cfg.bay_for(e.charger_id, e.connector_id) if e.connector_id else None
            self.note(
                "foreign_transaction",
                f"{where}: {e.action} named transaction {e.transaction}, which is {e.owner}'s; answered, not applied",
                at=e.at,
                charger_id=e.charger_id,
                bay_id=bay.id if bay else None,
                data={"connector": e.connector_id, "action": e.action, "transaction": e.transaction, "owner": e.owner},
            )
        else:
            seen.last_at, seen.count = e.at, seen.count + 1
            if not seen.first.connector_id and e.connector_id:
                seen.first = e  # the alarm names a connector when one is known
        self.rare(
            logging.WARNING, e.charger_id, "foreign-tx", "%s: %s named transaction %s, which is %s's: answered, not applied",
            where, e.action, e.transaction, e.owner,
        )

    def forget_foreign_tx(self, charger_id: str) -> None:
        """The episode is over (its alarm cleared): the next foreign id starts a new one."""
        self.foreign_tx.pop(charger_id, None)

    def _apply_sample(self, s: ev.MeterSample) -> None:
        conn = self.connector(s.charger_id, s.connector_id)
        if conn is None:
            return
        max_a = float(self.cfg.charger(s.charger_id).max_current_a)
        wild = [a for a in s.current_a if not plausible_a(a, max_a)]
        if wild:
            # Counted at its limit in force, never subtracted from the grid meter; the alarms say so.
            conn.implausible_at, conn.implausible_a = self.clock(), wild[0]
            self.rare(logging.WARNING, s.charger_id, "implausible-current",
                      "%s: reported current %s A is beyond what its charger can give (0-%.1f A): ignored",
                      self.where(s.charger_id, s.connector_id), wild[0], max_a * PLAUSIBLE_OVER_MAX)
        if any(v is not None for v in s.current_a):
            before = max((a for a in conn.current_a if a is not None), default=None)
            now_a = max(a for a in s.current_a if a is not None)
            if before is not None and not wild and now_a <= before - 1.0:
                self.wake.set()  # a lower limit shows in the meter values: rises elsewhere may follow
            conn.current_a = s.current_a
            conn.sample_at = self.clock()
        if s.power_w is not None:
            conn.power_w = s.power_w
        if s.energy_wh is not None:
            conn.energy_wh = s.energy_wh

    # ---- derived views -------------------------------------------------------------------

    def bay_known(self, bay_id: str, now: datetime) -> bool:
        """Known once a connector status arrived since start, an override holds it, or `startup_wait_s` passed."""
        bay = self.cfg.bay(bay_id)
        conn = self.connector(bay.charger, bay.connector)
        if conn is not None and conn.status is not None:
            return True
        override = self.overrides.get(bay_id)
        if override is not None and override.until > now:
            return True  # a person said what the bay shows: no need to wait for the charger
        return (now - self.started_at).total_seconds() >= self.cfg.signage.startup_wait_s

    def sensor_reading(self, bay_id: str, now: datetime) -> bool | None:
        """The sensor's reading, or None (counts as occupied) with no reading, a fault (also one that
        contradicts the charger), or silence too long."""
        s = self.sensors[bay_id]
        if s.at is None or s.doubted_at is not None:
            return None
        if now - s.at > timedelta(seconds=self.cfg.signage.sensor_timeout_s):
            return None
        return s.occupied


def light_from_command(cmd: dict) -> Light:
    """The Light a stored command stands for (its time counts as the last colour change)."""
    return Light(
        color=cmd["color"],
        reason=cmd["reason"],
        text=cmd["text"],
        pictogram=cmd["pictogram"],
        changed_at=parse_ts(cmd["ts"]),
    )
