"""Simulated bay light fixtures and occupancy sensors that speak the real MQTT topics of interfaces.md §4.

The fixtures behave as signage.md asks of a fixture maker: show the last command and acknowledge
it, and show green "open" once the gateway (or the broker) has been gone for `failsafe_s`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import aiomqtt

from drivers.mqtt.link import (
    OP_TIMEOUT_S,
    PAHO_LOG,
    MqttPayloadError,
    ack_topic,
    bay_from_topic,
    check_topic_level,
    describe_mqtt_error,
    encode_json,
    light_topic,
    occupancy_topic,
    parse_light_command,
    status_topic,
    utc_now,
)

log = logging.getLogger("laadplein.sim.lights")

FIXTURE_FAILSAFE_S = 600.0  # signage.md: fixed in a real fixture, settable here for tests
OPEN_TEXT = {"nl": "Vrij parkeren", "en": "Free parking"}
FAIL_MODES = frozenset({"no_ack", "wrong_color"})


def _other_color(color: str) -> str:
    return "off" if color != "off" else "green"


class SimFixtures:
    """The fixtures and sensors of a set of bays, on one MQTT connection.

    `fail_mode[bay]` is `None`, `"no_ack"` (shows the command, never acks) or `"wrong_color"`
    (shows and acks another colour). `shown[bay]` is the command on display; `history` lists
    every change of display as `(time, bay, command)`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        root: str,
        bay_ids: Sequence[str],
        *,
        failsafe_s: float = FIXTURE_FAILSAFE_S,
        retry_s: float = 1.0,
        language: str = "nl",
        clock: Callable[[], datetime] = utc_now,
        client_id: str | None = None,
    ) -> None:
        self._host, self._port, self._root = host, port, root
        self.bay_ids = tuple(check_topic_level(b, "bay id") for b in bay_ids)
        self.failsafe_s = failsafe_s
        self._retry_s = retry_s
        self._open_text = OPEN_TEXT.get(language, OPEN_TEXT["nl"])
        self._clock = clock
        self._client_id = client_id or f"laadplein-sim-fixtures-{secrets.token_hex(4)}"
        self.fail_mode: dict[str, str | None] = dict.fromkeys(self.bay_ids)
        self.shown: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[datetime, str, dict[str, Any]]] = []
        self.last_command: dict[str, dict[str, Any]] = {}
        self.commands_received: dict[str, int] = dict.fromkeys(self.bay_ids, 0)
        self.gateway_status: str | None = None
        self.in_failsafe = False
        self._occupancy: dict[str, bytes] = {}
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self._away_since: float | None = time.monotonic()

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Run until cancelled; `ready` is set once first connected and subscribed."""
        self._away_since = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._link(ready), name="sim-fixtures-link")
            tg.create_task(self._watch_failsafe(), name="sim-fixtures-failsafe")

    async def wait_connected(self, timeout_s: float = 5.0) -> None:
        await asyncio.wait_for(self._up.wait(), timeout_s)

    async def set_occupancy(self, bay_id: str, occupied: bool) -> None:
        """The bay's sensor reports `{"occupied": ...}` (retained; sent again after every reconnect)."""
        await self.publish_occupancy_payload(bay_id, encode_json({"occupied": bool(occupied)}))

    async def publish_occupancy_payload(self, bay_id: str, payload: bytes) -> None:
        """A sensor sending any bytes at all (for tests of a misbehaving sensor); retained."""
        check_topic_level(bay_id, "bay id")
        self._occupancy[bay_id] = payload
        await self.wait_connected()
        client = self._client
        if client is None:
            raise aiomqtt.MqttError("simulated sensors are not connected")
        await client.publish(occupancy_topic(self._root, bay_id), payload, qos=1, retain=True, timeout=OP_TIMEOUT_S)

    async def _link(self, ready: asyncio.Event | None) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self._host, self._port, identifier=self._client_id, keepalive=10, timeout=OP_TIMEOUT_S,
                    logger=PAHO_LOG,
                ) as client:
                    # status first, so its retained value arrives before the retained commands
                    await client.subscribe(status_topic(self._root), qos=1)
                    await client.subscribe(light_topic(self._root, "+"), qos=1)
                    for bay, payload in sorted(self._occupancy.items()):
                        await client.publish(occupancy_topic(self._root, bay), payload, qos=1, retain=True)
                    self._client = client
                    self._up.set()
                    if ready is not None:
                        ready.set()
                    log.info("simulated fixtures connected to %s:%s", self._host, self._port)
                    acks: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
                    # acks go out from their own task: a PUBACK that never comes must not hide a dropped link
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._read(client, acks), name="sim-fixtures-read")
                        tg.create_task(self._send_acks(client, acks), name="sim-fixtures-acks")
            except* (aiomqtt.MqttError, OSError) as group:
                log.info("simulated fixtures: broker %s:%s gone (%s); retrying", self._host, self._port,
                         describe_mqtt_error(group))
            finally:
                self._client = None
                self._up.clear()
                self.gateway_status = None
                if self._away_since is None:
                    self._away_since = time.monotonic()
            await asyncio.sleep(self._retry_s)

    async def _read(self, client: aiomqtt.Client, acks: asyncio.Queue[tuple[str, bytes]]) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            self._handle(str(message.topic), bytes(payload), acks)

    async def _send_acks(self, client: aiomqtt.Client, acks: asyncio.Queue[tuple[str, bytes]]) -> None:
        while True:
            topic, payload = await acks.get()
            await client.publish(topic, payload, qos=1, retain=False, timeout=OP_TIMEOUT_S)

    def _handle(self, topic: str, payload: bytes, acks: asyncio.Queue[tuple[str, bytes]]) -> None:
        if topic == status_topic(self._root):
            self.gateway_status = payload.decode("utf-8", "replace")
            if self.gateway_status == "online":
                self._away_since = None
                self.in_failsafe = False
            elif self._away_since is None:
                self._away_since = time.monotonic()
            return
        parsed = bay_from_topic(self._root, topic)
        if parsed is None or parsed[1] != "light" or parsed[0] not in self.fail_mode or not payload:
            return
        bay = parsed[0]
        try:
            command = parse_light_command(payload)
        except MqttPayloadError as exc:
            log.warning("simulated fixture %s: unreadable command (%s); ignored", bay, exc)
            return
        self.last_command[bay] = command
        self.commands_received[bay] += 1
        if self.in_failsafe:
            return  # a stale retained command while the gateway is away must not undo the failsafe
        mode = self.fail_mode.get(bay)
        shown = dict(command)
        if mode == "wrong_color":
            shown["color"] = _other_color(command["color"])
        self._show(bay, shown)
        if mode != "no_ack":
            acks.put_nowait((ack_topic(self._root, bay), encode_json({"seq": command["seq"], "color": shown["color"]})))

    def _show(self, bay: str, command: dict[str, Any]) -> None:
        if self.shown.get(bay) != command:
            self.shown[bay] = command
            self.history.append((self._clock(), bay, command))

    async def _watch_failsafe(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, max(0.01, self.failsafe_s / 20)))
            away = self._away_since
            if self.in_failsafe or away is None or time.monotonic() - away < self.failsafe_s:
                continue
            self.in_failsafe = True
            log.warning("simulated fixtures: gateway gone for %g s; every bay shows green, open", self.failsafe_s)
            for bay in self.bay_ids:
                seq = self.last_command.get(bay, {}).get("seq", 0)
                self._show(
                    bay,
                    {"color": "green", "text": self._open_text, "pictogram": "parking",
                     "seq": seq, "reason": "open", "failsafe": True},
                )
