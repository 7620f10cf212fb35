"""The gateway's MQTT link against a real mosquitto and the simulated fixtures (interfaces.md §4)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.contract.events import (
    BrokerConnected,
    BrokerLost,
    Event,
    LightAcked,
    OccupancyChanged,
)
from drivers.mqtt.link import (
    MqttLink,
    ack_topic,
    light_topic,
    occupancy_topic,
    site_root,
    state_topic,
    status_topic,
)
from drivers.sim.lights import SimFixtures
from tests.integration.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

ROOT = site_root("laadplein", "test-plein")
BAYS = ["B01", "B02", "B03"]
REPO = Path(__file__).resolve().parents[2]


def blue(seq: int) -> dict[str, Any]:
    return {"color": "blue", "text": "Alleen opladen", "pictogram": "charging", "seq": seq,
            "ts": "2026-11-28T13:05:09.123Z", "reason": "charging"}


class Events:
    """Collects what the link emits; wait_for() finds the first match after `since`."""

    def __init__(self) -> None:
        self.items: list[Event] = []
        self._added = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.items.append(event)
        self._added.set()

    def mark(self) -> int:
        return len(self.items)

    async def wait_for(self, match: Callable[[Event], bool], *, since: int = 0, timeout_s: float = 5.0) -> Event:
        async with asyncio.timeout(timeout_s):
            while True:
                for event in self.items[since:]:
                    if match(event):
                        return event
                self._added.clear()
                await self._added.wait()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def running(*coros: Coroutine[Any, Any, Any]) -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Run the coroutines as tasks of one TaskGroup; cancel what is left on exit."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(c) for c in coros]
        try:
            yield tasks
        finally:
            for task in tasks:
                task.cancel()


async def retained(broker: Mosquitto, topic: str, *, timeout_s: float = 1.0) -> aiomqtt.Message | None:
    """The retained message on `topic` as a fresh subscriber sees it; None when there is none."""
    async with aiomqtt.Client(broker.host, broker.port, timeout=3) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(timeout_s):
                async for message in client.messages:
                    return message
        except TimeoutError:
            return None
    return None


async def wait_retained(broker: Mosquitto, topic: str, payload: bytes, *, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            message = await retained(broker, topic, timeout_s=0.3)
            if message is not None and message.payload == payload:
                return
            await asyncio.sleep(0.05)


def make_link(broker: Mosquitto, events: Events, **kwargs: Any) -> MqttLink:
    kwargs.setdefault("retry_s", 0.5)
    return MqttLink(broker.host, broker.port, ROOT, BAYS, events, **kwargs)


def make_sim(broker: Mosquitto, **kwargs: Any) -> SimFixtures:
    kwargs.setdefault("retry_s", 0.2)
    return SimFixtures(broker.host, broker.port, ROOT, BAYS, **kwargs)


def is_connected(e: Event) -> bool:
    return isinstance(e, BrokerConnected)


async def test_online_then_clean_close_publishes_offline(mosquitto: Mosquitto) -> None:
    events = Events()
    link = make_link(mosquitto, events)
    async with running(link.run()) as (task,):
        await events.wait_for(is_connected)
        assert link.connected
        message = await retained(mosquitto, status_topic(ROOT))
        assert message is not None and message.payload == b"online" and message.retain
        await link.close()
        await asyncio.wait_for(task, 2)
    assert not link.connected
    assert (await retained(mosquitto, status_topic(ROOT))).payload == b"offline"


async def test_cancelled_run_also_publishes_offline(mosquitto: Mosquitto) -> None:
    events = Events()
    link = make_link(mosquitto, events)
    async with running(link.run()):
        await events.wait_for(is_connected)
    assert (await retained(mosquitto, status_topic(ROOT))).payload == b"offline"


async def test_last_will_says_offline_when_the_gateway_dies(mosquitto: Mosquitto) -> None:
    script = (
        "import asyncio\n"
        "from drivers.contract.events import BrokerConnected\n"
        "from drivers.mqtt.link import MqttLink\n"
        "def on_event(e):\n"
        "    if isinstance(e, BrokerConnected):\n"
        "        print('up', flush=True)\n"
        f"asyncio.run(MqttLink('127.0.0.1', {mosquitto.port}, {ROOT!r}, ['B01'], on_event).run())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert line == b"up\n", (await proc.stderr.read()).decode()
        assert (await retained(mosquitto, status_topic(ROOT))).payload == b"online"
        proc.kill()  # SIGKILL: no DISCONNECT reaches the broker
        await asyncio.wait_for(proc.wait(), 5)
        await wait_retained(mosquitto, status_topic(ROOT), b"offline", timeout_s=3)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_light_command_is_retained_shown_and_acked(mosquitto: Mosquitto) -> None:
    events = Events()
    link = make_link(mosquitto, events)
    sim = make_sim(mosquitto)
    sim.fail_mode["B02"] = "wrong_color"
    sim.fail_mode["B03"] = "no_ack"
    async with running(link.run(), sim.run()):
        await events.wait_for(is_connected)
        await sim.wait_connected()
        for seq, bay in enumerate(BAYS, start=17):
            link.publish_light(bay, blue(seq))
        ack = await events.wait_for(lambda e: isinstance(e, LightAcked) and e.bay_id == "B01")
        assert (ack.seq, ack.color) == (17, "blue")
        wrong = await events.wait_for(lambda e: isinstance(e, LightAcked) and e.bay_id == "B02")
        assert (wrong.seq, wrong.color) == (18, "off")
        assert link.published_at("B01") is not None and link.published_at("B01") <= ack.at
        assert sim.shown["B01"] == blue(17)
        message = await retained(mosquitto, light_topic(ROOT, "B01"))
        assert message is not None and message.retain and message.qos == 1
        assert message.payload == json.dumps(blue(17), separators=(",", ":")).encode()
        await asyncio.sleep(0.3)
        assert sim.shown["B03"] == blue(19)
        assert not [e for e in events.of(LightAcked) if e.bay_id == "B03"]


async def test_occupancy_reaches_the_controller(mosquitto: Mosquitto) -> None:
    events = Events()
    link = make_link(mosquitto, events)
    sim = SimFixtures(mosquitto.host, mosquitto.port, ROOT, [*BAYS, "B99"], retry_s=0.2)
    async with running(link.run(), sim.run()):
        await events.wait_for(is_connected)
        await sim.set_occupancy("B99", True)  # not in the gateway's config
        await sim.set_occupancy("B01", True)
        got = await events.wait_for(lambda e: isinstance(e, OccupancyChanged))
        assert (got.bay_id, got.occupied) == ("B01", True)
        mark = events.mark()
        await sim.set_occupancy("B01", False)
        got = await events.wait_for(lambda e: isinstance(e, OccupancyChanged), since=mark)
        assert (got.bay_id, got.occupied) == ("B01", False)
    assert all(e.bay_id != "B99" for e in events.of(OccupancyChanged))


async def test_junk_is_a_sensor_fault_logged_once(mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="laadplein.mqtt")
    events = Events()
    link = make_link(mosquitto, events)
    sim = make_sim(mosquitto)
    async with running(link.run(), sim.run()):
        await events.wait_for(is_connected)
        for junk in (b"true", b"\xff" * 10, b"x" * 10_000):
            mark = events.mark()
            await sim.publish_occupancy_payload("B02", junk)
            got = await events.wait_for(lambda e: isinstance(e, OccupancyChanged), since=mark)
            assert (got.bay_id, got.occupied) == ("B02", None)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, timeout=3) as fixture:
            for _ in range(3):
                await fixture.publish(ack_topic(ROOT, "B02"), b'{"seq": "x"}', qos=1)
        await sim.set_occupancy("B02", False)
        got = await events.wait_for(lambda e: isinstance(e, OccupancyChanged) and e.occupied is False)
        assert got.bay_id == "B02" and link.connected
    assert not events.of(LightAcked)
    occupancy_warnings = [r for r in caplog.records if "B02/occupancy" in r.getMessage()]
    ack_warnings = [r for r in caplog.records if "B02/light/ack" in r.getMessage()]
    assert len(occupancy_warnings) == 1 and len(ack_warnings) == 1
    assert "sensor fault" in occupancy_warnings[0].getMessage()


async def test_broker_restart_republishes_the_same_commands(mosquitto: Mosquitto) -> None:
    events = Events()
    link = make_link(mosquitto, events)
    sim = make_sim(mosquitto)
    async with running(link.run(), sim.run()):
        await events.wait_for(is_connected)
        await sim.wait_connected()
        link.publish_light("B01", blue(5))
        link.publish_light("B02", blue(3))
        await events.wait_for(lambda e: isinstance(e, LightAcked) and e.seq == 5)

        mark = events.mark()
        mosquitto.stop()
        await events.wait_for(lambda e: isinstance(e, BrokerLost), since=mark, timeout_s=3)
        assert not link.connected
        link.publish_light("B01", blue(6))  # while the broker is gone: only the latest may go out
        link.publish_light("B01", blue(7))

        mark = events.mark()
        started = time.monotonic()
        mosquitto.start()
        await events.wait_for(is_connected, since=mark, timeout_s=5)
        assert time.monotonic() - started < 5

        ack = await events.wait_for(lambda e: isinstance(e, LightAcked) and e.seq == 7, since=mark)
        assert ack.bay_id == "B01"
        assert (await retained(mosquitto, status_topic(ROOT))).payload == b"online"
        b02 = await retained(mosquitto, light_topic(ROOT, "B02"))
        assert b02 is not None and json.loads(b02.payload) == blue(3)  # same seq as before the restart
        b01 = await retained(mosquitto, light_topic(ROOT, "B01"))
        assert b01 is not None and json.loads(b01.payload) == blue(7)
        assert all(command["seq"] != 6 for _, bay, command in sim.history)

        mark = events.mark()
        await sim.set_occupancy("B03", True)  # the sensors came back too
        got = await events.wait_for(lambda e: isinstance(e, OccupancyChanged), since=mark)
        assert (got.bay_id, got.occupied) == ("B03", True)


async def test_state_is_coalesced_and_the_last_one_wins(mosquitto: Mosquitto) -> None:
    events = Events()
    link = make_link(mosquitto, events, state_min_interval_s=1.0)
    async with running(link.run()):
        await events.wait_for(is_connected)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, timeout=3) as dashboard:
            await dashboard.subscribe(state_topic(ROOT), qos=1)
            for i in range(10):
                link.publish_state({"site": "test-plein", "n": i})
                await asyncio.sleep(0.01)
            got: list[bytes] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.6):
                    async for message in dashboard.messages:
                        got.append(message.payload)
    assert 1 <= len(got) <= 2
    assert json.loads(got[-1]) == {"site": "test-plein", "n": 9}
    assert json.loads((await retained(mosquitto, state_topic(ROOT))).payload)["n"] == 9


async def test_fixtures_fall_back_to_green_when_the_gateway_is_gone(mosquitto: Mosquitto) -> None:
    events = Events()
    link = make_link(mosquitto, events)
    sim = make_sim(mosquitto, failsafe_s=0.5)
    async with running(sim.run()):
        async with running(link.run()):
            await events.wait_for(is_connected)
            link.publish_light("B01", blue(8))
            await events.wait_for(lambda e: isinstance(e, LightAcked))
            await link.close()
        assert sim.shown["B01"]["color"] == "blue"
        async with asyncio.timeout(3):
            while sim.shown["B01"]["color"] != "green":
                await asyncio.sleep(0.05)
        shown = sim.shown["B01"]
        assert (shown["text"], shown["pictogram"], shown["reason"]) == ("Vrij parkeren", "parking", "open")
        assert sim.shown["B02"]["color"] == "green"

        events = Events()
        link = make_link(mosquitto, events)
        link.publish_light("B01", blue(9))
        async with running(link.run()):
            await events.wait_for(lambda e: isinstance(e, LightAcked) and e.seq == 9)
            assert sim.shown["B01"] == blue(9)


async def test_link_started_before_the_broker_keeps_trying(tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path)
    events = Events()
    link = make_link(broker, events)
    link.publish_light("B01", blue(1))
    try:
        async with running(link.run()):
            lost = await events.wait_for(lambda e: isinstance(e, BrokerLost), timeout_s=3)
            assert "refused" in lost.reason.lower()
            broker.start()
            await events.wait_for(is_connected, timeout_s=5)
            assert len(events.of(BrokerLost)) == 1  # one report for the whole outage, not one per attempt
            await asyncio.sleep(0.1)
            message = await retained(broker, light_topic(ROOT, "B01"))
            assert message is not None and json.loads(message.payload) == blue(1)
            assert link.published_at("B01") is not None
    finally:
        broker.close()


async def test_a_crash_in_the_controller_ends_the_link_and_says_offline(mosquitto: Mosquitto) -> None:
    events = Events()

    def on_event(event: Event) -> None:
        events(event)
        if isinstance(event, OccupancyChanged):
            raise RuntimeError("controller bug")

    link = MqttLink(mosquitto.host, mosquitto.port, ROOT, BAYS, on_event, retry_s=0.5)
    task = asyncio.create_task(link.run())
    try:
        await events.wait_for(is_connected)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, timeout=3) as sensor:
            await sensor.publish(occupancy_topic(ROOT, "B01"), b'{"occupied": true}', qos=1)
        with pytest.raises(BaseExceptionGroup) as raised:
            await asyncio.wait_for(task, 3)
        assert raised.value.subgroup(RuntimeError) is not None
    finally:
        task.cancel()
    assert (await retained(mosquitto, status_topic(ROOT))).payload == b"offline"
