"""Light commands the gateway did not send: the link tells them from its own echoes, reports them and
puts its own command back; the daemon raises one alarm per bay naming it (real mosquitto, anonymous)."""

from __future__ import annotations

import asyncio
import json

import aiomqtt

from drivers.contract.events import LightForeign
from drivers.mqtt.link import light_topic
from tests.integration.harness import MqttWatcher, chargers, wait_until
from tests.integration.mosquitto import Mosquitto
from tests.integration.test_mqtt_link import (
    ROOT,
    Events,
    blue,
    make_link,
    retained,
    running,
    wait_retained,
)


def green(seq: int) -> dict:
    return {"color": "green", "text": "Parkeren", "pictogram": "parking", "seq": seq,
            "ts": "2026-11-28T13:05:09.123Z", "reason": "open"}


def payload(command: dict) -> bytes:
    return json.dumps(command, separators=(",", ":"), ensure_ascii=False).encode()


async def stranger(broker: Mosquitto, topic: str, data: bytes, *, retain: bool = True) -> None:
    async with aiomqtt.Client(broker.host, broker.port, timeout=3) as c:
        await c.publish(topic, data, qos=1, retain=retain)


async def test_a_strangers_command_is_reported_and_the_gateways_own_put_back(mosquitto: Mosquitto) -> None:
    events = Events()
    link = make_link(mosquitto, events)
    topic = light_topic(ROOT, "B01")
    async with running(link.run()):
        await events.wait_for(lambda e: type(e).__name__ == "BrokerConnected")
        # The gateway's own changes, one after another as fast as they come: never foreign.
        for seq in range(1, 6):
            link.publish_light("B01", green(seq) if seq % 2 else blue(seq))
        await wait_retained(mosquitto, topic, payload(green(5)))
        await asyncio.sleep(0.3)
        assert not events.of(LightForeign)
        # A stranger's blue with a higher seq, retained: reported, and the broker holds the gateway's again.
        mark = events.mark()
        await stranger(mosquitto, topic, payload(blue(99)))
        foreign = await events.wait_for(lambda e: isinstance(e, LightForeign), since=mark)
        assert (foreign.bay_id, foreign.seq, foreign.color, foreign.retained) == ("B01", 99, "blue", False)
        await wait_retained(mosquitto, topic, payload(green(5)))
        # A replay of an old command of the gateway's is foreign too, and so is junk.
        await asyncio.sleep(1.1)  # the link passes one report per bay a second
        mark = events.mark()
        await stranger(mosquitto, topic, payload(blue(4)))
        assert (await events.wait_for(lambda e: isinstance(e, LightForeign), since=mark)).seq == 4
        await wait_retained(mosquitto, topic, payload(green(5)))
        await asyncio.sleep(1.1)  # the link passes one report per bay a second
        mark = events.mark()
        await stranger(mosquitto, topic, b"not json", retain=False)
        assert (await events.wait_for(lambda e: isinstance(e, LightForeign), since=mark)).seq is None


async def test_a_restart_finds_its_older_command_retained_and_says_nothing(mosquitto: Mosquitto) -> None:
    topic = light_topic(ROOT, "B01")
    await stranger(mosquitto, topic, payload(blue(7)))  # what the previous run left on the broker
    # the same seq written with its keys in another order: the previous run's encoding of this command
    await stranger(mosquitto, light_topic(ROOT, "B02"), json.dumps(dict(reversed(green(3).items()))).encode())
    events = Events()
    link = make_link(mosquitto, events)
    link.publish_light("B01", green(8))
    link.publish_light("B02", green(3))
    async with running(link.run()):
        await wait_retained(mosquitto, topic, payload(green(8)))
        await wait_retained(mosquitto, light_topic(ROOT, "B02"), payload(green(3)))
        await asyncio.sleep(0.3)
    assert not events.of(LightForeign)


async def test_a_stranger_planting_a_newer_command_while_the_gateway_is_away_is_found_at_reconnect(
    mosquitto: Mosquitto,
) -> None:
    topic = light_topic(ROOT, "B01")
    await stranger(mosquitto, topic, payload(blue(50)))
    events = Events()
    link = make_link(mosquitto, events)
    link.publish_light("B01", green(8))
    async with running(link.run()):
        foreign = await events.wait_for(lambda e: isinstance(e, LightForeign))
        assert (foreign.seq, foreign.color, foreign.retained) == (50, "blue", True)
        await wait_retained(mosquitto, topic, payload(green(8)))
    assert (await retained(mosquitto, topic)).payload == payload(green(8))


async def test_the_daemon_alarms_once_naming_the_bay_and_the_fixture_shows_its_command(make_daemon, mosquitto):
    d = make_daemon(chargers=1, connectors=2)
    d.start()
    root = "lp/testplein"
    async with MqttWatcher(mosquitto.port, root) as watcher, chargers(d, "CP01"):
        first = await watcher.wait_light("B01", "green", timeout_s=15)
        own = first.payload
        for seq in (1000, 1001, 1002):
            await stranger(mosquitto, f"{root}/bays/B01/light",
                           payload({"color": "blue", "text": "x", "pictogram": "charging", "seq": seq,
                                    "ts": "2026-11-28T13:05:09.123Z", "reason": "charging"}))
            await asyncio.sleep(0.2)

        def alarms() -> list[dict]:
            return [a for a in d.api("GET", "/api/alarms")[1] if a["key"].startswith("light_foreign:")]

        await wait_until(lambda: alarms(), 10, "the foreign light alarm")
        await wait_retained(mosquitto, f"{root}/bays/B01/light", own)
        found = alarms()
        assert [a["key"] for a in found] == ["light_foreign:B01"]
        assert "bay B01" in found[0]["message"] and "did not send" in found[0]["message"]
        status, events = d.api("GET", "/api/events?since=2000-01-01T00:00:00Z")
        assert status == 200
        assert 1 <= sum(1 for e in events if e.get("kind") == "light_foreign") <= 2
