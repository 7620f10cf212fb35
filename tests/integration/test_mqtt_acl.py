"""The square's broker as shipped (scripts/mosquitto/laadplein.conf and the access list of `laadplein
broker-acl`), against a real mosquitto: each device writes only its own topics, nobody takes the
gateway's client id, and the gateway works end to end with its password over TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.integration.harness import (
    Daemon,
    chargers,
    square_toml,
    wait_until,
)
from tests.integration.mosquitto import BrokerUsers, Mosquitto
from tests.integration.ports import free_port

ROOT = "lp/testplein"
BAYS = [("B01", True), ("B02", True), ("B03", True), ("B04", True)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(workdir=tmp_path / "mosquitto", secure=BrokerUsers(ROOT, BAYS, tls=True))
    b.workdir.mkdir()
    with b:
        yield b


def tls(broker: Mosquitto) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(broker.secure.ca_file))
    return context


def client(broker: Mosquitto, user: str | None, *, password: str | None = None, identifier: str | None = None,
           **kw) -> aiomqtt.Client:
    if password is None and user is not None:
        password = broker.secure.passwords[user]
    return aiomqtt.Client(broker.host, broker.port, username=user, password=password, identifier=identifier,
                          tls_context=tls(broker), timeout=5, **kw)


class Listener:
    """The gateway's user reading everything under the square's root."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.news = asyncio.Event()

    async def run(self, c: aiomqtt.Client, ready: asyncio.Event) -> None:
        await c.subscribe(f"{ROOT}/#", qos=1)
        ready.set()
        async for m in c.messages:
            self.seen.append((str(m.topic), bytes(m.payload)))
            self.news.set()

    async def wait_topic(self, topic: str, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not any(t == topic for t, _ in self.seen):
                self.news.clear()
                await self.news.wait()


async def attempt(broker: Mosquitto, user: str, writes: list[str], marker: str, marker_by: str | None = None) -> list[str]:
    """`user` publishes to every topic of `writes`, then `marker_by` (default `user`, who may write it)
    to `marker`; the topics under the root the gateway's user saw. The broker passes one client's
    messages on in order, so whatever got through was seen before the marker."""
    listener = Listener()
    ready = asyncio.Event()
    async with client(broker, "laadplein") as gw, asyncio.TaskGroup() as tg:
        task = tg.create_task(listener.run(gw, ready))
        await asyncio.wait_for(ready.wait(), 10)
        async with client(broker, user) as dev:
            for topic in writes:
                await dev.publish(topic, b'{"occupied": false, "seq": 99, "color": "blue"}', qos=1)
        async with client(broker, marker_by or user) as dev:
            await dev.publish(marker, b'{"occupied": true, "seq": 1, "color": "green"}', qos=1)
        await listener.wait_topic(marker)
        task.cancel()
    return [t for t, _ in listener.seen]


async def test_a_sensor_writes_only_its_own_bays_occupancy_and_no_light(broker):
    seen = await attempt(
        broker, "sensor-B02",
        [f"{ROOT}/bays/B01/occupancy", f"{ROOT}/bays/B01/light", f"{ROOT}/bays/B02/light",
         f"{ROOT}/bays/B02/light/ack", f"{ROOT}/state", f"{ROOT}/gateway/status"],
        marker=f"{ROOT}/bays/B02/occupancy",
    )
    assert seen == [f"{ROOT}/bays/B02/occupancy"]


async def test_a_fixture_writes_only_its_own_ack_and_no_light_command(broker):
    seen = await attempt(
        broker, "light-B01",
        [f"{ROOT}/bays/B01/light", f"{ROOT}/bays/B02/light", f"{ROOT}/bays/B02/light/ack",
         f"{ROOT}/bays/B01/occupancy", f"{ROOT}/gateway/status"],
        marker=f"{ROOT}/bays/B01/light/ack",
    )
    assert seen == [f"{ROOT}/bays/B01/light/ack"]


async def test_a_dashboard_only_reads(broker):
    seen = await attempt(broker, "dashboard", [f"{ROOT}/bays/B01/light", f"{ROOT}/state", f"{ROOT}/bays/B01/occupancy"],
                         marker=f"{ROOT}/bays/B01/occupancy", marker_by="sensor-B01")
    assert seen == [f"{ROOT}/bays/B01/occupancy"]  # the sensor's own, not the dashboard's
    assert sum(1 for t in seen if t.endswith("/occupancy")) == 1


async def test_strangers_are_refused(broker):
    for user, password in ((None, None), ("laadplein", "wrong"), ("nobody", "x")):
        with pytest.raises(aiomqtt.MqttError):
            async with client(broker, user, password=password):
                pass
    with pytest.raises(aiomqtt.MqttError):  # plain MQTT on the TLS listener
        async with aiomqtt.Client(broker.host, broker.port, username="laadplein",
                                  password=broker.secure.passwords["laadplein"], timeout=3):
            pass


async def test_a_device_using_the_gateways_client_id_does_not_knock_it_off(broker):
    lost = asyncio.Event()
    async with client(broker, "laadplein", identifier="laadplein-testplein") as gw:
        async def watch() -> None:
            try:
                async for _ in gw.messages:
                    pass
            except aiomqtt.MqttError:
                lost.set()

        await gw.subscribe(f"{ROOT}/bays/+/occupancy", qos=1)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(watch())
            for _ in range(3):
                async with client(broker, "sensor-B01", identifier="laadplein-testplein") as dev:
                    await dev.publish(f"{ROOT}/bays/B01/occupancy", b'{"occupied": true}', qos=1)
            # The gateway's connection still works: a round trip through the broker.
            await gw.publish(f"{ROOT}/state", b"{}", qos=1)
            assert not lost.is_set()
            task.cancel()


async def test_the_gateway_works_end_to_end_with_its_password_over_tls(broker, tmp_path):
    """The daemon reaches the shipped broker with `[mqtt] username`, `password_file` and `ca_file`; a
    plug-in turns its bay blue on the fixture's topic, the fixture's ack and the sensor's reading reach it."""
    sec = broker.secure
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt-password").write_text(sec.passwords["laadplein"] + "\n")
    ocpp_port, api_port = free_port(), free_port()
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=broker.port, chargers=2)
    mqtt_keys = (f'topic_prefix = "lp"\nusername = "laadplein"\npassword_file = "../secrets/mqtt-password"\n'
                 f'ca_file = "{sec.ca_file}"\n')
    assert 'topic_prefix = "lp"\n' in text
    d = Daemon(tmp_path / "d", text.replace('topic_prefix = "lp"\n', mqtt_keys, 1), api_port=api_port, ocpp_port=ocpp_port)
    d.start()
    try:
        got = []
        ready = asyncio.Event()

        async def fixture(c: aiomqtt.Client) -> None:
            await c.subscribe(f"{ROOT}/bays/B01/light", qos=1)
            ready.set()
            async for m in c.messages:
                cmd = json.loads(m.payload)
                got.append(cmd)
                await c.publish(f"{ROOT}/bays/B01/light/ack", json.dumps({"seq": cmd["seq"], "color": cmd["color"]}), qos=1)

        async with client(broker, "light-B01") as fx, client(broker, "sensor-B01") as sensor, asyncio.TaskGroup() as tg:
            task = tg.create_task(fixture(fx))
            await asyncio.wait_for(ready.wait(), 10)
            await sensor.publish(f"{ROOT}/bays/B01/occupancy", b'{"occupied": true}', qos=1, retain=True)
            async with chargers(d, "CP01", "CP02") as sims:
                await sims["CP01"].plug_in(1)
                await wait_until(lambda: any(c["color"] == "blue" for c in got), 15, "a blue command on B01's fixture")
                blue = next(c for c in got if c["color"] == "blue")

                def acked() -> bool:
                    status, bays = d.api("GET", "/api/bays")
                    b01 = next(b for b in bays if b["id"] == "B01")
                    return status == 200 and b01["occupied"] is True and b01["light"] == "blue"

                await wait_until(acked, 10, "B01 blue and occupied in the API")
                _, alarms = d.api("GET", "/api/alarms")
                assert not [a for a in alarms if a["key"].startswith(("fixture_", "broker_", "light_foreign", "sensor_"))], alarms
                assert blue["reason"] in ("plugged", "charging")
            task.cancel()
        assert f"MQTT broker 127.0.0.1:{broker.port} (TLS) connected as" in d.log()
    finally:
        d.stop()


def test_the_daemon_refuses_to_start_with_an_unreadable_password_file_and_names_it(tmp_path):
    text = square_toml(ocpp_port=free_port(), api_port=free_port(), mqtt_port=free_port(), chargers=1)
    text = text.replace('topic_prefix = "lp"\n', 'topic_prefix = "lp"\nusername = "laadplein"\npassword_file = "gone"\n', 1)
    (tmp_path / "square.toml").write_text(text)
    done = subprocess.run([sys.executable, "-m", "controller.cli", "run", "--config", str(tmp_path / "square.toml")],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"mqtt.password_file: {tmp_path / 'gone'}: cannot read it" in done.stderr
    assert not (tmp_path / "state").exists()  # nothing written before the config's files were checked
