"""The real daemon against a charger written by someone else: tests/interop/charger.mjs, built on the npm
package ocpp-rpc in strict mode, which checks every frame either way against the official OCPP 1.6J and
2.0.1 JSON schemas. One whole visit per OCPP version, with Basic Auth (security profile 1).

Needs node and `npm ci --prefix tests/interop` (`.ci/run` does both); without them the test skips
locally and fails under CI (environment variable CI set).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import pytest

from tests.integration.harness import REPO, Daemon, square_toml
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration

INTEROP = REPO / "tests" / "interop"
PASSWORD = "interop-pass-1"
LEASE_S = 10  # the shortest lease the config takes, so that a renewal can fall inside the visit
GRID_LIMIT_A = 24  # 2 connectors: a safe default of 12 A each, below the charger's 32 A
SAFE_DEFAULT_A = 12.0
RUN_TIMEOUT_S = 90.0


@pytest.fixture
def node() -> str:
    """The node binary, once ocpp-rpc is installed beside the charger script."""
    binary = shutil.which("node")
    if binary is None:
        missing = "node is not installed"
    elif not (INTEROP / "node_modules" / "ocpp-rpc" / "package.json").is_file():
        missing = "tests/interop/node_modules is missing (npm ci --prefix tests/interop)"
    else:
        return binary
    if os.environ.get("CI"):
        pytest.fail(f"{missing}: .ci/run must install it")
    pytest.skip(missing)


@pytest.fixture
def daemon(tmp_path, mosquitto):
    ocpp_port, api_port = free_port(), free_port()
    text = square_toml(
        ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, chargers=1, connectors=2,
        password=PASSWORD, grid_limit_a=GRID_LIMIT_A, control=f"period_s = 0.2\nlease_s = {LEASE_S}\n",
    )
    d = Daemon(tmp_path / "daemon", text, api_port=api_port, ocpp_port=ocpp_port)
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


# What the test asks the charger through the admin API while the car charges, per version: the
# gateway builds the frames, the charger's strict mode checks them and its answers.
API_CALLS = {
    "ocpp1.6": [
        ("GetCompositeSchedule", {"connectorId": 1, "duration": 60, "chargingRateUnit": "A"}),
        ("GetLocalListVersion", {}),
        ("SendLocalList", {"listVersion": 1, "updateType": "Full",
                           "localAuthorizationList": [{"idTag": "INTEROP0002", "idTagInfo": {"status": "Accepted"}}]}),
        ("GetLocalListVersion", {}),
    ],
    "ocpp2.0.1": [
        ("GetCompositeSchedule", {"evseId": 1, "duration": 60, "chargingRateUnit": "A"}),
        ("GetLocalListVersion", {}),
        ("SendLocalList", {"versionNumber": 1, "updateType": "Full", "localAuthorizationList": [
            {"idToken": {"idToken": "INTEROP0002", "type": "ISO14443"}, "idTokenInfo": {"status": "Accepted"}}]}),
        ("GetLocalListVersion", {}),
    ],
}
STARTED = {"ocpp1.6": "StartTransaction", "ocpp2.0.1": "TransactionEvent"}


async def run_charger(node: str, d: Daemon, protocol: str) -> tuple[int, list[dict], list[tuple[str, int, object]], str]:
    """Run one visit; while its transaction runs, send API_CALLS through the admin API.

    Returns the exit code, the charger's JSON lines, the API's (action, status, answer) and its stderr.
    """
    proc = await asyncio.create_subprocess_exec(
        node, str(INTEROP / "charger.mjs"), "--url", d.ocpp_url, "--id", "CP01", "--protocol", protocol,
        "--password", PASSWORD, "--connectors", "2", "--connector", "1", "--samples", "3", "--interval-ms", "1000",
        "--lease-wait-s", "20", "--deadline-s", str(int(RUN_TIMEOUT_S - 10)),
        cwd=INTEROP, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=1 << 20,
    )
    stderr = asyncio.create_task(proc.stderr.read(), name="charger-stderr")
    lines: list[dict] = []
    answers: list[tuple[str, int, object]] = []
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            while raw := await proc.stdout.readline():
                line = json.loads(raw)
                lines.append(line)
                if line.get("kind") == "step" and line.get("action") == STARTED[protocol] and not answers:
                    for action, payload in API_CALLS[protocol]:
                        status, answer = await d.aapi("POST", f"/api/chargers/CP01/call/{action}", payload)
                        answers.append((action, status, answer))
            code = await proc.wait()
            return code, lines, answers, (await stderr).decode(errors="replace")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr.cancel()


def failure_text(lines: list[dict], stderr: str, d: Daemon) -> str:
    shown = "\n".join(json.dumps(line)[:600] for line in lines[-40:])
    return f"charger output:\n{shown}\nstderr:\n{stderr[-2000:]}\ndaemon log:\n{d.log()[-4000:]}"


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_a_strict_ocpp_rpc_charger_plays_a_whole_visit(node, daemon, protocol):
    code, lines, answers, stderr = await run_charger(node, daemon, protocol)
    explain = failure_text(lines, stderr, daemon)
    assert lines and lines[-1]["kind"] == "summary", f"no summary from the charger\n{explain}"
    summary = lines[-1]
    errors = [line for line in lines if line["kind"] == "error"]
    assert code == 0 and summary["ok"] and not errors, f"exit {code}, errors {errors}\n{explain}"
    assert lines[0]["protocol"] == protocol

    # The gateway set the charger up: a safe default on each connector (or one for them all: 0), below any lease.
    profiles = summary["profiles"]
    defaults = [p for p in profiles if p["purpose"] == "TxDefaultProfile"]
    for n in (1, 2):
        assert [p for p in defaults if p["connector"] in (0, n)], f"no safe default for connector {n}: {profiles}"
    assert all(p["limitA"] == SAFE_DEFAULT_A and p["transactionId"] is None for p in defaults), defaults
    # ... and a lease for the transaction while the car charged: Absolute from a UTC time, lease_s long,
    # above the safe default, in steps of 0.1 A.
    leases = [p for p in profiles if p["purpose"] == "TxProfile"]
    assert leases, f"no TxProfile during the transaction; profiles: {profiles}\n{explain}"
    for lease in leases:
        assert lease["transactionId"] == summary["transactionId"] and lease["connector"] == 1, lease
        assert lease["kind"] == "Absolute" and lease["startSchedule"].endswith("Z") and lease["durationS"] == LEASE_S, lease
        assert lease["stackLevel"] > max(p["stackLevel"] for p in defaults), lease
        assert 6 <= lease["limitA"] <= 32 and abs(round(lease["limitA"] * 10) - lease["limitA"] * 10) < 1e-6, lease
    assert summary["received"]["SetChargingProfile"] == len(profiles)

    # The admin API's calls reached the charger as valid frames and came back with its answers.
    assert [a for a, status, _ in answers if status != 200] == [], answers
    by_action = {action: answer for action, _, answer in answers}
    assert by_action["GetCompositeSchedule"]["status"] == "Accepted", answers
    assert [answer for action, _, answer in answers if action == "GetLocalListVersion"] == (
        [{"listVersion": 0}, {"listVersion": 1}] if protocol == "ocpp1.6" else [{"versionNumber": 0}, {"versionNumber": 1}]
    )
    assert summary["localList"] == {"version": 1, "entries": 1}

    # The session is on record with the energy the charger metered.
    status, sessions = await daemon.aapi("GET", "/api/sessions")
    assert status == 200
    mine = [s for s in sessions if s["id"] == summary["transactionId"]]
    assert len(mine) == 1, f"session {summary['transactionId']!r} not in {sessions}"
    session = mine[0]
    assert session["charger"] == "CP01" and session["connector"] == 1 and session["bay"] == "B01", session
    assert session["stopped"] is not None, session
    assert summary["energyWh"] > 0 and session["energy_wh"] == summary["energyWh"], (session, summary["energyWh"])
    assert "INTEROP" not in json.dumps(sessions)  # tags only as their hash
