"""The gateway's MQTT link (interfaces.md §4): light commands and the state out, sensor readings and fixture acks in.

`MqttLink` is the connection that keeps coming back, republishing what the fixtures must see after
every reconnect; the wire format it speaks lives in `drivers.mqtt.wire`, its back-off in
`drivers.mqtt.retry`. Kept in one file past 400 lines: connecting, reading and republishing share
one client and its lifecycle (a reconnect must republish what the last connection had sent).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from drivers.contract.events import (
    BrokerConnected,
    BrokerLost,
    Event,
    LightAcked,
    LightForeign,
    OccupancyChanged,
)
from drivers.mqtt.retry import (
    FIRST_RETRY_S,
    RETRY_JITTER,
    STABLE_AFTER_S,
    abandon_socket,
    failures_after_loss,
    retry_delay_s,
)
from drivers.mqtt.wire import (
    MAX_PAYLOAD_BYTES,
    OCCUPANCY_EVERY_S,
    SEQ_MAX,
    MqttLinkError,
    MqttPayloadError,
    Throttle,
    ack_topic,
    bay_from_topic,
    check_seq_color,
    check_topic_level,
    encode_json,
    light_topic,
    occupancy_topic,
    parse_ack,
    parse_light_command,
    parse_occupancy,
    site_root,
    state_topic,
    status_topic,
)
from drivers.support.fault_log import FaultLog

__all__ = [
    "FIRST_RETRY_S", "JUNK_LOG_EVERY_S", "MAX_PAYLOAD_BYTES", "OP_TIMEOUT_S", "PAHO_LOG",
    "RETRY_JITTER", "SEQ_MAX", "STABLE_AFTER_S", "MqttLink", "MqttLinkError", "MqttPayloadError", "ack_topic",
    "bay_from_topic", "check_topic_level", "describe_mqtt_error", "encode_json", "failures_after_loss",
    "light_topic", "occupancy_topic", "parse_ack", "parse_light_command", "parse_occupancy", "retry_delay_s",
    "site_root", "state_topic", "status_topic", "utc_now",
]

log = logging.getLogger("laadplein.mqtt")

OP_TIMEOUT_S = 5.0  # CONNACK, SUBACK, PUBACK: a healthy broker answers in milliseconds
JUNK_LOG_EVERY_S = 60.0
FOREIGN_EVERY_S = 1.0  # a stranger flooding a light topic reaches the square at most this often per bay (s)
SENT_KEPT = 16  # own light commands per bay remembered, to tell their late echoes from a stranger's


class _Demote(logging.Filter):
    """paho logs every dropped socket at ERROR; the link reports the loss itself, once, with context."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


PAHO_LOG = log.getChild("paho")
PAHO_LOG.addFilter(_Demote())


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class _BrokerGone(Exception):
    def __init__(self, reason: str, *, up_s: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.up_s = up_s  # how long the connection was up; None: it never came up

    @property
    def was_up(self) -> bool:
        return self.up_s is not None


class _Stop(Exception):
    """close() was called: leave the connection cleanly."""


def _seq_of(payload: bytes) -> int:
    """The seq of a payload the link itself encoded (checked when it was given)."""
    return parse_light_command(payload)["seq"]


def describe_mqtt_error(exc: BaseException) -> str:
    """A few words on why the link failed, for the log and BrokerLost.reason."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, aiomqtt.MqttError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, aiomqtt.MqttCodeError) and exc.args[:1] == ("Unexpected disconnection",):
        code = getattr(exc.rc, "value", exc.rc)
        return "connection dropped" if code in (None, 7, 128) else f"connection dropped, {exc}"
    if str(exc) == "Operation timed out":
        return f"no answer within {OP_TIMEOUT_S:g} s"
    return str(exc) or type(exc).__name__


class MqttLink:
    """The gateway's connection to the broker: retries forever, republishes on every reconnect.

    `on_event` gets OccupancyChanged, LightAcked, LightForeign, BrokerConnected and BrokerLost; it must
    not block. The link reads the light topics too: a command it did not send is reported (LightForeign)
    and its own command published again, so the fixture shows what the gateway decided.
    A lost broker is tried again after FIRST_RETRY_S, then doubling up to `retry_s` (at most 5 s,
    interfaces.md §4): see retry_delay_s.
    """

    def __init__(
        self,
        host: str,
        port: int,
        root: str,
        bay_ids: Sequence[str],
        on_event: Callable[[Event], None],
        *,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        keepalive_s: int = 30,
        client_id: str | None = None,
        retry_s: float = 5.0,
        state_min_interval_s: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not 0 < retry_s <= 5:
            raise ValueError(f"retry_s must be in (0, 5] (interfaces.md §4), got {retry_s}")
        if state_min_interval_s < 0:
            raise ValueError(f"state_min_interval_s must be >= 0, got {state_min_interval_s}")
        if not 5 <= keepalive_s <= 3600:
            raise ValueError(f"keepalive_s must be 5..3600, got {keepalive_s}")
        if not root or "+" in root or "#" in root:
            raise ValueError(f"topic root {root!r} is empty or has a wildcard")
        self._host, self._port, self._root = host, port, root
        self._bays = frozenset(check_topic_level(b, "bay id") for b in bay_ids)
        self._on_event = on_event
        self._username, self._password = username, password
        self._tls_context = tls_context
        self._keepalive_s = keepalive_s
        self._client_id = client_id or f"laadplein-gw-{secrets.token_hex(4)}"
        self._retry_s = retry_s
        self._state_min_interval_s = state_min_interval_s
        self._clock = clock
        self._lights: dict[str, bytes] = {}
        self._lights_due: dict[str, None] = {}  # an ordered set: each bay at most once, latest payload wins
        self._lights_wake = asyncio.Event()
        self._published_at: dict[str, datetime] = {}
        # bay -> own payloads published on this connection whose echo has not come back, oldest first
        # (the broker passes one topic's messages on in order, so each echo is at or after the head)
        self._pending: dict[str, deque[bytes]] = {}
        self._foreign_passed: dict[str, float] = {}  # bay -> monotonic time a LightForeign last went on
        self._state: bytes | None = None
        self._state_due = False
        self._state_wake = asyncio.Event()
        self._state_sent_mono = -math.inf
        self._connected = False
        self._running = False
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._down_since: float | None = None
        self._up_since = 0.0
        self._next_down_log = 0.0
        self._junk_seen = FaultLog(JUNK_LOG_EVERY_S)  # (bay, kind): one line a minute
        self._occupancy: Throttle[OccupancyChanged] = Throttle(OCCUPANCY_EVERY_S)
        self._occupancy_held = asyncio.Event()

    @property
    def broker(self) -> str:
        return f"{self._host}:{self._port}" + (" (TLS)" if self._tls_context is not None else "")

    @property
    def retry_s(self) -> float:
        """The longest wait between two attempts to reach a lost broker (s)."""
        return self._retry_s

    @property
    def connected(self) -> bool:
        """True while the connection is up (connected, `online` published, subscribed)."""
        return self._connected

    def published_at(self, bay_id: str) -> datetime | None:
        """When the bay's current command was last sent to the broker; None if not (yet) sent."""
        return self._published_at.get(bay_id)

    def publish_light(self, bay_id: str, command: dict[str, Any]) -> None:
        """Make `command` the bay's current light command; it goes out retained, QoS 1, as soon as connected."""
        if bay_id not in self._bays:
            raise MqttLinkError(f"bay {bay_id!r} is not one of this link's bays")
        if not isinstance(command, dict):
            raise MqttPayloadError(f"light command for {bay_id}: expected a dict, got {type(command).__name__}")
        check_seq_color(command, f"light command for {bay_id}")
        try:
            payload = encode_json(command)
        except (TypeError, ValueError) as exc:
            raise MqttPayloadError(f"light command for {bay_id}: cannot be JSON ({exc})") from None
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MqttPayloadError(f"light command for {bay_id}: {len(payload)} bytes, over {MAX_PAYLOAD_BYTES}")
        self._lights[bay_id] = payload
        self._published_at.pop(bay_id, None)
        self._lights_due[bay_id] = None
        self._lights_wake.set()

    def publish_state(self, snapshot: dict[str, Any]) -> None:
        """Publish the state snapshot retained on `P/state`, at most once per `state_min_interval_s` (latest wins)."""
        try:
            self._state = encode_json(snapshot)
        except (TypeError, ValueError) as exc:
            raise MqttPayloadError(f"state snapshot cannot be JSON ({exc})") from None
        self._state_due = True
        self._state_wake.set()

    async def close(self, timeout_s: float = 2.0) -> None:
        """Flush what is due, publish `offline` retained, disconnect; returns once run() has ended (or after timeout_s)."""
        self._stopping.set()
        if not self._running:
            return
        try:
            await asyncio.wait_for(self._done.wait(), timeout_s)
        except TimeoutError:
            log.warning("MQTT link to %s did not close within %g s", self.broker, timeout_s)

    async def run(self) -> None:
        """Keep the link up until cancelled or closed; broker trouble never ends it."""
        if self._running:
            raise MqttLinkError("MqttLink.run() is already running")
        self._running = True
        self._done.clear()
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    await self._connection()
                except _BrokerGone as gone:
                    failures = failures_after_loss(failures, gone.up_s or 0.0)
                    delay_s = retry_delay_s(failures, self._retry_s, draw=random.random())
                    self._report_down(gone, delay_s)
                    try:
                        async with asyncio.timeout(delay_s):  # wait_for may lose a cancel on 3.11
                            await self._stopping.wait()
                    except TimeoutError:
                        pass
        finally:
            self._connected = False
            self._running = False
            self._done.set()

    def _report_down(self, gone: _BrokerGone, delay_s: float) -> None:
        now = time.monotonic()
        if gone.was_up or self._down_since is None:
            word = "lost" if gone.was_up else "unreachable"
            log.warning(
                "MQTT broker %s %s (%s); retrying in %.1f s, backing off to every %g s",
                self.broker, word, gone.reason, delay_s, self._retry_s,
            )
            self._down_since, self._next_down_log = now, now + 60
            self._on_event(BrokerLost(at=self._clock(), reason=gone.reason))
        elif now >= self._next_down_log:
            log.warning(
                "MQTT broker %s still unreachable after %.0f s (%s); next try in %.1f s",
                self.broker, now - self._down_since, gone.reason, delay_s,
            )
            self._next_down_log = now + 60
        else:
            log.debug("MQTT broker %s: connect failed (%s); next try in %.1f s", self.broker, gone.reason, delay_s)

    def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            tls_context=self._tls_context,
            identifier=self._client_id,
            will=aiomqtt.Will(status_topic(self._root), b"offline", qos=1, retain=True),
            keepalive=self._keepalive_s,
            timeout=OP_TIMEOUT_S,
            max_queued_incoming_messages=10_000,
            logger=PAHO_LOG,
        )

    async def _connection(self) -> None:
        """One connection, from CONNECT to loss (raises _BrokerGone) or close() (returns)."""
        was_up = False
        client: aiomqtt.Client | None = None
        try:
            client = self._new_client()
            async with client:
                try:
                    await client.publish(status_topic(self._root), b"online", qos=1, retain=True)
                    granted = await client.subscribe(
                        [(occupancy_topic(self._root, "+"), 1), (ack_topic(self._root, "+"), 1),
                         (light_topic(self._root, "+"), 1)]
                    )
                    if any(int(getattr(g, "value", g)) >= 0x80 for g in granted):
                        raise aiomqtt.MqttError(f"subscription refused by the broker ({granted})")
                    self._came_up()
                    was_up = True
                    await self._serve(client)
                except _Stop:
                    await self._say_offline(client, budget_s=1.5)
                except (aiomqtt.MqttError, OSError):
                    raise
                except BaseException:
                    # Cancellation (the daemon's clean shutdown) or a crash: the gateway is going away
                    # with a graceful disconnect, which sends no Will, so say it here.
                    await self._say_offline(client, budget_s=1.0)
                    raise
        except (aiomqtt.MqttError, OSError) as exc:
            up_s = time.monotonic() - self._up_since if was_up else None
            raise _BrokerGone(describe_mqtt_error(exc), up_s=up_s) from None
        finally:
            self._connected = False
            if client is not None:
                abandon_socket(client)  # a no-op after a clean disconnect or a loss paho noticed itself

    def _came_up(self) -> None:
        self._connected = True
        self._up_since = time.monotonic()
        self._lights_due = dict.fromkeys(sorted(self._lights))
        self._pending.clear()
        self._lights_wake.set()
        if self._state is not None:
            self._state_due = True
            self._state_wake.set()
        if self._down_since is None:
            log.info("MQTT broker %s connected as %s", self.broker, self._client_id)
        else:
            log.info(
                "MQTT broker %s back after %.0f s; republishing %d light commands",
                self.broker, time.monotonic() - self._down_since, len(self._lights),
            )
        self._down_since = None
        self._on_event(BrokerConnected(at=self._clock()))

    async def _serve(self, client: aiomqtt.Client) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read(client), name="mqtt-read")
                tg.create_task(self._pass_held_occupancy(), name="mqtt-sensors")
                tg.create_task(self._send_lights(client), name="mqtt-lights")
                tg.create_task(self._send_state(client), name="mqtt-state")
                tg.create_task(self._wait_stop(), name="mqtt-stop")
        except BaseExceptionGroup as group:
            stop, rest = group.split(_Stop)
            gone, rest = rest.split((aiomqtt.MqttError, OSError)) if rest is not None else (None, None)
            if rest is not None:
                raise rest
            if gone is not None:
                raise aiomqtt.MqttError(describe_mqtt_error(gone)) from None
            if stop is not None:
                raise _Stop from None

    async def _wait_stop(self) -> None:
        await self._stopping.wait()
        raise _Stop

    async def _say_offline(self, client: aiomqtt.Client, *, budget_s: float) -> None:
        """Best effort within budget_s: send what is due, then `offline` retained."""
        try:
            async with asyncio.timeout(budget_s):
                await self._flush_lights(client)
                if self._state_due and self._state is not None:
                    self._state_due = False
                    await client.publish(state_topic(self._root), self._state, qos=1, retain=True)
                await client.publish(status_topic(self._root), b"offline", qos=1, retain=True)
            log.info("MQTT link to %s closed; published offline", self.broker)
        except (TimeoutError, aiomqtt.MqttError, OSError) as exc:
            log.warning("MQTT link to %s: could not publish offline on close (%s)", self.broker, describe_mqtt_error(exc))

    async def _flush_lights(self, client: aiomqtt.Client) -> None:
        while self._lights_due:
            bay = next(iter(self._lights_due))
            del self._lights_due[bay]
            payload = self._lights[bay]
            self._published_at[bay] = self._clock()
            # Remembered before it goes out: its echo may be read before the PUBACK returns.
            self._pending.setdefault(bay, deque(maxlen=SENT_KEPT)).append(payload)
            await client.publish(light_topic(self._root, bay), payload, qos=1, retain=True)

    async def _send_lights(self, client: aiomqtt.Client) -> None:
        while True:
            await self._lights_wake.wait()
            self._lights_wake.clear()
            await self._flush_lights(client)

    async def _send_state(self, client: aiomqtt.Client) -> None:
        while True:
            await self._state_wake.wait()
            self._state_wake.clear()
            wait_s = self._state_sent_mono + self._state_min_interval_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if not self._state_due or self._state is None:
                continue
            self._state_due = False
            self._state_sent_mono = time.monotonic()
            await client.publish(state_topic(self._root), self._state, qos=1, retain=True)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            self._handle(str(message.topic), bytes(payload), retained=bool(message.retain))

    def _handle(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        parsed = bay_from_topic(self._root, topic)
        if parsed is None:
            return
        bay, kind = parsed
        if bay not in self._bays:
            # one key for every unknown bay: made-up bay ids must not grow the table
            self._complain("*", "unknown", f"message on {topic} for a bay not in the config; ignored", logging.INFO)
            return
        at = self._clock()
        if kind == "occupancy":
            try:
                occupied = parse_occupancy(payload)
            except MqttPayloadError as exc:
                self._complain(bay, kind, f"{topic}: {exc}; bay {bay} counts as sensor fault (occupied)")
                occupied = None
            self._offer_occupancy(OccupancyChanged(bay_id=bay, occupied=occupied, at=at))
        elif kind == "ack":
            try:
                seq, color = parse_ack(payload)
            except MqttPayloadError as exc:
                self._complain(bay, kind, f"{topic}: {exc}; ack ignored")
                return
            self._on_event(LightAcked(bay_id=bay, seq=seq, color=color, at=at))
        elif kind == "light":
            self._check_light(bay, topic, payload, retained, at)

    def _check_light(self, bay: str, topic: str, payload: bytes, retained: bool, at: datetime) -> None:
        """Tell the echo of the gateway's own command from a stranger's; republish over a stranger's."""
        pending = self._pending.get(bay)
        if pending and payload in pending:
            while pending.popleft() != payload:
                pass  # echoes come in order: those before it were superseded on the way
            return
        current = self._lights.get(bay)
        if payload == current:
            return  # the very command the fixture should show, whoever repeated it
        try:
            command = parse_light_command(payload)
            seq, color = command["seq"], command["color"]
        except MqttPayloadError:
            seq = color = None
        if retained and (current is None or (seq is not None and seq <= _seq_of(current))):
            # Found on the broker at (re)connect, not newer than what the link republishes right after
            # it (a run before this one published it, or the link has nothing for the bay yet): it is
            # replaced anyway, and counts as foreign only when its seq is one the gateway never reached.
            return
        what = f"seq {seq}, {color}" if seq is not None else "unreadable"
        action = "republishing the gateway's own" if current is not None else "the gateway has no command for it yet"
        self._complain(bay, "foreign", f"{topic}: a light command the gateway did not send ({what}, "
                       f"{'retained' if retained else 'live'}); {action}")
        if current is not None:
            self._lights_due[bay] = None
            self._lights_wake.set()
        now = time.monotonic()
        if now - self._foreign_passed.get(bay, -math.inf) >= FOREIGN_EVERY_S:
            self._foreign_passed[bay] = now
            self._on_event(LightForeign(bay_id=bay, seq=seq, color=color, retained=retained, at=at))

    def _offer_occupancy(self, event: OccupancyChanged) -> None:
        """Pass a reading on, or hold it for its turn: a sensor flapping a thousand times a second must not stall the cycle."""
        passed = self._occupancy.offer(event.bay_id, event, time.monotonic())
        if passed is None:
            self._occupancy_held.set()
        else:
            self._on_event(passed)

    async def _pass_held_occupancy(self) -> None:
        while True:
            while (due_s := self._occupancy.next_due_s()) is not None:
                await asyncio.sleep(max(0.0, due_s - time.monotonic()))
                for event in self._occupancy.take_due(time.monotonic()):
                    self._on_event(event)
            await self._occupancy_held.wait()
            self._occupancy_held.clear()

    def _complain(self, bay: str, kind: str, text: str, level: int = logging.WARNING) -> None:
        """Log once per bay and kind per minute, with how many were held back since."""
        self._junk_seen.log(log, level, bay, kind, "MQTT %s", text)
