"""The daemon: opens storage, starts every driver and the cycle under one TaskGroup, stops cleanly.

SIGTERM and SIGINT become cancellation; on the way out the gateway tells the broker it is
offline and closes the database. A crash of any task ends the daemon (the service manager
restarts it) rather than leaving a half-alive process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from config.schema import SquareConfig
from controller.api.listener import TlsSetupError, tls_context
from controller.api.server import AdminApi
from controller.api.token import TokenFileError, load_or_create_token
from controller.shell.backend import SquareBackend
from controller.shell.charging import SmartCharging
from controller.shell.cycle import Cycle
from controller.shell.local_list import LocalListKeeper
from controller.shell.power import PowerControl
from controller.shell.restart import end_run, keep_alive, start_run
from controller.shell.service import JournalFormatter, ServiceNotifier, journal_stream
from controller.shell.state import SquareState
from controller.store.database import Store
from controller.store.lease_journal import LeaseJournal
from controller.store.passwords import RECOMMENDED_MIN_CHARS
from controller.store.secrets import TagVault, load_or_create_secret
from drivers.batteries.factory import make_battery
from drivers.contract.clock import utc_now
from drivers.contract.text import PrintableLog
from drivers.meters.factory import make_grid_meter
from drivers.mqtt.credentials import MqttFileError, read_password, tls_client_context
from drivers.mqtt.link import MqttLink
from drivers.ocpp.login_guard import LoginGuard
from drivers.ocpp.pacing import FrameLimits
from drivers.ocpp.server import (
    LoginPolicy,
    OcppServer,
    TlsFileError,
    tls_server_context,
)
from drivers.sim.in_process import SimulatedBattery

log = logging.getLogger("laadplein.daemon")

SHUTDOWN_DEADLINE_S = 4.5  # SIGTERM to exit, at the most (the service manager waits 5 s)


class DaemonError(Exception):
    """The daemon cannot start (storage, token file, ports); the message says what to fix."""


class _SquareTimeFormatter(logging.Formatter):
    """Log times in the square's own time zone, to the millisecond, as a technician reads them."""

    def __init__(self, tz: ZoneInfo) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.tz = tz

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
        dt = datetime.fromtimestamp(record.created, self.tz)
        return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{int(record.msecs):03d}" + dt.strftime("%z")


def setup_logging(tz_name: str, level: int = logging.INFO) -> None:
    """Log to stderr with the square's local time (the journal's form under systemd); keep third-party
    chatter (and id tags) out."""
    handler = logging.StreamHandler()
    # The journal stamps every line itself and ranks it by a <N> prefix.
    handler.setFormatter(JournalFormatter() if journal_stream() else _SquareTimeFormatter(ZoneInfo(tz_name)))
    handler.addFilter(PrintableLog())  # a charger's words must not forge a log line or reach a terminal raw
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The ocpp library logs every frame (id tags included) at INFO.
    logging.getLogger("ocpp").setLevel(logging.WARNING)
    for noisy in ("websockets", "aiohttp.access", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pymodbus logs a lost link at ERROR with hex dumps of the last frames; the battery and meter
    # drivers say what happened, once, in words.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


async def run_daemon(
    cfg: SquareConfig, *, ready: asyncio.Event | None = None, notifier: ServiceNotifier | None = None
) -> None:
    """Run the square until cancelled, telling systemd (`notifier`, else one from the environment) how it goes."""
    notifier = ServiceNotifier() if notifier is None else notifier
    if notifier.watchdog_s is not None and notifier.watchdog_s < 2 * cfg.control.period_s:
        # The watchdog is pinged after every cycle: a quiet square cycles only every period_s.
        log.warning("systemd's watchdog (%g s) is shorter than two control periods (control.period_s = %g s): "
                    "expect restarts; raise WatchdogSec", notifier.watchdog_s, cfg.control.period_s)
    # The broker's credentials before anything is written: a wrong file is a config error, not a half start.
    try:
        password = read_password(cfg.mqtt.password_file) if cfg.mqtt.password_file is not None else None
        mqtt_tls = (tls_client_context(cfg.mqtt.ca_file, cfg.mqtt.cert_file, cfg.mqtt.key_file)
                    if cfg.mqtt.ca_file is not None else None)
    except MqttFileError as exc:
        raise DaemonError(str(exc)) from None
    try:
        token = load_or_create_token(cfg.api_token_file)
        api_tls = tls_context(cfg.api.cert_file, cfg.api.key_file)
    except (TokenFileError, TlsSetupError) as exc:
        raise DaemonError(str(exc)) from None
    db_path = Path(cfg.storage.path)
    try:
        secret = load_or_create_secret(db_path.parent / "laadplein.secret")
        store = await Store.open(db_path, TagVault(secret))
    except (OSError, ValueError) as exc:
        raise DaemonError(f"storage.path {db_path}: {exc}") from None
    try:
        state = SquareState(cfg, store, clock=utc_now)
        await state.restore()
        journal = LeaseJournal(store, cfg.control.lease_s, await store.leases.all())
        run = await start_run(store, state, len(journal.restored))
        cutoff_purged = await store.purge_older_than(utc_now() - timedelta(days=cfg.storage.retention_days))
        if cutoff_purged:
            log.info("retention: deleted %d record(s) older than %d days", cutoff_purged, cfg.storage.retention_days)
        mqtt = MqttLink(
            cfg.mqtt.host,
            cfg.mqtt.port,
            cfg.topic_root,
            [b.id for b in cfg.bays],
            state.record,
            username=cfg.mqtt.username,
            password=password,
            tls_context=mqtt_tls,
            keepalive_s=cfg.mqtt.keepalive_s,
            client_id=f"laadplein-{cfg.site.id}",
        )
        tls = None
        if cfg.ocpp.tls_cert_file is not None and cfg.ocpp.tls_key_file is not None:
            try:
                tls = tls_server_context(cfg.ocpp.tls_cert_file, cfg.ocpp.tls_key_file,
                                         cfg.ocpp.tls_ecdsa_cert_file, cfg.ocpp.tls_ecdsa_key_file)
            except TlsFileError as exc:
                raise DaemonError(str(exc)) from None
        ocpp = OcppServer(
            cfg.ocpp.host,
            cfg.ocpp.port,
            cfg.ocpp.path,
            SquareBackend(state),
            heartbeat_interval_s=cfg.ocpp.heartbeat_interval_s,
            call_timeout_s=cfg.ocpp.call_timeout_s,
            ping_interval_s=cfg.ocpp.ping_interval_s,
            ping_timeout_s=cfg.ocpp.ping_interval_s,
            ssl_context=tls,
            login_guard=LoginGuard(window_s=cfg.ocpp.login_lockout_s),
            frame_limits=FrameLimits(
                cfg.ocpp.max_messages_per_s, cfg.ocpp.message_burst, cfg.ocpp.max_samples_per_frame
            ),
            policy=LoginPolicy(
                exposed=not cfg.ocpp.on_loopback,
                insecure=frozenset(c.id for c in cfg.chargers if c.insecure),
                unknown_insecure=cfg.ocpp.allow_unknown_chargers,
                min_password_chars=RECOMMENDED_MIN_CHARS,
                configured=frozenset(c.id for c in cfg.chargers),
            ),
            max_handshakes_per_host=cfg.ocpp_max_handshakes_per_host,
            max_connections=cfg.ocpp_max_connections,
            own_calls=not cfg.ocpp.conformance_mode,
        )
        charging = SmartCharging(cfg, ocpp, state.clock, state.wake)
        charging.journal = journal
        charging.memory = store.setups
        charging.bounds = state.bounds
        remembered = await store.setups.all()
        if cfg.ocpp.conformance_mode:
            # a certification run changes chargers' profiles behind the gateway's back (and boots them
            # under configured ids): after it, every charger is set up in full
            for charger_id in remembered:
                await store.setups.forget(charger_id)
            remembered = {}
        charging.accepted = {cid: items for cid, (items, _at) in remembered.items()}
        battery = make_battery(cfg.battery, state.record_battery, simulated=SimulatedBattery) if cfg.battery is not None else None
        meter = make_grid_meter(cfg.grid_meter, state.record_grid) if cfg.grid_meter is not None else None
        power = PowerControl(state, charging, battery)
        cycle = Cycle(state, mqtt, power, notifier=notifier)
        local_list = LocalListKeeper(state, ocpp)
        api = AdminApi(state, cycle, ocpp, token=token, local_list=local_list, tls=api_tls)
        ocpp_ready, api_ready = asyncio.Event(), asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(ocpp.run(ocpp_ready), name="ocpp-server")
                tg.create_task(api.run(cfg.api.host, cfg.api.port, api_ready), name="admin-api")
                tg.create_task(mqtt.run(), name="mqtt-link")
                tg.create_task(charging.run(), name="smart-charging")
                tg.create_task(local_list.run(), name="local-list")
                if battery is not None:
                    tg.create_task(battery.run(), name="battery")
                    log.info("battery: %s driver at %s", cfg.battery.driver, battery.where)
                if meter is not None:
                    tg.create_task(meter.run(), name="grid-meter")
                    log.info("grid meter: %s at %s", cfg.grid_meter.driver, meter.where)
                await asyncio.wait_for(asyncio.gather(ocpp_ready.wait(), api_ready.wait()), timeout=15)
                tg.create_task(cycle.run(), name="cycle")
                tg.create_task(_retention(store, cfg.storage.retention_days), name="retention")
                if run is not None:
                    tg.create_task(keep_alive(store, run.id, state.clock), name="run-alive")
                log.info(
                    "square %s up: OCPP 1.6J and 2.0.1 on %s://%s:%d%s/<charger id>, %d charger(s), %d bay(s)",
                    cfg.site.id, "wss" if tls is not None else "ws", cfg.ocpp.host, ocpp.port, cfg.ocpp.path,
                    len(cfg.chargers), len(cfg.bays),
                )
                notifier.ready(f"square {cfg.site.id}: {len(cfg.chargers)} charger(s), {len(cfg.bays)} bay(s)")
                if ready is not None:
                    ready.set()
        except asyncio.CancelledError:
            # SIGTERM/SIGINT (or a caller's cancel): a clean stop, unlike a task's crash.
            if run is not None:
                await end_run(store, run.id, state.clock)
            raise
        finally:
            notifier.stopping()  # also on a crash; said once when a signal already said it
            await _shutdown(mqtt)
    finally:
        await store.close()


async def _retention(store: Store, days: int) -> None:
    while True:
        await asyncio.sleep(3600)
        await store.purge_older_than(utc_now() - timedelta(days=days))


async def _shutdown(mqtt: MqttLink) -> None:
    """Leave devices as they are: lights keep their retained commands; tell everyone we are gone."""
    try:
        await asyncio.wait_for(mqtt.close(), timeout=3)
    except (TimeoutError, Exception) as exc:  # shutting down: report, do not mask the exit
        log.warning("MQTT: could not publish offline on the way out (%s)", exc)


def main_run(cfg: SquareConfig) -> int:
    """`laadplein run`: the daemon in the foreground; exit 0 after a clean shutdown on SIGTERM/SIGINT."""
    # Everything the daemon creates (database, its WAL, the gateway secret, the API token) is its
    # own alone, whatever umask the shell or service manager that started it had.
    os.umask(0o077)
    setup_logging(cfg.site.timezone)

    async def _main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        stopping: dict = {"signal": None, "at": 0.0}
        notifier = ServiceNotifier()

        def _stop(signame: str) -> None:
            if stopping["signal"] is None:
                stopping["signal"], stopping["at"] = signame, time.monotonic()
                log.info("%s received: shutting down", signame)
                notifier.stopping()
                task.cancel()
                loop.call_later(SHUTDOWN_DEADLINE_S, _overdue)

        def _overdue() -> None:
            # A clean stop must not take longer than this: say what is stuck, then go. Everything a
            # charger was told is already committed, and the lights keep their retained commands.
            stuck = [t for t in asyncio.all_tasks(loop) if not t.done() and t is not task]
            for t in stuck:
                frame = t.get_stack(limit=1)
                where = f"{frame[-1].f_code.co_filename}:{frame[-1].f_lineno}" if frame else "?"
                log.error("shutdown overdue: task %s still running at %s", t.get_name(), where)
            log.error("stopping anyway %.1f s after %s", time.monotonic() - stopping["at"], stopping["signal"])
            logging.shutdown()
            os._exit(0)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop, sig.name)
        try:
            await run_daemon(cfg, notifier=notifier)
        except asyncio.CancelledError:
            if stopping["signal"] is None:
                raise
            log.info("stopped cleanly %.1f s after %s", time.monotonic() - stopping["at"], stopping["signal"])
            return 0
        return 0

    try:
        return asyncio.run(_main())
    except DaemonError as exc:
        log.error("%s", exc)
        return 2
    except ExceptionGroup as group:
        for exc in group.exceptions:
            log.critical("daemon stopped by an error in one of its tasks: %s", exc, exc_info=exc)
        return 1
