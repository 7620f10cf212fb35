"""Alarms: conditions checked every cycle, raised once (one per key, kept in the store) and cleared
when the condition ends. Each says what happened, to which charger or bay, since when, and what the
square does meanwhile, for the technician at the gateway (interfaces.md §6).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from controller.core.currents import PLAUSIBLE_OVER_MAX
from controller.shell.charging import MAX_MODE, NONE_MODE
from controller.shell.clock_check import ClockCheck
from controller.shell.power import PowerControl
from controller.shell.restart import RESTART_ALARM
from controller.shell.state import SquareState
from drivers.contract.clock import local_text

log = logging.getLogger("laadplein.cycle")

FOREIGN_TX_ALARM = "foreign_transaction:"
FOREIGN_TX_QUIET_S = 3600  # a foreign-transaction alarm clears after this long without another
IMPLAUSIBLE_QUIET_S = 600.0
"""An implausible-current alarm ends after this long without one: a charger that keeps sending them
(or alternates with plausible ones) raises it once, not every cycle."""
SENSOR_DOUBT_ALARM_S = 60.0
"""A sensor that contradicts the charger is alarmed only when it still does after this long: a radio
sensor reports a car that just plugged in 10 to 60 s after the charger does."""
OVER_LIMIT_QUIET_S = 600
"""A charger's over-limit alarm clears after this long without going over again."""
# A connector whose reading stays above what it may draw: alarmed once that has lasted this long (a
# decrease may take a reaction time or two to show), cleared after it has obeyed this long again.
DISOBEY_ALARM_S = 30.0
DISOBEY_QUIET_S = 120.0
LIGHT_FOREIGN_QUIET_S = 600.0
QUIET_AFTER_RESTART_S = {
    FOREIGN_TX_ALARM: FOREIGN_TX_QUIET_S,
    "implausible_current:": IMPLAUSIBLE_QUIET_S,
    "charger_over_limit:": OVER_LIMIT_QUIET_S,
    "current_over_limit:": DISOBEY_QUIET_S,
    "light_foreign:": LIGHT_FOREIGN_QUIET_S,
}
"""Alarms raised from what the gateway keeps in memory only: one still active from before a restart
has no record behind it any more, so it clears once this long has passed since the start without
the thing happening again (it would be raised anew from a new record)."""
DISK_CHECK_INTERVAL_S = 60
"""The free space on the database's filesystem is looked at this often."""
DISK_CHECK_TIMEOUT_S = 5.0
"""How long the cycle waits for that look; a filesystem that does not answer is skipped, not waited on."""


class FixtureLink(Protocol):
    """What the alarms need of the MQTT link: is it up, and when did a bay's command go out."""

    connected: bool

    def published_at(self, bay_id: str) -> datetime | None: ...


class Alarms:
    """The square's alarms, checked by the cycle after each decision."""

    def __init__(self, state: SquareState, mqtt: FixtureLink, power: PowerControl | None, clock_check: ClockCheck) -> None:
        self.state = state
        self.mqtt = mqtt
        self.power = power
        self.clock_check = clock_check
        self.active: set[str] | None = None  # keys of the active alarms, loaded at the first check
        self._disk_checked_at: datetime | None = None
        # connector key -> since when it does not obey its limit, since when it obeys again, and why
        self._disobeying: dict[str, tuple[datetime, datetime | None, str]] = {}
        self._disk_probe: asyncio.Future | None = None  # the free-space look running in a worker thread

    async def check(self, now: datetime) -> None:
        """Raise what is wrong at `now`, clear what is no longer wrong."""
        st = self.state
        cfg = st.cfg
        if self.active is None:
            self.active = {a["key"] for a in await st.store.active_alarms()}
        for charger in cfg.chargers:
            key = f"charger_offline:{charger.id}"
            c = st.chargers[charger.id]
            never = c.connected_at is None and (now - st.started_at).total_seconds() >= cfg.signage.startup_wait_s
            gone = not c.online and c.disconnected_at is not None and not st.charger_online(charger.id, now)
            if never or gone:
                since = c.disconnected_at or st.started_at
                bays = ", ".join(b.id for b in cfg.bays if b.charger == charger.id)
                power = f"; {self.power.offline_note(charger.id, now)}" if self.power is not None and key not in self.active else ""
                await self._raise(
                    key, since, f"charger {charger.id} offline since {local_text(since, cfg.site.timezone)}",
                    f"its bays ({bays}) show green (fault){power}", charger_id=charger.id,
                )
            elif c.online:
                await self._clear(key, now)
        if RESTART_ALARM in self.active:
            # Back to normal once every charger has been back (and told its status), or after
            # ten minutes: a charger still missing then has its own alarm.
            back = all(st.chargers[c.id].connected_at is not None for c in cfg.chargers)
            if back or (now - st.started_at).total_seconds() > 600:
                await self._clear(RESTART_ALARM, now)
        key = "broker_offline"
        if not st.broker_online and (now - st.started_at).total_seconds() > 10:
            await self._raise(
                key, now, f"MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port} unreachable",
                "control goes on; light commands are published again on reconnect",
            )
        elif st.broker_online:
            await self._clear(key, now)
        if cfg.battery is not None:
            await self._check_battery(now)
        for bay in cfg.bays:
            await self._check_fixture(bay.id, now)
            if bay.sensor:
                s = st.sensors[bay.id]
                key = f"sensor_silent:{bay.id}"
                if s.at is not None and (now - s.at).total_seconds() > cfg.signage.sensor_timeout_s:
                    await self._raise(
                        key, s.at, f"bay {bay.id}: sensor silent since {local_text(s.at, cfg.site.timezone)}",
                        "the bay counts as occupied (never reserved)", bay_id=bay.id,
                    )
                elif s.at is not None:
                    await self._clear(key, now)
        if self.power is not None:
            await self._check_power(now)
        await self._check_foreign_transactions(now)
        await self._check_currents(now)
        await self._check_over_limit(now)
        await self._check_disk(now)
        await self._clear_left_from_before(now)
        await self._check_foreign_lights(now)
        await self._check_doubted_sensors(now)

    async def _check_battery(self, now: datetime) -> None:
        st = self.state
        b, where = st.battery, f"{st.cfg.battery.host}:{st.cfg.battery.port}"
        plan = self.power.battery_note(now) if self.power is not None else "power sharing plans as if the battery gives nothing"
        action = f"{plan}; the link is retried every 2 s, and trusted again after 3 plausible readings"
        if b is None:
            if (now - st.started_at).total_seconds() > 10:
                await self._raise("battery_offline", st.started_at, f"no reading from the battery at {where} yet", action)
            return
        since = st.battery_changed_at or now
        if not b.online:
            await self._clear("battery_untrusted", now)
            await self._raise("battery_offline", since, f"battery link lost: {b.reason}", action)
            return
        await self._clear("battery_offline", now)
        if not b.trusted and (now - since).total_seconds() >= 10:
            # Trust takes 3 plausible readings after every (re)connect: only a lasting distrust is an alarm.
            await self._raise("battery_untrusted", since, f"battery readings not trusted: {b.reason}", action)
        elif b.trusted:
            await self._clear("battery_untrusted", now)

    async def _check_fixture(self, bay_id: str, now: datetime) -> None:
        st = self.state
        cmd = st.commands.get(bay_id)
        sent_at = self.mqtt.published_at(bay_id)
        if cmd is None or sent_at is None:
            return
        noack, wrong = f"fixture_silent:{bay_id}", f"fixture_wrong:{bay_id}"
        ack = st.acks.get(bay_id)
        if ack is not None and ack[0] == cmd["seq"]:
            await self._clear(noack, now)
            if ack[1] == cmd["color"]:
                await self._clear(wrong, now)
            else:
                await self._raise(
                    wrong, ack[2], f"bay {bay_id}: fixture shows {ack[1]}, commanded {cmd['color']} (seq {cmd['seq']})",
                    "command stays retained on the broker; check the fixture", bay_id=bay_id,
                )
        elif self.mqtt.connected and now - sent_at > timedelta(seconds=st.cfg.signage.ack_timeout_s):
            await self._raise(
                noack, sent_at,
                f"bay {bay_id}: fixture did not ack seq {cmd['seq']} ({cmd['color']}) within "
                f"{st.cfg.signage.ack_timeout_s:g} s",
                "command stays retained on the broker; check the fixture and its link", bay_id=bay_id,
            )

    async def _check_power(self, now: datetime) -> None:
        st, ch = self.state, self.power.charging
        if st.cfg.ocpp.conformance_mode:
            await self._raise(
                "conformance_mode", st.started_at,
                "conformance mode: the gateway sends chargers no request of its own (no set-up, leases, triggers or list)",
                "every charger counts at its maximum; for certification runs only ([ocpp] conformance_mode)",
            )
        else:
            await self._clear("conformance_mode", now)
        for charger in st.cfg.chargers:
            setup = ch.setups.get(charger.id)
            key = f"profiles_refused:{charger.id}"
            if setup is not None and setup.mode in (MAX_MODE, NONE_MODE):
                await self._raise(key, now, f"charger {charger.id} refuses charging profiles", setup.problem, charger_id=charger.id)
            elif setup is not None and setup.done:
                await self._clear(key, now)
            key = f"setup:{charger.id}"
            live = st.chargers[charger.id]
            if setup is not None and live.online and not setup.done and (now - setup.connected_at).total_seconds() > 30:
                await self._raise(
                    key, setup.connected_at, f"charger {charger.id} not set up: {setup.problem or 'no answer yet'}",
                    "its connectors count at its maximum; set-up is tried again", charger_id=charger.id,
                )
            elif setup is not None and setup.done:
                await self._clear(key, now)
        meter = st.cfg.grid_meter
        if meter is not None:
            r, at = st.grid_reading, st.grid_reading_at
            stale = at is None or (now - at).total_seconds() > 3 * meter.poll_s + 1
            if (r is None and (now - st.started_at).total_seconds() > 10) or (r is not None and (not r.online or stale)):
                why = "no reading yet" if r is None else (r.reason if not r.online else "no reading for a while")
                await self._raise(
                    "grid_meter", at or st.started_at, f"grid meter ({meter.driver}) lost: {why}",
                    f"the load is estimated from the chargers and the battery, keeping {meter.margin_a:g} A per phase free",
                )
            elif r is not None and r.online and not stale:
                await self._clear("grid_meter", now)
        view = self.power.view
        await self._check_obeying(now, view.sharing.connectors if view is not None else ())
        if view is not None:
            for d in view.sharing.connectors:
                key = f"not_resuming:{d.key}"
                if d.not_resuming:
                    await self._raise(
                        key, now, f"{d.key}: the car does not resume charging after a pause",
                        "its minimum goes to the cars that want more; it is offered current again in a later turn",
                    )
                else:
                    await self._clear(key, now)
        key = "clock"
        if not self.clock_check.sane:
            await self._raise(key, self.clock_check.since or now, f"gateway clock not sane: {self.clock_check.why}",
                              "only the safe default is used until the clock is sane")
        else:
            await self._clear(key, now)

    async def _check_obeying(self, now: datetime, decisions) -> None:
        """A connector whose reported current stays above what it may draw (control.md rule 1): a
        charger that ignores its limit, or reports more than its car draws. One alarm per connector."""
        st = self.state
        for d in decisions:
            since, obeyed_at, why = self._disobeying.get(d.key, (None, None, ""))
            if not d.obeys:
                self._disobeying[d.key] = (since or now, None, d.reason)
            elif since is not None:
                self._disobeying[d.key] = (since, obeyed_at or now, why)
        for key, (since, obeyed_at, why) in sorted(self._disobeying.items()):
            alarm = f"current_over_limit:{key}"
            if obeyed_at is not None and (now - obeyed_at).total_seconds() >= DISOBEY_QUIET_S:
                del self._disobeying[key]
                await self._clear(alarm, now)
            elif obeyed_at is None and (now - since).total_seconds() >= DISOBEY_ALARM_S:
                charger_id, n = key.split("/")
                bay = st.cfg.bay_for(charger_id, int(n))
                await self._raise(
                    alarm, since, f"charger {charger_id} connector {n}{f' (bay {bay.id})' if bay else ''} {why}",
                    "the other cars share what is left beside that reading; check that the charger applies "
                    "charging profiles and that its meter is right, or who else can connect as it",
                    charger_id=charger_id, bay_id=bay.id if bay else None,
                )

    async def _clear_left_from_before(self, now: datetime) -> None:
        """Clear an alarm of QUIET_AFTER_RESTART_S raised before a restart, once its quiet time has passed
        since the start without a record behind it."""
        st = self.state
        live = {f"{FOREIGN_TX_ALARM}{cid}" for cid in st.foreign_tx}
        live |= {f"light_foreign:{bay}" for bay in st.foreign_lights}
        live |= {f"current_over_limit:{key}" for key in self._disobeying}
        for cid, c in st.chargers.items():
            if c.over_limit is not None:
                live.add(f"charger_over_limit:{cid}")
            live |= {f"implausible_current:{cid}/{n}" for n, conn in c.connectors.items() if conn.implausible_at is not None}
        up_s = (now - st.started_at).total_seconds()
        for key in sorted(self.active or ()):
            quiet_s = next((q for prefix, q in QUIET_AFTER_RESTART_S.items() if key.startswith(prefix)), None)
            if quiet_s is not None and key not in live and up_s >= quiet_s:
                await self._clear(key, now)

    async def _check_foreign_transactions(self, now: datetime) -> None:
        """A charger naming another's transaction: one alarm per charger, naming the connector, cleared
        after `FOREIGN_TX_QUIET_S` without another (a charger replaying old ids after the gateway's
        database was replaced stops by itself; one that keeps on stays in view)."""
        st = self.state
        for charger_id, seen in sorted(st.foreign_tx.items()):
            key = f"{FOREIGN_TX_ALARM}{charger_id}"
            if (now - seen.last_at).total_seconds() >= FOREIGN_TX_QUIET_S:
                await self._clear(key, now)
                st.forget_foreign_tx(charger_id)
                continue
            e = seen.first
            where = f"charger {charger_id} connector {e.connector_id}" if e.connector_id else f"charger {charger_id} (connector not named)"
            await self._raise(
                key, seen.first_at, f"{where} named transaction {e.transaction} of {e.owner} ({e.action})",
                "answered without applying it: the owner's session, energy and leases are untouched; clears after"
                f" {FOREIGN_TX_QUIET_S // 60} min without another; check that charger's configuration and who can connect as it",
                charger_id=charger_id,
            )

    async def _check_currents(self, now: datetime) -> None:
        """A reported current beyond what the charger can give (control.md rule 1): one alarm per
        connector, cleared once it has reported none for `IMPLAUSIBLE_QUIET_S`."""
        st = self.state
        for charger in st.cfg.chargers:
            for n, conn in sorted(st.chargers[charger.id].connectors.items()):
                key, at = f"implausible_current:{charger.id}/{n}", conn.implausible_at
                if at is None:
                    continue
                if (now - at).total_seconds() < IMPLAUSIBLE_QUIET_S:
                    bay = st.cfg.bay_for(charger.id, n)
                    top_a = charger.max_current_a * PLAUSIBLE_OVER_MAX
                    await self._raise(
                        key, at,
                        f"charger {charger.id} connector {n}{f' (bay {bay.id})' if bay else ''}: reported current"
                        f" {conn.implausible_a:g} A, beyond what it can give (0-{top_a:.1f} A)",
                        "the reading is ignored: the connector counts at its limit in force, and nothing of it is"
                        " taken off the grid meter's reading; check the charger's meter",
                        charger_id=charger.id, bay_id=bay.id if bay else None,
                    )
                else:
                    await self._clear(key, now)

    async def _check_over_limit(self, now: datetime) -> None:
        """A charger that sends more than its caps allow ([ocpp] max_messages_per_s, message_burst,
        max_samples_per_frame): one alarm per charger, cleared after a quiet spell."""
        for charger_id, c in sorted(self.state.chargers.items()):
            key = f"charger_over_limit:{charger_id}"
            if c.over_limit is None:
                continue
            since, last, what = c.over_limit
            if (now - last).total_seconds() >= OVER_LIMIT_QUIET_S:
                c.over_limit = None
                await self._clear(key, now)
            else:
                await self._raise(
                    key, since, f"charger {charger_id} sends more than it may: {what}",
                    "the rest is answered more slowly or dropped; check the charger's firmware and "
                    "settings (MeterValueSampleInterval), or who else uses its id", charger_id=charger_id,
                )

    async def _check_disk(self, now: datetime) -> None:
        """Free space on the database's filesystem below [storage] min_free_mb; looked at once a minute,
        in a worker thread (a stalled filesystem must not stall the loop)."""
        if self._disk_checked_at is not None and (now - self._disk_checked_at).total_seconds() < DISK_CHECK_INTERVAL_S:
            return
        self._disk_checked_at = now
        folder = Path(self.state.store.path).parent
        if self._disk_probe is not None and not self._disk_probe.done():
            return  # the last one is still stuck in its thread: do not pile up more
        self._disk_probe = asyncio.get_running_loop().run_in_executor(None, shutil.disk_usage, folder)
        self._disk_probe.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if given up on
        try:
            free_mb = (await asyncio.wait_for(asyncio.shield(self._disk_probe), DISK_CHECK_TIMEOUT_S)).free / 2**20
        except TimeoutError:
            log.warning("storage: the free space of %s did not come within %g s (a stalled filesystem?)",
                        folder, DISK_CHECK_TIMEOUT_S)
            return
        except OSError as exc:
            log.warning("storage: cannot read the free space of %s (%s)", folder, exc.strerror)
            return
        min_free_mb = self.state.cfg.storage.min_free_mb
        key = "disk_low"
        if free_mb < min_free_mb:
            await self._raise(
                key, now, f"storage: {free_mb:.0f} MB free on the filesystem of {folder} (below {min_free_mb} MB)",
                "the database may soon refuse writes (sessions, meter values); free space or lower "
                "storage.retention_days",
            )
        else:
            await self._clear(key, now)

    async def _check_foreign_lights(self, now: datetime) -> None:
        """A light command the gateway did not send: raised once per bay, cleared once the fixture acks
        the gateway's own command again."""
        st = self.state
        for bay_id, (at, seq, color) in sorted(st.foreign_lights.items()):
            key = f"light_foreign:{bay_id}"
            cmd, ack = st.commands.get(bay_id), st.acks.get(bay_id)
            if cmd is not None and ack is not None and ack[2] > at and ack[0] == cmd["seq"] and ack[1] == cmd["color"]:
                await self._clear(key, now)
                continue
            what = f"{color}, seq {seq}" if seq is not None else "an unreadable one"
            await self._raise(
                key, at, f"bay {bay_id}: a light command the gateway did not send ({what}) on its fixture's topic",
                "the gateway's own command is published again; whoever wrote it may write light topics: "
                "check the broker's access list (laadplein broker-acl) and who holds the gateway's password",
                bay_id=bay_id,
            )

    async def _check_doubted_sensors(self, now: datetime) -> None:
        """A sensor that said empty under a plugged-in car: a fault until it reports a car again."""
        st = self.state
        for bay in st.cfg.bays:
            if not bay.sensor:
                continue
            key, since = f"sensor_contradicts:{bay.id}", st.sensors[bay.id].doubted_at
            if since is None:
                await self._clear(key, now)
                continue
            if (now - since).total_seconds() < SENSOR_DOUBT_ALARM_S:
                continue  # doubted at once (the bay counts as occupied), alarmed only if it lasts
            await self._raise(
                key, since, f"bay {bay.id}: sensor said empty while charger {bay.charger} connector {bay.connector} "
                "had a car plugged in",
                "sensor fault: the bay counts as occupied (never reserved) until the sensor reports a car again; "
                "check the sensor, and who may write its topic (laadplein broker-acl)", bay_id=bay.id,
            )

    async def _raise(self, key: str, since: datetime, message: str, action: str, **where) -> None:
        """Raise an alarm unless it is already active (the store keeps one per key)."""
        if key not in self.active:
            self.active.add(key)
            if await self.state.store.raise_alarm(key, since, message, action, **where):
                # A full car that stops drawing is the usual reason for not resuming: no warning.
                level = logging.INFO if key.startswith("not_resuming:") else logging.WARNING
                log.log(level, "ALARM %s: %s; %s", key, message, action)

    async def _clear(self, key: str, now: datetime) -> None:
        if key in self.active:
            self.active.discard(key)
            if await self.state.store.clear_alarm(key, now):
                log.info("alarm %s cleared", key)
