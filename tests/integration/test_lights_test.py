"""The lights test end to end: the real daemon, mosquitto, simulated chargers and simulated fixtures
(some made to fail), through the admin API and through `laadplein lights-test`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time

import pytest

from drivers.sim.lights import SimFixtures
from tests.integration.harness import REPO, Daemon, MqttWatcher, chargers, wait_until
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration

ROOT = "lp/testplein"
BAYS = ("B01", "B02", "B03", "B04")


@contextlib.asynccontextmanager
async def fixtures(mosquitto, bays, **fail_mode):
    """Simulated fixtures of `bays`; fail_mode per bay: "no_ack" or "wrong_color"."""
    sim = SimFixtures("127.0.0.1", mosquitto.port, ROOT, bays, retry_s=0.2)
    sim.fail_mode.update(fail_mode)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sim.run(ready), name="sim-fixtures")
        await asyncio.wait_for(ready.wait(), timeout=10)
        try:
            yield sim
        finally:
            task.cancel()


async def settled(d: Daemon, bays=BAYS) -> dict[str, dict]:
    """Wait until every bay's light is decided and acked by its fixture; the bays as the API shows them."""
    async def acked() -> bool:
        status, rows = await d.aapi("GET", "/api/bays")
        return status == 200 and all(
            r["light"] and r["fixture"] and r["fixture"]["seq"] == r["seq"] for r in rows if r["id"] in bays)

    await wait_until(acked, 15, "every light decided and acked")
    return {r["id"]: r for r in (await d.aapi("GET", "/api/bays"))[1]}


async def test_every_fixture_passes_and_every_bay_comes_back_with_a_newer_seq(make_daemon, mosquitto):
    d = make_daemon(signage={"ack_timeout_s": 2})
    d.start()
    assert (await d.aapi("GET", "/api/lights/test"))[0] == 404  # no test since start
    async with MqttWatcher(mosquitto.port, ROOT) as mq, fixtures(mosquitto, BAYS) as sim, \
            chargers(d, "CP01", "CP02") as sims:
        await sims["CP01"].plug_in(1)
        await mq.wait_light("B01", "blue", reason="charging")
        status, _ = await d.aapi("PUT", "/api/bays/B02/override", {"color": "green", "minutes": 5, "who": "tech", "why": "paint"})
        assert status == 200
        await mq.wait_light("B02", "green", reason="override")
        before = await settled(d)
        t0 = time.monotonic()
        post = asyncio.create_task(d.aapi("POST", "/api/lights/test", {"hold_s": 1, "who": "jan"}, timeout_s=30))

        async def running() -> bool:
            status, body = await d.aapi("GET", "/api/lights/test")
            return status == 200 and body["running"]

        await wait_until(running, 5, "the test running")
        status, busy = await d.aapi("POST", "/api/lights/test", {})
        assert status == 409 and busy["progress"]["running"] and busy["progress"]["total"] == 16
        status, result = await post
        assert status == 200, result
        assert result["ok"] and result["problem"] is None, result
        assert 3.0 <= result["took_s"] < 10
        assert [f["bay"] for f in result["fixtures"]] == list(BAYS)
        for f in result["fixtures"]:
            assert [(s["step"], s["ok"]) for s in f["steps"]] == [("blue", True), ("green", True), ("off", True), ("back", True)]
            assert all(0 <= s["ack_s"] < 2 for s in f["steps"])
        # Every bay walked blue, green, off (override, in order), then back to what it showed before.
        for bay in BAYS:
            seen = [s.json() for s in mq.seen if s.at >= t0 and s.topic == f"{ROOT}/bays/{bay}/light"]
            walk = [(c["color"], c["reason"]) for c in seen]
            assert walk[:3] == [("blue", "override"), ("green", "override"), ("off", "override")], walk
            assert walk[3:] == [(before[bay]["light"], before[bay]["reason"])], walk
            seqs = [c["seq"] for c in seen]
            assert seqs == sorted(seqs) and len(set(seqs)) == 4 and seqs[0] > before[bay]["seq"]
            assert sim.shown[bay]["color"] == before[bay]["light"]
        after = await settled(d)
        assert after["B02"]["override"]["who"] == "tech" and after["B02"]["reason"] == "override"
        assert all(after[b]["override"] is None for b in ("B01", "B03", "B04"))
        status, last = await d.aapi("GET", "/api/lights/test")
        assert status == 200 and not last["running"] and last["started"] == result["started"]
        events = (await d.aapi("GET", "/api/events?limit=1000"))[1]
        messages = [e["message"] for e in events if e["kind"] == "lights_test"]
        assert messages[0] == "lights test started by jan on 4 bay(s)"
        assert messages[-1].startswith("lights test: all 4 fixture(s) passed")
    assert "lights test: bay B03 passed" in d.log()


async def test_failing_fixtures_are_reported_and_a_lost_broker_is_said_up_front(make_daemon, mosquitto):
    d = make_daemon(signage={"ack_timeout_s": 1})
    d.start()
    # B04 has no fixture at all: its commands are never acked.
    async with fixtures(mosquitto, ("B01", "B02", "B03"), B02="wrong_color", B03="no_ack"), chargers(d, "CP01", "CP02"):
        await settled(d, ("B01",))
        assert (await d.aapi("POST", "/api/lights/test", {"bays": ["B01", "B99"]}))[0] == 404
        assert (await d.aapi("POST", "/api/lights/test", {"bays": "B01"}))[0] == 400
        assert (await d.aapi("POST", "/api/lights/test", {"hold_s": 99}))[0] == 400
        status, result = await d.aapi("POST", "/api/lights/test", {"hold_s": 0}, timeout_s=30)
        assert status == 200 and not result["ok"]
        b01, b02, b03, b04 = result["fixtures"]
        assert b01["ok"] and b01["problem"] is None
        assert not b02["ok"] and b02["problem"].startswith("acked off while blue was asked")
        assert b02["problem"].endswith("; green, off and back failed too")
        assert b02["steps"][2]["problem"].startswith("acked green while off was asked")
        assert not b03["ok"] and b03["problem"].startswith("no ack for blue within 1 s")
        assert not b04["ok"] and b04["problem"].startswith(
            "no ack for blue within 1 s (the fixture has not acked anything since the gateway started)")
        assert [s["ok"] for s in b04["steps"]] == [False] * 4
        assert 4.0 <= result["took_s"] < 8  # four steps of 1 s, the bays in parallel
        # Back to their own lights all the same, no test override left.
        rows = (await d.aapi("GET", "/api/bays"))[1]
        assert all(r["reason"] == "open" and r["light"] == "green" and r["override"] is None for r in rows)
        assert "lights test: bay B04 FAILED: no ack for blue within 1 s" in d.log()

        mosquitto.stop()

        async def broker_gone() -> bool:
            return (await d.aapi("GET", "/api/health"))[1]["broker"] == "disconnected"

        await wait_until(broker_gone, 10, "the daemon noticing the broker gone")
        t0 = time.monotonic()
        status, result = await d.aapi("POST", "/api/lights/test", {"bays": ["B01"]})
        assert time.monotonic() - t0 < 1.0
        assert status == 200 and not result["ok"] and "MQTT broker is not connected" in result["problem"]
        assert result["fixtures"][0]["steps"] == [] and result["fixtures"][0]["problem"].startswith("not tested")
        mosquitto.start()


def laadplein(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller.cli", *args], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=60)


async def test_the_cli_shows_each_fixture_and_exits_by_the_outcome(make_daemon, mosquitto, tmp_path):
    d = make_daemon(token="s3cret-token-for-lights", signage={"ack_timeout_s": 1})
    d.start()
    config = str(d.config_path)
    async with fixtures(mosquitto, ("B01", "B02"), B02="no_ack"), chargers(d, "CP01", "CP02"):
        await settled(d, ("B01",))
        ok = await asyncio.to_thread(laadplein, "lights-test", "--config", config, "--bay", "B01", "--hold-s", "0")
        assert ok.returncode == 0, ok.stderr
        row = next(line for line in ok.stdout.splitlines() if "B01" in line)
        assert "PASSED" in row and row.count("ok") == 4
        assert "all 1 fixture(s) passed" in ok.stdout and "(Europe/Amsterdam)" in ok.stdout

        failed = await asyncio.to_thread(laadplein, "lights-test", "--config", config, "--bay", "B01", "--bay", "B02",
                                         "--hold-s", "0")
        assert failed.returncode == 1, failed.stderr
        row = next(line for line in failed.stdout.splitlines() if "B02" in line)
        assert row.count("FAILED") >= 4
        assert "no ack for blue within 1 s" in failed.stdout
        assert "1 of 2 fixture(s) FAILED: B02" in failed.stdout

        as_json = await asyncio.to_thread(laadplein, "lights-test", "--config", config, "--bay", "B01", "--json",
                                          "--hold-s", "0")
        assert as_json.returncode == 0, as_json.stderr
        answer = json.loads(as_json.stdout)
        assert answer["ok"] and answer["fixtures"][0]["bay"] == "B01" and len(answer["fixtures"][0]["steps"]) == 4

        unknown = await asyncio.to_thread(laadplein, "lights-test", "--config", config, "--bay", "B99")
        assert unknown.returncode == 2 and "B99" in unknown.stderr

        (tmp_path / "wrong-token").write_text("not-the-token\n")
        refused = await asyncio.to_thread(laadplein, "lights-test", "--api", f"http://127.0.0.1:{d.api_port}",
                                          "--token-file", str(tmp_path / "wrong-token"))
        assert refused.returncode == 4 and "refused the token" in refused.stderr

    nobody = await asyncio.to_thread(laadplein, "lights-test", "--api", f"http://127.0.0.1:{free_port()}")
    assert nobody.returncode == 3 and "not reachable" in nobody.stderr
