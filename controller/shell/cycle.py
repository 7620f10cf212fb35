"""The control cycle: freeze the state, let the pure deciders decide, carry out only the differences.

Runs every `control.period_s` and at once when an event wakes it. Light commands are
persisted (with their `seq`) before they are published; then the alarms are checked
(`controller.shell.alarms`) and the snapshot published when it changed (`controller.shell.snapshot`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Protocol

from controller.shell.alarms import Alarms, FixtureLink
from controller.shell.clock_check import ClockCheck
from controller.shell.reconcile import reconcile_sessions
from controller.shell.snapshot import square_snapshot
from controller.shell.state import SquareState
from signage.commands import light_command, same_command
from signage.rules import BayInputs, SignageSettings, decide

log = logging.getLogger("laadplein.cycle")


class LightPublisher(FixtureLink, Protocol):
    """What the cycle needs of the MQTT link: what the alarms need, and publishing."""

    def publish_light(self, bay_id: str, command: dict) -> None: ...

    def publish_state(self, snapshot: dict) -> None: ...


class Cycle:
    """Owns the loop from state to decisions to commands."""

    def __init__(self, state: SquareState, mqtt: LightPublisher, power=None, *, notifier=None) -> None:
        self.state = state
        self.mqtt = mqtt
        self.power = power  # controller.shell.power.PowerControl, or None (lights only)
        self.notifier = notifier  # controller.shell.service.ServiceNotifier (its alive()), or None
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
        self.alarms = Alarms(state, mqtt, power, self.clock_check)

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
        await self.alarms.check(now)
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

    async def _flush_log(self) -> None:
        st = self.state
        entries, st.pending_log = st.pending_log, []
        await st.store.add_events([(e.kind, e.at, e.bay_id, e.charger_id, e.message, e.data) for e in entries])

    def snapshot(self, now: datetime) -> dict:
        """The state snapshot of interfaces.md §4 (MQTT `P/state` and `GET /api/status`)."""
        return square_snapshot(self.state, self.power, now)
