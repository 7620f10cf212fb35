"""The scenarios in hardware mode (`--hardware FILE`), with `laadplein sim` in another process as the hardware.

This proves the hardware path end to end: the rig knows the devices only from the file,
talks to them only over the network, and skips what the file gives no way to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hil_tests.rig import SIGNAGE, SIM_CHARGERS, rig_square_toml
from tests.integration.harness import REPO
from tests.integration.mosquitto import mosquitto  # noqa: F401  (the fixture)
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration


def test_scenarios_run_against_equipment_described_in_a_file(tmp_path, mosquitto):  # noqa: F811
    ocpp_port, battery_port, control_port = free_port(), free_port(), free_port()
    sim_cfg = tmp_path / "street.toml"
    sim_cfg.write_text(rig_square_toml(
        ocpp_port=ocpp_port, api_port=free_port(), mqtt_host="127.0.0.1", mqtt_port=mosquitto.port,
        battery=("127.0.0.1", battery_port), chargers=SIM_CHARGERS, signage=SIGNAGE,
    ))
    control = f"http://127.0.0.1:{control_port}/sim"
    hardware = tmp_path / "hardware.toml"
    hardware.write_text(
        f"[daemon]\nocpp_port = {ocpp_port}\nconnect_wait_s = 30\n\n"
        f'[broker]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n\n'
        + "".join(f'[[chargers]]\nid = "{c["id"]}"\nconnectors = {c["connectors"]}\n\n' for c in SIM_CHARGERS)
        + f'[chargers_control]\nfault_url = "{control}/faults"\n\n'
        f'[battery]\nhost = "127.0.0.1"\nport = {battery_port}\nfault_url = "{control}/faults"\n\n'
        f'[ev_emulator]\nurl = "{control}"\n'
    )
    street = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "sim", "--config", str(sim_cfg), "--speed", "0.1",
         "--control-port", str(control_port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "hil_tests/test_scenarios.py", "--hardware", str(hardware), "-q",
             "-p", "no:cacheprovider", "-k", os.environ.get("HW_K", "ev_arrives or battery or charger_connection or broker or killed")],
            cwd=REPO, capture_output=True, text=True, timeout=240,
        )
    finally:
        street.terminate()
        street.wait(timeout=10)
    out = run.stdout
    errors = "\n".join(line for line in out.splitlines() if line.startswith("E ") or "Error" in line)
    assert run.returncode == 0, errors[-6000:] or out[-6000:]
    assert "4 passed, 1 skipped" in out, out[-4000:]
    assert "on hardware" in out  # the reports name the rig they ran on
