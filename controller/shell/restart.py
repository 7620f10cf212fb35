"""The daemon's runs: a start after an unclean stop (a crash, a kill, the watchdog or a power cut)
is an alarm that says when the daemon was last alive and what was restored; a clean stop is
written down so that the next start knows it was one."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3

from controller.store.runs import Run
from drivers.contract.clock import local_text

log = logging.getLogger("laadplein.daemon")

RESTART_ALARM = "daemon_restart"
ALIVE_EVERY_S = 60.0


async def start_run(store, state, lease_bounds: int) -> Run | None:
    """Record this start; raise the restart alarm when the run before it did not stop cleanly.
    None when the disk refuses (the square runs all the same; the next start cannot tell)."""
    now = state.clock()
    try:
        run, prev = await store.runs.begin(now, os.getpid())
    except sqlite3.Error as exc:
        log.error("could not record this start of the daemon (%s); running without it", exc)
        return None
    if prev is None or prev.stopped_at is not None:
        await store.clear_alarm(RESTART_ALARM, now)
        return run
    tz = state.cfg.site.timezone
    sessions = sum(1 for c in state.chargers.values() for k in c.connectors.values() if k.transaction_id)
    quiet_s = (now - prev.alive_at).total_seconds()
    message = (
        f"the daemon stopped uncleanly (crash, kill, watchdog or power cut); it ran since"
        f" {local_text(prev.started_at, tz)}, last sign of life {local_text(prev.alive_at, tz)},"
        f" {quiet_s:.0f} s before this start (signs of life are written every {ALIVE_EVERY_S:.0f} s)"
    )
    action = (
        f"restored {sessions} open session(s), {len(state.commands)} light command(s),"
        f" {len(state.overrides)} override(s) and {lease_bounds} lease bound(s) from the database;"
        " each charger is asked for its status as it reconnects, and sessions that ended meanwhile are"
        " closed when their chargers report"
    )
    await store.clear_alarm(RESTART_ALARM, now)  # an older one, not yet cleared, said less
    await store.raise_alarm(RESTART_ALARM, now, message, action)
    log.warning("ALARM %s: %s; %s", RESTART_ALARM, message, action)
    return run


async def keep_alive(store, run_id: int, clock) -> None:
    """Write a sign of life every minute, for the next start to report."""
    while True:
        await asyncio.sleep(ALIVE_EVERY_S)
        try:
            await store.runs.alive(run_id, clock())
        except sqlite3.Error as exc:  # the next start reports an older sign of life; nothing worse
            log.warning("could not write the daemon's sign of life (%s)", exc)


async def end_run(store, run_id: int, clock) -> None:
    """This run stops cleanly."""
    try:
        await store.runs.end(run_id, clock())
    except sqlite3.Error as exc:
        log.warning("could not record the clean stop (%s); the next start will report an unclean one", exc)
