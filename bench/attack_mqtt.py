"""Attacks from a device on the broker: a lying occupancy sensor, forged light commands and acks, and the
gateway's own client id."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from bench.attack_report import TRAPS, Row
from tests.integration.harness import MqttWatcher, Seen

Api = Callable[..., Awaitable[tuple[int, object]]]


@dataclass
class Broker:
    """The square's broker as the bench uses it: anonymous, or with a user per device and an access list
    (where the repository ships one); `passwords` maps each user to its password."""

    port: int
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def secure(self) -> bool:
        return bool(self.passwords)

    def daemon_keys(self, folder: Path) -> str:
        """The daemon's `[mqtt]` credentials (the gateway's user, its password in a file in `folder`)."""
        if not self.secure:
            return ""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mqtt-password").write_text(self.passwords[GATEWAY] + "\n")
        return f'username = "{GATEWAY}"\npassword_file = "mqtt-password"\n'

    def auth(self, user: str) -> dict[str, str]:
        """aiomqtt.Client keyword arguments to connect as `user` (nothing on an anonymous broker)."""
        return (
            {"username": user, "password": self.passwords[user]} if self.secure else {}
        )


ATTACKER = "sensor-B05"  # on a broker with users: a device of the square, writing beyond its own bay
GATEWAY = "laadplein"
DASHBOARD = "dashboard"  # may read the lights, as the bench's observer does


async def publish(
    broker: Broker,
    topic: str,
    payload: object,
    *,
    retain: bool = False,
    identifier: str | None = None,
    user: str = ATTACKER,
) -> str:
    """Publish as `user` (anonymously on an open broker): '' when the broker took the connection, else why not."""
    try:
        async with aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            timeout=5,
            identifier=identifier,
            **broker.auth(user),
        ) as client:
            text = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
            await client.publish(topic, text, qos=1, retain=retain)
        return ""
    except aiomqtt.MqttError as exc:
        return str(exc)


class Watcher(MqttWatcher):
    """The harness's MQTT watcher, connected as the dashboard's user where the broker has users."""

    def __init__(self, broker: Broker, root: str) -> None:
        super().__init__(broker.port, root)
        self._auth = broker.auth(DASHBOARD)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, timeout=5, **self._auth
                ) as client:
                    await client.subscribe(f"{self.root}/#", qos=1)
                    self._ready.set()
                    async for msg in client.messages:
                        async with self._changed:
                            self.seen.append(
                                Seen(
                                    time.monotonic(),
                                    str(msg.topic),
                                    bytes(msg.payload),
                                    msg.retain,
                                )
                            )
                            self._changed.notify_all()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.3)


def _mentions(alarms: object, word: str) -> int:
    return (
        sum(1 for a in alarms if word in json.dumps(a))
        if isinstance(alarms, list)
        else 0
    )


def _doubts(events: object, bay: str) -> int:
    return (
        sum(1 for e in events if isinstance(e, dict) and e.get("kind") == "sensor_doubted" and bay in json.dumps(e))
        if isinstance(events, list)
        else 0
    )


async def sensor_attacks(
    broker: Broker,
    root: str,
    mq: MqttWatcher,
    api: Api,
    parked_bay: str,
    charging_bay: str,
) -> list[Row]:
    """'Empty' for a bay with a parked petrol car (the trap), and for a bay whose car is charging (a sensor fault)."""
    t0 = time.monotonic()
    refused = await publish(
        broker, f"{root}/bays/{parked_bay}/occupancy", {"occupied": False}, retain=True
    )
    trapped = 0
    try:
        await mq.wait_light(parked_bay, "blue", after=t0, timeout_s=4)
        trapped = 1
    except AssertionError:
        pass
    await publish(
        broker,
        f"{root}/bays/{parked_bay}/occupancy",
        {"occupied": True},
        retain=True,
        user=f"sensor-{parked_bay}",
    )  # the honest sensor again
    _, before = await api("GET", "/api/events?limit=1000")
    await publish(
        broker,
        f"{root}/bays/{charging_bay}/occupancy",
        {"occupied": False},
        retain=True,
        user=f"sensor-{charging_bay}",
    )
    await asyncio.sleep(3.0)
    # Doubted at once (an event, the bay held occupied); the alarm follows only if it lasts a minute.
    _, after = await api("GET", "/api/events?limit=1000")
    await publish(
        broker,
        f"{root}/bays/{charging_bay}/occupancy",
        {"occupied": True},
        retain=True,
        user=f"sensor-{charging_bay}",
    )
    noticed = _doubts(after, charging_bay) - _doubts(before, charging_bay)
    return [
        Row(
            "4",
            "forged 'empty' for a bay with a parked petrol car: bay turned blue",
            1,
            trapped,
            0,
            f"broker refused the publish: {refused}"
            if refused
            else f"{parked_bay} {'turned blue (reserve)' if trapped else 'stayed green'}",
            total=TRAPS,
        ),
        Row(
            "4",
            "'empty' for a bay whose car is charging, taken as a sensor fault",
            1,
            int(noticed > 0),
            1,
            f"new sensor_doubted events naming {charging_bay}: {max(noticed, 0)}",
            at_least=True,
        ),
    ]


async def forged_light(
    broker: Broker, root: str, mq: MqttWatcher, api: Api, bay: str
) -> list[Row]:
    """A blue command on a green bay's light topic that the gateway did not send: noticed, put right?"""
    topic = f"{root}/bays/{bay}/light"
    genuine = mq.last_light(bay)
    forged = {
        "color": "blue",
        "text": "Alleen opladen",
        "pictogram": "charging",
        "seq": 999_999,
        "ts": "2026-01-01T00:00:00.000Z",
        "reason": "charging",
    }
    _, before = await api("GET", "/api/alarms")
    refused = await publish(broker, topic, forged, retain=True)
    await asyncio.sleep(3.0)
    last = mq.last_light(bay)
    still = int(last is not None and last.get("seq") == 999_999)
    _, after = await api("GET", "/api/alarms")
    noticed = _mentions(after, bay) - _mentions(before, bay)
    delivered = any(light.get("seq") == 999_999 for light in mq.lights(bay))
    if genuine is not None and still:
        await publish(
            broker, topic, genuine, retain=True
        )  # the fixture shows the gateway's command again
    was = genuine.get("color") if genuine else "nothing"
    if refused:
        shown = f"broker refused the connection: {refused}"
    elif not delivered:
        shown = "the broker passed it on to nobody (access list)"
    else:
        shown = f"{bay} was {was}; 3 s later the retained command is {'still the forged one' if still else 'the gateway’s'}"
    return [
        Row(
            "4",
            "forged blue light command left in force on a green bay",
            1,
            still,
            0,
            shown,
            total=TRAPS,
        ),
        Row(
            "4",
            "forged light commands delivered to a fixture and not alarmed",
            1,
            int(delivered and noticed <= 0),
            0,
            f"delivered: {delivered}; new alarms naming {bay}: {max(noticed, 0)}",
        ),
    ]


async def fake_acks(broker: Broker, root: str, api: Api, bay: str) -> Row:
    """No fixture on the bay; a stranger echoes an ack for every command: does the lights test pass?"""

    stop = asyncio.Event()

    async def echo() -> None:
        # Ends by `stop`, never by a cancel: aiomqtt can hang in its exit when cancelled mid-read.
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, timeout=5, **broker.auth(ATTACKER)
        ) as client:
            await client.subscribe(f"{root}/bays/{bay}/light", qos=1)
            messages = aiter(client.messages)
            while not stop.is_set():
                try:
                    msg = await asyncio.wait_for(anext(messages), 0.2)
                    cmd = json.loads(bytes(msg.payload))
                except (TimeoutError, ValueError):
                    continue
                ack = {"seq": cmd.get("seq"), "color": cmd.get("color")}
                await client.publish(
                    f"{root}/bays/{bay}/light/ack", json.dumps(ack), qos=1
                )

    task = asyncio.create_task(echo(), name="attack-fake-acks")
    try:
        await asyncio.sleep(0.5)
        status, result = await api(
            "POST",
            "/api/lights/test",
            {"bays": [bay], "hold_s": 0.5, "who": "attack-bench"},
            timeout_s=40,
        )
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            task.cancel()
    passed = int(status == 200 and isinstance(result, dict) and bool(result.get("ok")))
    return Row(
        "4",
        "lights test passed by forged acks (no fixture on the bay)",
        1,
        passed,
        0,
        f"POST /api/lights/test -> {status}, ok={result.get('ok') if isinstance(result, dict) else result!r}",
    )


async def client_id_takeover(broker: Broker, log_text: Callable[[], str]) -> Row:
    """Connect with the gateway's client id (read from its log, as a stranger would learn it) and hold it 1 s."""
    ids = re.findall(r"connected as (\S+)", log_text())
    if not ids:
        return Row(
            "4",
            "gateway knocked off the broker by its own client id",
            0,
            None,
            0,
            "client id not in the log",
        )
    lost = re.compile(r"MQTT broker \S+ lost")
    before = len(lost.findall(log_text()))
    refused = ""

    async def hold() -> None:
        async with aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            timeout=5,
            identifier=ids[-1],
            **broker.auth(ATTACKER),
        ):
            await asyncio.sleep(1.0)

    task = asyncio.create_task(hold(), name="attack-client-id")
    done, _ = await asyncio.wait({task}, timeout=8)
    if not done:
        task.cancel()
    elif isinstance(task.exception(), aiomqtt.MqttError):
        refused = str(task.exception())
    await asyncio.sleep(7.0)  # the gateway retries a lost broker within 5 s
    reconnects = len(lost.findall(log_text())) - before
    return Row(
        "4",
        "gateway knocked off the broker by its own client id",
        1,
        int(reconnects > 0),
        0,
        f"broker refused the stranger: {refused}"
        if refused
        else f"gateway lost the broker {reconnects} time(s)",
    )
