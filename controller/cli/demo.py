"""`laadplein demo`: the daemon, a simulated busy afternoon on the Hoofddorp square, and the console.

Everything runs in one process under one TaskGroup. When no MQTT broker answers at the
configured address, an embedded one (amqtt) is started, so the demo needs nothing but pip.
The demo compresses time: cars stay minutes, not hours, and the grace period is 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from config.loader import load_config
from config.schema import SquareConfig
from controller.cli.client import ApiClient
from controller.daemon import run_daemon, setup_logging
from drivers.contract.words import BLUE, GREEN
from drivers.sim.cars import busy_afternoon
from drivers.sim.square import SimSquare, ocpp_versions

log = logging.getLogger("laadplein.demo")


class DemoError(Exception):
    """The demo cannot start; the message says why."""


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def example_config_path() -> Path:
    return Path(str(resources.files("config") / "examples" / "hoofddorp-marktplein.toml"))


def demo_config(cfg: SquareConfig, folder: Path, *, mqtt_port: int | None) -> SquareConfig:
    """The square made fit for a demo on this machine: free ports, its own database, quick lights."""

    def port(want: int) -> int:
        return want if _port_free("127.0.0.1", want) else _free_port()

    updates = {
        "ocpp": cfg.ocpp.model_copy(update={"host": "127.0.0.1", "port": port(cfg.ocpp.port)}),
        "api": cfg.api.model_copy(update={"host": "127.0.0.1", "port": port(cfg.api.port),
                                      "token_file": folder / "api-token", "cert_file": None, "key_file": None}),
        "storage": cfg.storage.model_copy(update={"path": folder / "laadplein.db"}),
        "signage": cfg.signage.model_copy(update={"grace_s": 10, "min_dwell_s": 10, "startup_wait_s": 10}),
    }
    if mqtt_port is not None:
        updates["mqtt"] = cfg.mqtt.model_copy(update={"host": "127.0.0.1", "port": mqtt_port})
    if cfg.battery is not None:
        # Port 502 needs root; the simulated battery listens on a free port instead.
        # The simulated battery is a real SunSpec Modbus server: the daemon reads it like a street one.
        updates["battery"] = cfg.battery.model_copy(update={"driver": "sunspec", "host": "127.0.0.1", "port": _free_port()})
    return cfg.model_copy(update=updates)


@contextlib.asynccontextmanager
async def embedded_broker(port: int):
    """An MQTT broker in this process (amqtt), for machines without one."""
    try:
        from amqtt.broker import Broker
    except ImportError:
        raise DemoError(
            "no MQTT broker answers and the embedded one is not installed: pip install 'laadplein[demo]'"
        ) from None
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    try:
        yield broker
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broker.shutdown(), timeout=3)


def summary(client: ApiClient, sim: SimSquare, elapsed_s: float) -> str:
    """What happened, from the admin API (as a technician would ask) and the simulator."""
    sessions = client.get("/api/sessions?limit=10000")
    events = client.get("/api/events?limit=10000")
    alarms = client.get("/api/alarms")
    lights = [e for e in events if e["kind"] == "light"]
    shown: dict[str, str] = {}
    first = to_blue = to_green = 0
    for e in sorted(lights, key=lambda e: e["id"]):
        color = e["data"]["command"]["color"]
        before = shown.get(e["bay"])
        shown[e["bay"]] = color
        if before is None:
            first += 1
        elif (before, color) == (GREEN, BLUE):
            to_blue += 1
        elif (before, color) == (BLUE, GREEN):
            to_green += 1
    kwh = sum((s["energy_wh"] or 0) for s in sessions) / 1000
    st = sim.stats
    lines = [
        f"laadplein demo: {elapsed_s:.0f} s of the Hoofddorp square ({len(sim.cfg.bays)} bays)",
        f"  cars arrived: {st.arrivals} ({st.ev_sessions} electric, {st.non_ev_parked} not electric, "
        f"{st.turned_away} found no bay)",
        f"  sessions: {len(sessions)} started, {sum(1 for s in sessions if s['stopped'])} stopped, {kwh:.2f} kWh",
        f"  light commands: {len(lights)} ({first} first lights; {to_blue} green -> blue, {to_green} blue -> green)",
        f"  alarms active: {len(alarms)}" + "".join(f"\n    - {a['message']}" for a in alarms),
    ]
    return "\n".join(lines)


async def run_demo(*, headless: bool, duration_s: float | None, seed: int, config: Path | None) -> int:
    """The demo; 0 when it ran (and was quit or its duration passed), 2 when it could not start."""
    try:
        return await _demo(headless=headless, duration_s=duration_s, seed=seed, config=config)
    except DemoError as exc:
        print(f"laadplein demo: {exc}", file=sys.stderr)
        return 2


async def _demo(*, headless: bool, duration_s: float | None, seed: int, config: Path | None) -> int:
    folder = Path(tempfile.mkdtemp(prefix="laadplein-demo-"))
    log_file = folder / "laadplein.log"
    cfg = load_config(config or example_config_path())
    setup_logging(cfg.site.timezone)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().handlers[:] = [handler]  # the console owns the terminal

    broker_up = _broker_answers(cfg.mqtt.host if cfg.mqtt.host != "0.0.0.0" else "127.0.0.1", cfg.mqtt.port)
    mqtt_port = None if broker_up else (1883 if _port_free("127.0.0.1", 1883) else _free_port())
    cfg = demo_config(cfg, folder, mqtt_port=mqtt_port)
    base = f"http://127.0.0.1:{cfg.api.port}"
    print(f"laadplein demo: {cfg.site.name or cfg.site.id}; log and database in {folder}", file=sys.stderr)
    print(
        f"  OCPP ws://127.0.0.1:{cfg.ocpp.port}{cfg.ocpp.path}/<id>, admin API {base}/api, MQTT "
        f"{cfg.mqtt.host}:{cfg.mqtt.port}{' (embedded broker)' if mqtt_port else ''}",
        file=sys.stderr,
    )
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        if mqtt_port is not None:
            await stack.enter_async_context(embedded_broker(mqtt_port))
        # a square of today: older 1.6J chargers beside newer 2.0.1 ones
        sim = SimSquare(cfg, busy_afternoon(seed), seed=seed, control_port=0,
                        ocpp_versions=ocpp_versions([c.id for c in cfg.chargers], "mixed"))
        result = 0
        async with asyncio.TaskGroup() as tg:
            # The devices first (the battery and lights are there when the daemon looks for them);
            # the chargers keep trying until the daemon answers.
            daemon_ready, sim_ready = asyncio.Event(), asyncio.Event()
            simulator = tg.create_task(sim.run(sim_ready), name="simulator")
            await asyncio.wait_for(sim_ready.wait(), timeout=20)
            daemon = tg.create_task(run_daemon(cfg, ready=daemon_ready), name="daemon")
            await asyncio.wait_for(daemon_ready.wait(), timeout=20)
            # the daemon made the token at its start, as it does on a gateway
            client = ApiClient(base, cfg.api_token_file.read_text(encoding="utf-8").strip(), tz=cfg.site.timezone)
            if headless:
                await asyncio.sleep(duration_s or 60)
                print(await asyncio.to_thread(summary, client, sim, time.monotonic() - started))
            else:
                from controller.cli.console import run_console

                result = await run_console(client)
                print(await asyncio.to_thread(summary, client, sim, time.monotonic() - started))
            daemon.cancel()
            simulator.cancel()
    return result
