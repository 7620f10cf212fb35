"""Attacks from a device on the broker: a lying occupancy sensor, forged light commands and acks, and the
gateway's own client id."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable

import aiomqtt

from bench.attack_report import TRAPS, Row
from tests.integration.harness import MqttWatcher

Api = Callable[..., Awaitable[tuple[int, object]]]


async def publish(
    port: int,
    topic: str,
    payload: object,
    *,
    retain: bool = False,
    identifier: str | None = None,
) -> str:
    """Publish as an anonymous client: '' when the broker took it, else why not."""
    try:
        async with aiomqtt.Client(
            "127.0.0.1", port, timeout=5, identifier=identifier
        ) as client:
            await client.publish(
                topic,
                json.dumps(payload)
                if not isinstance(payload, (str, bytes))
                else payload,
                qos=1,
                retain=retain,
            )
        return ""
    except aiomqtt.MqttError as exc:
        return str(exc)


def _mentions(alarms: object, word: str) -> int:
    return (
        sum(1 for a in alarms if word in json.dumps(a))
        if isinstance(alarms, list)
        else 0
    )


async def sensor_attacks(
    port: int, root: str, mq: MqttWatcher, api: Api, parked_bay: str, charging_bay: str
) -> list[Row]:
    """'Empty' for a bay with a parked petrol car (the trap), and for a bay whose car is charging (a sensor fault)."""
    t0 = time.monotonic()
    refused = await publish(
        port, f"{root}/bays/{parked_bay}/occupancy", {"occupied": False}, retain=True
    )
    trapped = 0
    try:
        await mq.wait_light(parked_bay, "blue", after=t0, timeout_s=4)
        trapped = 1
    except AssertionError:
        pass
    await publish(
        port, f"{root}/bays/{parked_bay}/occupancy", {"occupied": True}, retain=True
    )  # the honest sensor again
    _, before = await api("GET", "/api/alarms")
    await publish(
        port, f"{root}/bays/{charging_bay}/occupancy", {"occupied": False}, retain=True
    )
    await asyncio.sleep(3.0)
    _, after = await api("GET", "/api/alarms")
    await publish(
        port, f"{root}/bays/{charging_bay}/occupancy", {"occupied": True}, retain=True
    )
    noticed = _mentions(after, charging_bay) - _mentions(before, charging_bay)
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
            "'empty' for a bay whose car is charging, alarmed as a sensor fault",
            1,
            int(noticed > 0),
            1,
            f"new alarms naming {charging_bay}: {max(noticed, 0)}",
            at_least=True,
        ),
    ]


async def forged_light(
    port: int, root: str, mq: MqttWatcher, api: Api, bay: str
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
    refused = await publish(port, topic, forged, retain=True)
    await asyncio.sleep(3.0)
    last = mq.last_light(bay)
    still = int(last is not None and last.get("seq") == 999_999)
    _, after = await api("GET", "/api/alarms")
    noticed = _mentions(after, bay) - _mentions(before, bay)
    if genuine is not None and still:
        await publish(
            port, topic, genuine, retain=True
        )  # the fixture shows the gateway's command again
    was = genuine.get("color") if genuine else "nothing"
    return [
        Row(
            "4",
            "forged blue light command left in force on a green bay",
            1,
            still if not refused else 0,
            0,
            f"broker refused: {refused}"
            if refused
            else f"{bay} was {was}; 3 s later the retained command is {'still the forged one' if still else 'the gateway’s'}",
            total=TRAPS,
        ),
        Row(
            "4",
            "forged light commands alarmed",
            1,
            int(noticed > 0),
            1,
            f"new alarms naming {bay}: {max(noticed, 0)}",
            at_least=True,
        ),
    ]


async def fake_acks(port: int, root: str, api: Api, bay: str) -> Row:
    """No fixture on the bay; a stranger echoes an ack for every command: does the lights test pass?"""

    stop = asyncio.Event()

    async def echo() -> None:
        # Ends by `stop`, never by a cancel: aiomqtt can hang in its exit when cancelled mid-read.
        async with aiomqtt.Client("127.0.0.1", port, timeout=5) as client:
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


async def client_id_takeover(port: int, log_text: Callable[[], str]) -> Row:
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
        async with aiomqtt.Client("127.0.0.1", port, timeout=5, identifier=ids[-1]):
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
