"""Bay-light latency: from a StatusNotification leaving a charger to the light command at an MQTT subscriber.

Runs the real daemon (`laadplein run`) against mosquitto and 12 simulated two-connector
chargers that all send meter values every second, flips bays between plugged and free, and
prints p50/p99 latency, the daemon's CPU share and its peak memory. For a baseline measured
in the same run it also times a bare MQTT round trip (publish -> subscriber) on the same broker.

    python3 -m bench.light_latency [--chargers 12] [--flips 300] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from drivers.sim.charger16 import SimCharger
from tests.integration.harness import Daemon, MqttWatcher, square_toml
from tests.integration.mosquitto import Mosquitto
from tests.integration.ports import free_port

ROOT = "lp/testplein"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def mqtt_baseline(port: int, n: int) -> list[float]:
    """Round trips of a bare publish through the same broker to a subscriber, in ms."""
    out = []
    async with MqttWatcher(port, "bench/baseline") as mq:
        for i in range(n):
            t0 = time.monotonic()
            await mq.publish("ping", str(i).encode())
            s = await mq.wait_for(lambda s, i=i: s.payload == str(i).encode(), 5, "ping")
            out.append((s.at - t0) * 1000)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chargers", type=int, default=12)
    ap.add_argument("--flips", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=60.0, help="at most this long for the flips")
    ap.add_argument("--steady-s", type=float, default=20.0, help="how long to measure CPU with meter values only")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        ocpp_port, api_port = free_port(), free_port()
        text = square_toml(
            ocpp_port=ocpp_port, api_port=api_port, mqtt_port=broker.port, chargers=args.chargers, connectors=2,
            sensors=False, signage={"min_dwell_s": 0, "grace_s": 0},
        ).replace("period_s = 0.2", "period_s = 1.0")
        d = Daemon(Path(tmp), text, api_port=api_port, ocpp_port=ocpp_port)
        d.start()
        pid = d.proc.pid
        sims = [SimCharger(d.ocpp_url, f"CP{i:02d}", connectors=2, meter_interval_s=1.0) for i in range(1, args.chargers + 1)]
        latencies: list[float] = []
        async with asyncio.TaskGroup() as tg, MqttWatcher(broker.port, ROOT) as mq:
            tasks = []
            for sim in sims:
                ready = asyncio.Event()
                tasks.append(tg.create_task(sim.run(ready)))
                await asyncio.wait_for(ready.wait(), 10)
            n_bays = args.chargers * 2
            for b in range(1, n_bays + 1):
                await mq.wait_light(f"B{b:02d}", "green", timeout_s=15)
            # Every connector charging, so every charger sends meter values each second.
            for sim in sims:
                await sim.plug_in(1)
            await asyncio.sleep(2)
            steady0, steady_wall0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(args.steady_s)
            steady_cpu = cpu_seconds(pid) - steady0
            steady_wall = time.monotonic() - steady_wall0
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            deadline = wall0 + args.seconds
            flip = 0
            while flip < args.flips and time.monotonic() < deadline:
                sim = sims[flip % len(sims)]
                bay = f"B{(flip % len(sims)) * 2 + 2:02d}"
                plugging = (flip // len(sims)) % 2 == 0
                want = "blue" if plugging else "green"
                t0 = time.monotonic()
                await sim.set_status(2, "Preparing" if plugging else "Available")
                seen = await mq.wait_light(bay, want, after=t0, timeout_s=5)
                latencies.append((seen.at - t0) * 1000)
                flip += 1
                await asyncio.sleep(0.05)
            wall = time.monotonic() - wall0
            cpu = cpu_seconds(pid) - cpu0
            base = await mqtt_baseline(broker.port, 100)
            for t in tasks:
                t.cancel()
        peak = peak_rss_mb(pid)
        d.stop()
    print(f"chargers: {args.chargers} (2 connectors each, meter values every 1 s), flips measured: {len(latencies)}")
    print(f"status -> light latency: p50 {statistics.median(latencies):.1f} ms, p99 {pct(latencies, 99):.1f} ms, "
          f"max {max(latencies):.1f} ms   (target p99 < 50 ms)")
    print(f"baseline bare MQTT round trip: p50 {statistics.median(base):.1f} ms, p99 {pct(base, 99):.1f} ms; "
          f"ratio p99 light/baseline {pct(latencies, 99) / max(pct(base, 99), 0.001):.1f}x")
    print(f"daemon CPU, meter values only: {100 * steady_cpu / steady_wall:.1f}% of one core over {steady_wall:.0f} s"
          "   (target < 10%)")
    print(f"daemon CPU while flipping bays ({len(latencies) / wall:.0f} light changes/s on top): "
          f"{100 * cpu / wall:.1f}% of one core over {wall:.0f} s")
    print(f"daemon peak memory (VmHWM): {peak:.1f} MB   (target < 80 MB)")


if __name__ == "__main__":
    asyncio.run(main())
