"""`laadplein demo --headless` and `laadplein sim`, run as a new user would run them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.integration.harness import REPO, Daemon, square_toml
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration


def test_demo_headless_prints_a_summary_with_sessions_and_lights_both_ways(tmp_path):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli", "demo", "--headless", "--duration", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=150,
    )
    took = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "laadplein demo: 60 s of the Hoofddorp square (12 bays)" in out, out
    sessions = int(re.search(r"sessions: (\d+) started", out).group(1))
    to_blue, to_green = map(int, re.search(r"(\d+) green -> blue, (\d+) blue -> green", out).groups())
    assert sessions >= 1 and to_blue >= 1 and to_green >= 1, out
    assert took < 120, f"the demo took {took:.0f} s for 60 s"


def test_sim_serves_a_square_for_a_daemon_and_takes_faults(tmp_path, mosquitto):
    ocpp_port, api_port, control_port, battery_port = free_port(), free_port(), free_port(), free_port()
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, chargers=2) + (
        f'\n[battery]\ndriver = "sunspec"\nhost = "127.0.0.1"\nport = {battery_port}\ncapacity_kwh = 20\n'
        "max_charge_w = 10000\nmax_discharge_w = 10000\n"
    )
    d = Daemon(tmp_path / "daemon", text, api_port=api_port, ocpp_port=ocpp_port)
    sim = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "sim", "--config", str(d.config_path), "--seed", "3",
         "--speed", "60", "--control-port", str(control_port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        d.start()
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("control" in line for line in lines):
            lines.append(sim.stdout.readline())
        printed = "".join(lines)
        assert f"ws://127.0.0.1:{ocpp_port}/ocpp" in printed and f":{battery_port}" in printed, printed

        def api(path: str):
            status, body = d.api("GET", path)
            assert status == 200, (path, status, body)
            return body

        def until(check, timeout_s: float, what: str):
            end = time.monotonic() + timeout_s
            while time.monotonic() < end:
                if check():
                    return
                time.sleep(0.2)
            raise AssertionError(f"{what} not seen within {timeout_s} s")

        until(lambda: all(c["online"] for c in api("/api/status")["chargers"]), 15, "both simulated chargers online")
        until(lambda: api("/api/status")["battery"]["online"], 15, "the simulated battery read by the daemon")
        body = json.dumps({"device": "battery", "mode": "silent"}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{control_port}/sim/faults", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["done"] == "battery: silent"
        until(lambda: not api("/api/status")["battery"]["online"], 10, "the battery fault seen by the daemon")
        bad = urllib.request.Request(f"http://127.0.0.1:{control_port}/sim/faults", data=b'{"device": "toaster"}',
                                     method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=5)
        assert refused.value.code == 400
    finally:
        sim.terminate()
        sim.wait(timeout=10)
        d.stop()
