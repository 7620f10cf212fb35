"""Long fuzz runs of the gateway's three doors, with their figures: OCPP and MQTT against the real daemon,
Modbus against the battery drivers (each preset in turn, in this process).

The inputs are the integration tests' hypothesis strategies (tests/integration/fuzz_strategies.py),
drawn in seeded chunks so that a run can be repeated exactly. Per target it prints the inputs tried,
the crashes (daemon exits, handler deaths, driver task deaths), answers that broke the spec,
connections the gateway dropped other than by the size limit, log lines per kind of fault, and
the daemon's memory at the start and the end.

    python3 -m bench.fuzz [--minutes 3] [--seed 1] [--only ocpp,mqtt,modbus]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from tests.integration.fuzz_strategies import (
    ModbusPoll,
    drawn,
    modbus_scripts,
    mqtt_messages,
    ocpp_expectation,
    ocpp_frames,
)
from tests.integration.harness import Daemon, MqttWatcher, chargers, square_toml
from tests.integration.mosquitto import Mosquitto
from tests.integration.ports import free_port
from tests.integration.test_fuzz_modbus import (
    PRESETS,
    SCRIPT_RUN,
    ScriptedBattery,
    check_trust,
)
from tests.integration.test_fuzz_mqtt import (
    BAYS,
    EMPTY,
    MIN_DWELL_S,
    ROOT,
    colour_changes,
    occupancy,
    publish_all,
    toggle,
)
from tests.integration.test_fuzz_ocpp import (
    FLOOD_CAPS,
    FuzzCharger,
    check,
    crash_lines,
    fault_kind,
    flood,
    flood_frames,
    rss_mb,
)

CHUNK = 200  # inputs drawn per hypothesis run
SIZE_LIMIT_CLOSE = 1009


@dataclass
class Figures:
    """What one target's run counted."""

    target: str
    inputs: int = 0
    crashes: int = 0
    broken_answers: int = 0
    closes: Counter[int] = field(default_factory=Counter)
    log_kinds: Counter[str] = field(default_factory=Counter)
    rss_mb: tuple[float, float] | None = None
    rss_trace: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    crash_notes: list[str] = field(default_factory=list)

    def show(self) -> None:
        other_closes = sum(n for code, n in self.closes.items() if code != SIZE_LIMIT_CLOSE)
        print(f"\n== {self.target}")
        print(f"inputs tried: {self.inputs}")
        print(f"crashes (daemon exits, handler deaths, driver task deaths): {self.crashes}")
        print(f"answers that broke the spec: {self.broken_answers}")
        if self.closes or self.target.startswith("OCPP"):
            print(f"connections closed by the size limit (1009): {self.closes[SIZE_LIMIT_CLOSE]};"
                  f" dropped otherwise: {other_closes} {dict((c, n) for c, n in self.closes.items() if c != SIZE_LIMIT_CLOSE)}")
        if self.rss_mb is not None:
            start, end = self.rss_mb
            print(f"daemon RSS: {start:.1f} -> {end:.1f} MB ({(end - start) / start * 100:+.1f} %)")
            if len(self.rss_trace) >= 5:
                marks = [self.rss_trace[round(q * (len(self.rss_trace) - 1))] for q in (0, 0.25, 0.5, 0.75, 1)]
                print("  along the run (start, quarters, end): " + ", ".join(f"{m:.1f}" for m in marks) + " MB")
        print(f"log lines per kind of fault ({sum(self.log_kinds.values())} lines, {len(self.log_kinds)} kinds):")
        for kind, n in self.log_kinds.most_common(12):
            print(f"  {n:6d}  {kind}")
        for note in self.crash_notes[:5] + self.notes[:10]:
            print(f"  ! {note}")


def fault_lines(text: str) -> Counter[str]:
    return Counter(fault_kind(line) for line in text.splitlines() if " WARNING " in line or " ERROR " in line)


def daemon_crashes(daemon: Daemon, figures: Figures) -> None:
    """Count a daemon that exited and every sign of a handler that failed, with the first lines of each."""
    if daemon.proc is None or daemon.proc.poll() is not None:
        figures.crashes += 1
        figures.crash_notes.append(f"the daemon exited with {daemon.proc.returncode if daemon.proc else '?'}")
    lines = daemon.log().splitlines()
    for i in crash_lines(lines):
        figures.crashes += 1
        figures.crash_notes.append(" | ".join(lines[max(0, i - 1) : i + 40])[:4000])


@contextmanager
def broker_in(folder: Path) -> Iterator[Mosquitto]:
    folder.mkdir(parents=True, exist_ok=True)
    with Mosquitto(workdir=folder) as broker:
        yield broker


@contextmanager
def square(folder: Path, broker: Mosquitto, **signage) -> Iterator[Daemon]:
    ocpp_port, api_port = free_port(), free_port()
    # One charger sends every frame as fast as it can: the street caps would pace the run to a crawl.
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=broker.port, chargers=1,
                       signage=signage or None, ocpp=FLOOD_CAPS)
    daemon = Daemon(folder, text, api_port=api_port, ocpp_port=ocpp_port)
    daemon.start()
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


def chunks(strategy, seed: int) -> Iterator[list]:
    """Seeded chunks of CHUNK values, a new seed for each: an endless, repeatable stream."""
    n = 0
    while True:
        yield drawn(strategy, CHUNK, seed * 1_000_003 + n)
        n += 1


async def fuzz_ocpp(seconds: float, seed: int, folder: Path) -> Figures:
    figures = Figures("OCPP (raw WebSocket as charger CP01; every 5th round a flood)")
    with broker_in(folder / "mosquitto-ocpp") as broker, square(folder / "ocpp", broker) as daemon:
        async with FuzzCharger(f"{daemon.ocpp_url}/CP01") as client:
            rss_start = rss_mb(daemon.proc.pid)
            end = time.monotonic() + seconds
            for round_no, frames in enumerate(chunks(ocpp_frames(), seed)):
                if time.monotonic() > end or daemon.proc.poll() is not None:
                    break
                figures.rss_trace.append(rss_mb(daemon.proc.pid))
                if round_no % 5 == 4:
                    junk = [f for f in frames if ocpp_expectation(f).kind in ("nothing", "error")]
                    try:
                        await flood(client, flood_frames(junk, 5_000, f"f{round_no}"), f"f{round_no}")
                    except AssertionError as exc:
                        figures.broken_answers += 1
                        figures.notes.append(f"flood {round_no}: {str(exc)[:200]}")
                    figures.inputs += 5_000
                    continue
                for frame in frames:
                    got = await client.exchange(frame)
                    figures.inputs += 1
                    if got.close_code is not None:
                        figures.closes[got.close_code] += 1
                    try:
                        check(frame, ocpp_expectation(frame), got)
                    except AssertionError as exc:
                        figures.broken_answers += 1
                        figures.notes.append(str(exc)[:300])
            figures.rss_mb = (rss_start, rss_mb(daemon.proc.pid)) if daemon.proc.poll() is None else None
        daemon_crashes(daemon, figures)
        figures.log_kinds = fault_lines(daemon.log())
    return figures


async def fuzz_mqtt(seconds: float, seed: int, folder: Path) -> Figures:
    figures = Figures(
        f"MQTT (junk on sensor and fixture topics; every 3rd round a 2 s occupancy flood on B01, min_dwell_s {MIN_DWELL_S})"
    )
    with broker_in(folder / "mosquitto-mqtt") as broker, \
            square(folder / "mqtt", broker, min_free_ev_bays=1, min_dwell_s=MIN_DWELL_S) as daemon:
        async with MqttWatcher(broker.port, ROOT) as mq, chargers(daemon, "CP01"):
            rss_start = rss_mb(daemon.proc.pid)
            t0 = time.monotonic()
            end = t0 + seconds
            for round_no, messages in enumerate(chunks(mqtt_messages(BAYS), seed)):
                if time.monotonic() > end or daemon.proc.poll() is not None:
                    break
                figures.rss_trace.append(rss_mb(daemon.proc.pid))
                if round_no % 3 == 2:
                    figures.inputs += await toggle(broker.port, "B01", 2.0)
                else:
                    await publish_all(broker.port, messages)
                    figures.inputs += len(messages)
            await occupancy(broker.port, **dict.fromkeys(BAYS, EMPTY))
            await asyncio.sleep(MIN_DWELL_S + 1)
            figures.rss_mb = (rss_start, rss_mb(daemon.proc.pid)) if daemon.proc.poll() is None else None
            for bay in BAYS:
                changes = colour_changes(mq, bay, t0)
                gaps = [b - a for a, b in pairwise(changes)]
                if gaps and min(gaps) < MIN_DWELL_S - 0.001:
                    figures.broken_answers += 1
                    figures.notes.append(f"bay {bay} changed colour {min(gaps):.2f} s after the change before")
                figures.notes.append(f"bay {bay}: {len(changes)} colour changes in {time.monotonic() - t0:.0f} s")
        daemon_crashes(daemon, figures)
        figures.log_kinds = fault_lines(daemon.log())
    return figures


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.kinds: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.kinds[f"{record.name}: {fault_kind(record.getMessage())}"] += 1


async def fuzz_modbus(seconds: float, seed: int) -> Figures:
    figures = Figures("Modbus (battery drivers against a scripted server: garbage, exceptions, drops, silence)")
    lines = _Lines()
    drivers_log = logging.getLogger("laadplein.battery")
    drivers_log.addHandler(lines)
    drivers_log.setLevel(logging.INFO)
    drivers_log.propagate = False
    try:
        for name, (make, options, garbage_regs, _) in sorted(PRESETS.items()):
            script = drawn(modbus_scripts(garbage_regs, SCRIPT_RUN), CHUNK // SCRIPT_RUN, seed)
            server = ScriptedBattery(**options, script=[fate for run in script for fate in run])
            reports: list = []
            async with server.serving() as port:
                driver = make(port, reports.append)
                driver.command(2_000.0)
                task = asyncio.create_task(driver.run(), name=f"battery-{name}")
                end = time.monotonic() + seconds / len(PRESETS)
                more = 1
                while time.monotonic() < end:
                    await asyncio.sleep(0.2)
                    if task.done():
                        figures.crashes += 1
                        figures.crash_notes.append(f"{name}: the driver task ended: {task!r}")
                        task = asyncio.create_task(driver.run(), name=f"battery-{name}")
                    if len(server.script) - server.polls < CHUNK:
                        runs = drawn(modbus_scripts(garbage_regs, SCRIPT_RUN), CHUNK // SCRIPT_RUN, seed * 1_000_003 + more)
                        server.script.extend(fate for run in runs for fate in run)
                        more += 1
                server.script[server.polls:] = [ModbusPoll("good")] * 5
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            try:
                trusted = check_trust(reports)
            except AssertionError as exc:
                figures.broken_answers += 1
                figures.notes.append(f"{name}: {exc}")
                trusted = -1
            figures.inputs += server.polls
            figures.notes.append(f"{name}: {server.polls} polls {dict(server.fates)}, {len(reports)} reports, {trusted} trusted")
    finally:
        drivers_log.removeHandler(lines)
        drivers_log.propagate = True
    figures.log_kinds = lines.kinds
    return figures


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="the whole run, split evenly over the targets")
    ap.add_argument("--seed", type=int, default=1, help="the same seed draws the same inputs")
    ap.add_argument("--only", default="ocpp,mqtt,modbus", help="comma-separated targets")
    ap.add_argument("--keep", action="store_true", help="keep the daemons' folders (logs, databases) and say where")
    args = ap.parse_args()
    targets = [t.strip() for t in args.only.split(",") if t.strip()]
    seconds = args.minutes * 60 / len(targets)
    logging.basicConfig(level=logging.CRITICAL)  # the figures count the drivers' lines; nothing else on screen
    print(f"fuzz: {args.minutes:g} min over {', '.join(targets)}, seed {args.seed}")
    results = []
    tmp = tempfile.mkdtemp(prefix="laadplein-fuzz-")
    try:
        for target in targets:
            if target == "ocpp":
                results.append(await fuzz_ocpp(seconds, args.seed, Path(tmp)))
            elif target == "mqtt":
                results.append(await fuzz_mqtt(seconds, args.seed, Path(tmp)))
            elif target == "modbus":
                results.append(await fuzz_modbus(seconds, args.seed))
            else:
                raise SystemExit(f"unknown target {target!r}: ocpp, mqtt or modbus")
            results[-1].show()
    finally:
        if args.keep:
            print(f"\ndaemon folders (logs, databases) kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\nsummary: " + "; ".join(f"{r.target.split()[0]} {r.inputs} inputs, {r.crashes} crashes" for r in results))
    if any(r.crashes or r.broken_answers for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
