"""The control cycle: freeze the state, let the pure deciders decide, carry out only the differences.

Runs every `control.period_s` and at once when an event wakes it. Light commands are
persisted (with their `seq`) before they are published; alarms are conditions checked
every cycle, raised once and cleared when the condition ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from controller.clock import local_text, wire_ts
from controller.reconcile import reconcile_sessions
from controller.restart import RESTART_ALARM
from controller.state import SquareState
from signage.commands import light_command, same_command
from signage.rules import PLUGGED_STATUSES, STATUS_WORDS, BayInputs, SignageSettings, decide

log = logging.getLogger("laadplein.cycle")


class LightPublisher(Protocol):
    """What the cycle needs of the MQTT link."""

    connected: bool

    def publish_light(self, bay_id: str, command: dict) -> None: ...

    def publish_state(self, snapshot: dict) -> None: ...

    def published_at(self, bay_id: str) -> datetime | None: ...


RELEASE_DATE = datetime(2026, 11, 1, tzinfo=UTC)
"""A gateway clock before this is wrong: the software did not exist yet."""
CLOCK_JUMP_S = 60.0
IDLE_STATUSES = STATUS_WORDS - PLUGGED_STATUSES  # no car drawing current
CLOCK_SETTLE_S = 300.0


class ClockCheck:
    """Is the gateway's clock sane? Not before the release date, no jump of more than a minute.

    After a jump the clock counts as sane again once it has run steadily for CLOCK_SETTLE_S.
    """

    def __init__(self) -> None:
        self.sane = True
        self.why = ""
        self.since: datetime | None = None
        self._last: tuple[datetime, float] | None = None
        self._jump_at_s: float | None = None

    def observe(self, now: datetime, mono_s: float) -> bool:
        """Take the wall clock `now` and the monotonic clock; True when leases may rely on the wall clock."""
        jumped = False
        if self._last is not None:
            wall_s = (now - self._last[0]).total_seconds()
            drift_s = wall_s - (mono_s - self._last[1])
            if abs(drift_s) > CLOCK_JUMP_S:
                jumped = True
                self._jump_at_s = mono_s
                self.why = f"it jumped by {drift_s:+.0f} s"
        self._last = (now, mono_s)
        before = self.sane
        if now < RELEASE_DATE:
            self.sane, self.why = False, f"{wire_ts(now)} is before this software's release"
        elif jumped or (self._jump_at_s is not None and mono_s - self._jump_at_s < CLOCK_SETTLE_S):
            self.sane = False
        else:
            self.sane, self._jump_at_s = True, None
        if before != self.sane:
            self.since = now
            if self.sane:
                log.info("gateway clock sane again")
            else:
                log.error("gateway clock not sane: %s; only safe defaults until it is", self.why)
        return self.sane


class Cycle:
    """Owns the loop from state to decisions to commands."""

    def __init__(self, state: SquareState, mqtt: LightPublisher, power=None, *, notifier=None) -> None:
        self.state = state
        self.mqtt = mqtt
        self.power = power  # controller.power.PowerControl, or None (lights only)
        self.notifier = notifier  # controller.service.ServiceNotifier (its alive()), or None
        self.clock_check = ClockCheck()
        cfg = state.cfg
        self.settings = SignageSettings(
            min_free_ev_bays=cfg.signage.min_free_ev_bays,
            grace_s=cfg.signage.grace_s,
            min_dwell_s=cfg.signage.min_dwell_s,
            language=cfg.signage.language,
            timezone=cfg.site.timezone,
        )
        self._announced: set[str] = set()  # bays whose current command went to the link since start
        self._last_snapshot: dict | None = None
        self.cycles = 0
        self.overruns = 0
        self._alarms: set[str] | None = None  # keys of the active alarms, loaded at the first cycle

    async def run(self) -> None:
        """Forever: wait for the period or an event, then run one cycle."""
        period_s = self.state.cfg.control.period_s
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the event is set, and the daemon would not stop.
                async with asyncio.timeout(period_s):
                    await self.state.wake.wait()
            except TimeoutError:
                pass
            self.state.wake.clear()
            started = time.monotonic()
            await self.run_once(self.state.clock())
            if self.notifier is not None:
                # Only a completed cycle pings the watchdog: a hung loop goes quiet and gets restarted.
                self.notifier.alive()
            took_s = time.monotonic() - started
            if took_s > period_s:
                self.overruns += 1
                log.warning("cycle took %.3f s, longer than its period of %.3f s", took_s, period_s)

    async def run_once(self, now: datetime) -> None:
        """One cycle at `now`."""
        self.cycles += 1
        await self._expire_overrides(now)
        await reconcile_sessions(self.state, now, self.state.cfg.ocpp.reconcile_after_s)
        inputs = [self.bay_inputs(bay.id, now) for bay in self.state.cfg.bays]
        known = [i for i in inputs if i.known]
        decision = decide(known, self.state.lights, self.settings, now)
        for change in decision.changes:
            await self._send_change(change, now)
        for bay_id, light in decision.lights.items():
            self.state.lights[bay_id] = light
            if bay_id not in self._announced and bay_id in self.state.commands:
                # Known again after a restart with an unchanged command: publish it with the same seq.
                self.mqtt.publish_light(bay_id, self.state.commands[bay_id])
                self._announced.add(bay_id)
        if self.power is not None:
            sane = self.clock_check.observe(now, time.monotonic())
            self.power.step(now, leases_allowed=sane)
        await self._check_alarms(now)
        if self.power is not None:
            await self._check_power_alarms(now)
        await self._flush_log()
        snapshot = self.snapshot(now)
        comparable = {k: v for k, v in snapshot.items() if k != "ts"}
        if comparable != self._last_snapshot:
            self._last_snapshot = comparable
            self.mqtt.publish_state(snapshot)

    # ---- inputs ----------------------------------------------------------------------------

    def bay_inputs(self, bay_id: str, now: datetime) -> BayInputs:
        st = self.state
        bay = st.cfg.bay(bay_id)
        charger_cfg = st.cfg.charger(bay.charger)
        conn = st.chargers[bay.charger].connectors[bay.connector]
        override = st.overrides.get(bay_id)
        return BayInputs(
            bay_id=bay_id,
            has_sensor=bay.sensor,
            known=st.bay_known(bay_id, now),
            connector_status=conn.status,
            charger_online=st.charger_online(bay.charger, now),
            occupied=st.sensor_reading(bay_id, now) if bay.sensor else None,
            session_over_at=conn.session_over_at,
            # Until power sharing sends limits, every connector may take its charger's maximum.
            spare_a=float(charger_cfg.max_current_a),
            override=override if override is not None and override.until > now else None,
        )

    # ---- outputs ---------------------------------------------------------------------------

    async def _send_change(self, change, now: datetime) -> None:
        st = self.state
        bay_id = change.bay_id
        old_cmd = st.commands.get(bay_id)
        seq = (old_cmd["seq"] + 1) if old_cmd else 1
        cmd = light_command(change.new, seq, now)
        if old_cmd is not None and same_command(old_cmd, cmd):
            return
        await st.store.save_light_command(bay_id, cmd)  # seq on disk before it is on the wire
        st.commands[bay_id] = cmd
        old = change.old
        was = f"{old.color} ({old.reason})" if old else "nothing"
        log.info("bay %s: light %s -> %s (%s): %s [seq %d]", bay_id, was, cmd["color"], cmd["reason"], change.why, seq)
        await st.store.add_event(
            "light",
            now,
            bay_id=bay_id,
            message=f"bay {bay_id}: {was} -> {cmd['color']} ({cmd['reason']}): {change.why}",
            data={"command": cmd, "why": change.why, "inputs": dict(change.inputs)},
        )
        self.mqtt.publish_light(bay_id, cmd)
        self._announced.add(bay_id)

    async def _expire_overrides(self, now: datetime) -> None:
        st = self.state
        for bay_id, o in sorted(st.overrides.items()):
            if o.until <= now:
                del st.overrides[bay_id]
                if o.stored:
                    await st.store.clear_override(bay_id)
                st.note("override_ended", f"bay {bay_id}: override {o.color} by {o.who or 'unknown'} ended", at=now, bay_id=bay_id)

    async def _check_alarms(self, now: datetime) -> None:
        st = self.state
        cfg = st.cfg
        if self._alarms is None:
            self._alarms = {a["key"] for a in await st.store.active_alarms()}
        for charger in cfg.chargers:
            key = f"charger_offline:{charger.id}"
            c = st.chargers[charger.id]
            never = c.connected_at is None and (now - st.started_at).total_seconds() >= cfg.signage.startup_wait_s
            gone = not c.online and c.disconnected_at is not None and not st.charger_online(charger.id, now)
            if never or gone:
                since = c.disconnected_at or st.started_at
                bays = ", ".join(b.id for b in cfg.bays if b.charger == charger.id)
                power = f"; {self.power.offline_note(charger.id, now)}" if self.power is not None and key not in self._alarms else ""
                await self._raise(
                    key, since, f"charger {charger.id} offline since {local_text(since, cfg.site.timezone)}",
                    f"its bays ({bays}) show green (fault){power}", charger_id=charger.id,
                )
            elif c.online:
                await self._clear(key, now)
        if RESTART_ALARM in self._alarms:
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

    async def _check_power_alarms(self, now: datetime) -> None:
        from controller.charging import MAX_MODE, NONE_MODE

        st, ch = self.state, self.power.charging
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

    def _power_view(self) -> dict | None:
        if self.power is None or self.power.view is None:
            return None
        v = self.power.view
        return {
            "grid_a": [round(a, 1) for a in v.budget.grid_a[: self.state.cfg.grid.phases]],
            "battery_a": [round(a, 1) for a in v.budget.battery_a[: self.state.cfg.grid.phases]],
            "load_a": [round(a, 1) for a in v.sharing.load_a[: self.state.cfg.grid.phases]],
            "short": v.sharing.short,
            "grid_source": v.grid_source,
            "battery_setpoint_w": None if v.dispatch is None else round(v.dispatch.setpoint_w),
            "battery_reason": None if v.dispatch is None else v.dispatch.reason,
            "reasons": {d.key: d.reason for d in v.sharing.connectors if d.reason},
        }

    async def _raise(self, key: str, since: datetime, message: str, action: str, **where) -> None:
        """Raise an alarm unless it is already active (the store keeps one per key)."""
        if key not in self._alarms:
            self._alarms.add(key)
            if await self.state.store.raise_alarm(key, since, message, action, **where):
                # A full car that stops drawing is the usual reason for not resuming: no warning.
                level = logging.INFO if key.startswith("not_resuming:") else logging.WARNING
                log.log(level, "ALARM %s: %s; %s", key, message, action)

    async def _clear(self, key: str, now: datetime) -> None:
        if key in self._alarms:
            self._alarms.discard(key)
            if await self.state.store.clear_alarm(key, now):
                log.info("alarm %s cleared", key)

    async def _flush_log(self) -> None:
        st = self.state
        entries, st.pending_log = st.pending_log, []
        await st.store.add_events([(e.kind, e.at, e.bay_id, e.charger_id, e.message, e.data) for e in entries])

    # ---- views -----------------------------------------------------------------------------

    def _battery_view(self) -> dict:
        b = self.state.battery
        if b is None:
            return {"online": False, "soc_pct": None, "power_w": None, "state": None, "reason": "no reading yet"}
        usable = b.online and b.trusted
        return {
            "online": usable,
            "soc_pct": round(b.soc_pct, 1) if usable and b.soc_pct is not None else None,
            "power_w": round(b.power_w) if usable and b.power_w is not None else None,
            "state": b.state,
            "reason": None if usable else b.reason,
        }

    def _grid_phase(self, charger_id: str, connector: int, charger_phase: int) -> int:
        if self.state.cfg.grid.phases == 1:
            return 0
        from drivers.ocpp16_profiles import grid_phase

        rotation = None
        if self.power is not None:
            rotation = self.power.charging.rotations.get(f"{charger_id}/{connector}")
        return grid_phase(rotation or self.state.cfg.charger(charger_id).phase_rotation, charger_phase)

    def _grid_estimate(self, cars_a: list[float], now: datetime) -> list[float]:
        """Grid current per phase (A): the meter's when it reads, else cars + base load - battery."""
        st, cfg = self.state, self.state.cfg
        r = st.grid_reading
        if (
            cfg.grid_meter is not None and r is not None and r.online and r.current_a is not None
            and st.grid_reading_at is not None and (now - st.grid_reading_at).total_seconds() <= 3 * cfg.grid_meter.poll_s + 1
        ):
            return list(r.current_a)
        b = st.battery
        battery_a = 0.0
        if b is not None and b.online and b.trusted and b.power_w is not None:
            battery_a = b.power_w / (cfg.grid.voltage_v * cfg.grid.phases)
        return [abs(a + cfg.grid.base_load_a - battery_a) if p < cfg.grid.phases else 0.0 for p, a in enumerate(cars_a)]

    def snapshot(self, now: datetime) -> dict:
        """The state snapshot of interfaces.md §4 (MQTT `P/state` and `GET /api/status`)."""
        st = self.state
        cfg = st.cfg
        grid = [0.0, 0.0, 0.0]
        bays = []
        for bay in cfg.bays:
            conn = st.chargers[bay.charger].connectors[bay.connector]
            fresh = conn.sample_at is not None and (now - conn.sample_at).total_seconds() < 3 * 60
            # a car that left takes its current with it: a sample from before the connector went idle is not shown
            left = (conn.status in IDLE_STATUSES and conn.status_changed_at is not None and conn.sample_at is not None
                    and conn.sample_at <= conn.status_changed_at)
            currents = conn.current_a if fresh and not left else (None, None, None)
            for i, a in enumerate(currents):
                grid[self._grid_phase(bay.charger, bay.connector, i)] += a or 0.0
            present = [a for a in currents if a is not None]
            light = st.lights.get(bay.id)
            bays.append(
                {
                    "id": bay.id,
                    "light": light.color if light else None,
                    "reason": light.reason if light else None,
                    "text": light.text if light else None,
                    "occupied": st.sensor_reading(bay.id, now) if bay.sensor else None,
                    "charger": bay.charger,
                    "connector": bay.connector,
                    "status": conn.status,
                    "limit_a": self.power.limit_a(bay.charger, bay.connector) if self.power is not None else None,
                    "current_a": round(max(present), 1) if present else None,
                }
            )
        phases = cfg.grid.phases
        grid = self._grid_estimate(grid, now)
        return {
            "site": cfg.site.id,
            "ts": wire_ts(now),
            "timezone": cfg.site.timezone,
            "grid": {"limit_a": cfg.grid.limit_a, "current_a": [round(a, 1) for a in grid[:phases]]},
            "battery": None if cfg.battery is None else self._battery_view(),
            "power": self._power_view(),
            "bays": bays,
            "chargers": [
                {"id": c.id, "online": st.chargers[c.id].online, "ocpp": st.chargers[c.id].ocpp_version}
                for c in cfg.chargers
            ],
        }
