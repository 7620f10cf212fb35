"""The README's pictures of the console, made from a running square rather than drawn by hand.

Starts the simulated Hoofddorp square the way `laadplein demo` does (an embedded MQTT broker, the
daemon, the simulated chargers, cars, battery, lights and sensors), waits until the square shows
something worth seeing, reads the admin API as the console does and saves the console's screen at
80x24 (compact) and 120x40 (roomy) as SVG:

    python3 -m scripts.screenshots [--out docs/img] [--seed 1] [--timeout-s 120]

Exit 0 when both pictures are written, 1 when the square never became interesting within the
timeout (what was missing and the log's last lines on stderr), 2 when it could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.screen import Screen

from config.loader import ConfigError, load_config
from controller.cli.client import ApiClient, ClientError
from controller.cli.console import read_screen
from controller.cli.console_render import CONNECTED, render, zone_or_utc
from controller.cli.demo import (
    DemoError,
    _free_port,
    demo_config,
    embedded_broker,
    example_config_path,
)
from controller.daemon import run_daemon, setup_logging
from drivers.sim.cars import Arrival, busy_afternoon
from drivers.sim.square import SimSquare, ocpp_versions

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "img"
SIZES = ((80, 24), (120, 40))  # compact, roomy (console_render.ROOMY_MIN_W/H)
TITLE = "laadplein console"

# The demo's afternoon, with its first cars brought forward: the chargers are online a few seconds
# after the start, and the picture should not wait a minute for the second car.
FIRST_ARRIVAL_S = 8.0
ARRIVAL_GAP_S = 3.0
STAY_S = 900.0  # nobody leaves before the picture is taken
EVS, NON_EVS = 4, 1
MIN_CHARGING = 2
PLUGGED = ("Charging", "SuspendedEV", "SuspendedEVSE")
POLL_S = 0.5


def screenshot_scenario(seed: int) -> list[Arrival]:
    """The demo's first EVs and first non-EV of `busy_afternoon(seed)`, arriving every few seconds (s)."""
    afternoon = busy_afternoon(seed)
    evs = [a for a in afternoon if a.kind == "ev"][:EVS]
    others = [a for a in afternoon if a.kind != "ev"][:NON_EVS]
    cars = evs[:2] + others + evs[2:]  # the non-EV parks while green bays are still plenty
    return [
        dataclasses.replace(a, arrive_s=FIRST_ARRIVAL_S + n * ARRIVAL_GAP_S, stay_s=STAY_S)
        for n, a in enumerate(cars)
    ]


def missing(status: dict, *, battery: bool, cars: int, evs: int) -> list[str]:
    """What the square still lacks for a telling picture (`cars` parked, `evs` of them plugged in); empty when ready."""
    bays = status.get("bays") or []
    chargers = status.get("chargers") or []
    parked = [b for b in bays if b.get("occupied") or b.get("status") not in (None, "Available")]
    plugged = [b for b in bays if b.get("status") in PLUGGED]
    charging = [
        b for b in plugged
        if b.get("status") == "Charging" and (b.get("current_a") or 0) > 0 and b.get("limit_a") is not None
    ]
    lacks = []
    if len(parked) < cars or len(plugged) < evs:
        lacks.append(f"{cars} cars parked, {evs} plugged in ({len(parked)} and {len(plugged)} now)")
    unmeasured = [b["id"] for b in plugged if b.get("current_a") is None or b.get("limit_a") is None]
    if unmeasured:
        lacks.append(f"a current and a limit on every plugged-in bay (not yet: {', '.join(unmeasured)})")
    offline = [c["id"] for c in chargers if not c.get("online")]
    if offline or not chargers:
        lacks.append(f"chargers online (offline: {', '.join(offline) or 'all'})")
    if battery and not (status.get("battery") or {}).get("online"):
        lacks.append("the battery online")
    if len(charging) < MIN_CHARGING:
        lacks.append(f"{MIN_CHARGING} cars charging with a limit ({len(charging)} now)")
    if not any(b.get("light") == "blue" for b in bays):
        lacks.append("a blue bay")
    if not any(b.get("light") == "green" and b.get("occupied") for b in bays):
        lacks.append("a car parked on a green bay")
    return lacks


def shoot(status: dict, alarms: list, events: list, *, width: int, height: int, now_local: str) -> str:
    """The console's screen for these API answers at `width` x `height` cells, as SVG."""
    console = Console(record=True, width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", legacy_windows=False)
    frame = render(status, alarms, events, width=width, height=height, connection=CONNECTED,
                   help_shown=False, now_local=now_local)
    # As the console's Live(screen=True) shows it: exactly `height` lines, the rest blank.
    console.print(Screen(frame))
    return console.export_svg(title=TITLE)


async def _until_interesting(client: ApiClient, scenario: list[Arrival], *, battery: bool,
                             timeout_s: float) -> tuple[dict, list, list]:
    """The console's three answers (status, alarms, events) from the first poll that shows enough."""
    evs = sum(1 for a in scenario if a.kind == "ev")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    lacks = ["an answer from the daemon"]
    while loop.time() < deadline:
        try:
            status, alarms, events = await read_screen(client)
        except ClientError as exc:
            lacks = [f"an answer from the daemon ({exc})"]
        else:
            lacks = missing(status, battery=battery, cars=len(scenario), evs=evs)
            if not lacks:
                return status, alarms or [], events or []
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"after {timeout_s:g} s the square still lacks: {'; '.join(lacks)}")


def _log_to(path: Path, tz: str) -> None:
    """The daemon's log lines (the square's local time, its filters) into `path`, away from stdout."""
    setup_logging(tz)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().handlers[:] = [handler]


async def take(out: Path, *, seed: int, timeout_s: float, folder: Path) -> list[tuple[Path, str]]:
    """Run the square in `folder` until it is interesting; write the SVGs into `out`: (path, local time)."""
    cfg = load_config(example_config_path())
    _log_to(folder / "laadplein.log", cfg.site.timezone)
    # Always a broker of our own: a broker already on this machine may hold retained lights of
    # another run of the same square.
    cfg = demo_config(cfg, folder, mqtt_port=_free_port())
    client = ApiClient(f"http://127.0.0.1:{cfg.api.port}", None, timeout_s=3.0, tz=cfg.site.timezone)
    async with embedded_broker(cfg.mqtt.port):
        scenario = screenshot_scenario(seed)
        sim = SimSquare(cfg, scenario, seed=seed, control_port=None,
                        ocpp_versions=ocpp_versions([c.id for c in cfg.chargers], "mixed"))
        failure: TimeoutError | None = None
        async with asyncio.TaskGroup() as tg:
            # As the demo: the devices first, then the daemon; the chargers retry until it answers.
            daemon_ready, sim_ready = asyncio.Event(), asyncio.Event()
            simulator = tg.create_task(sim.run(sim_ready), name="simulator")
            daemon = None
            try:
                await asyncio.wait_for(sim_ready.wait(), timeout=20)
                daemon = tg.create_task(run_daemon(cfg, ready=daemon_ready), name="daemon")
                await asyncio.wait_for(daemon_ready.wait(), timeout=20)
                client.token = cfg.api_token_file.read_text(encoding="utf-8").strip()  # made by the daemon at start
                status, alarms, events = await _until_interesting(
                    client, scenario, battery=cfg.battery is not None, timeout_s=timeout_s)
            except TimeoutError as exc:  # raised after the group: inside it, it would come out as a group
                failure = exc
            finally:
                if daemon is not None:  # the daemon first, so that it leaves the battery idle on its way out
                    daemon.cancel()
                    await asyncio.wait({daemon}, timeout=15)
                simulator.cancel()
        if failure is not None:
            raise failure
    now_local = datetime.now(zone_or_utc(cfg.site.timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for width, height in SIZES:
        path = out / f"console-{width}x{height}.svg"
        path.write_text(shoot(status, alarms, events, width=width, height=height, now_local=now_local),
                        encoding="utf-8")
        written.append((path, now_local))
    return written


def _log_tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    return "(no log)"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for the SVGs (default {DEFAULT_OUT})")
    ap.add_argument("--seed", type=int, default=1, help="the afternoon's random seed (default 1)")
    ap.add_argument("--timeout-s", type=float, default=120.0,
                    help="seconds to wait for the square to become interesting (default 120)")
    args = ap.parse_args(argv)
    if not 5 <= args.timeout_s <= 3600:
        ap.error("--timeout-s must be 5-3600 seconds")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="laadplein-screenshots-") as tmp:
        folder = Path(tmp)
        try:
            written = asyncio.run(take(args.out, seed=args.seed, timeout_s=args.timeout_s, folder=folder))
        except (ConfigError, DemoError) as exc:
            print(f"screenshots: cannot start the square: {exc}", file=sys.stderr)
            return 2
        except TimeoutError as exc:
            print(f"screenshots: {exc}\nthe log's last lines:\n{_log_tail(folder / 'laadplein.log')}", file=sys.stderr)
            return 1
        except BaseException:  # the daemon or a device crashed: its log goes with the folder
            print(f"screenshots: the square failed; the log's last lines:\n{_log_tail(folder / 'laadplein.log')}",
                  file=sys.stderr)
            raise
    for path, local in written:
        print(f"wrote {path} (the square at {local})")
    print(f"took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
