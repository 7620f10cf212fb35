"""Fuzzing the MQTT inputs of the real daemon: junk on sensor and fixture topics, and an occupancy flood.

Junk (hypothesis-drawn payloads and topics, retained or not, for bays that exist and bays that do
not) must leave the daemon running, count as a sensor fault (occupied) where it lands on a
sensor's topic, and be logged once per kind; a bay whose sensor toggles thousands of times a
second keeps its light calm (`min_dwell_s`), and the daemon's memory stays flat.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from itertools import pairwise

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.mqtt.wire import Throttle
from tests.integration.fuzz_strategies import MqttMessage, drawn, mqtt_messages
from tests.integration.harness import Daemon, MqttWatcher, chargers, square_toml
from tests.integration.ports import free_port
from tests.integration.test_fuzz_ocpp import (
    FAULT_LINES_MAX,
    assert_no_crash,
    fault_kind,
    new_log_lines,
    rss_mb,
)

pytestmark = pytest.mark.integration

ROOT = "lp/testplein"
BAYS = ("B01", "B02")
JUNK = 300
RETAINED_JUNK = 60
MIN_DWELL_S = 2
FLOOD_S, MORE_FLOODS, MORE_FLOOD_S = 2.0, 5, 1.0
EMPTY, OCCUPIED = b'{"occupied": false}', b'{"occupied": true}'


@pytest.fixture
def daemon(tmp_path, mosquitto) -> Iterator[Daemon]:
    ocpp_port, api_port = free_port(), free_port()
    signage = {"min_free_ev_bays": 1, "min_dwell_s": MIN_DWELL_S}
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, chargers=1, signage=signage)
    d = Daemon(tmp_path / "daemon", text, api_port=api_port, ocpp_port=ocpp_port)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


async def publish_all(port: int, messages: list[MqttMessage]) -> None:
    """Publish in order through one connection (QoS 1: the broker has them all, in order, when this returns)."""
    async with aiomqtt.Client("127.0.0.1", port, timeout=10) as client:
        for m in messages:
            await client.publish(f"{ROOT}/{m.topic}", m.payload, qos=1, retain=m.retain)


async def occupancy(port: int, **bays: bytes) -> None:
    await publish_all(port, [MqttMessage(f"bays/{bay}/occupancy", payload, True, "sensor") for bay, payload in bays.items()])


def light_is(mq: MqttWatcher, bay: str, color: str, reason: str | None = None) -> bool:
    last = mq.last_light(bay)
    return last is not None and last["color"] == color and (reason is None or last["reason"] == reason)


async def settle(mq: MqttWatcher, want: dict[str, tuple[str, str]], timeout_s: float = 15.0) -> None:
    """Wait until every bay's last light command is the (colour, reason) wanted."""
    async with asyncio.timeout(timeout_s):
        while not all(light_is(mq, bay, *cr) for bay, cr in want.items()):
            await asyncio.sleep(0.05)


def fault_lines(daemon: Daemon, log_at: int) -> tuple[list[str], Counter[str]]:
    lines = [line for line in new_log_lines(daemon, log_at) if "MQTT" in line or " WARNING " in line or " ERROR " in line]
    return lines, Counter(fault_kind(line) for line in lines)


async def test_junk_on_every_topic_counts_as_a_fault_and_is_logged_once_per_kind(daemon, mosquitto):
    messages = drawn(mqtt_messages(BAYS), JUNK)
    retained = [MqttMessage(m.topic, m.payload, True, m.what) for m in drawn(mqtt_messages(BAYS), RETAINED_JUNK, 1)]
    await publish_all(mosquitto.port, retained)  # waiting for the daemon when it starts
    log_at = len(daemon.log())
    daemon.start()
    async with MqttWatcher(mosquitto.port, ROOT) as mq, chargers(daemon, "CP01"):
        rss_start = rss_mb(daemon.proc.pid)
        await occupancy(mosquitto.port, B01=EMPTY, B02=EMPTY)
        await settle(mq, {"B01": ("blue", "reserved"), "B02": ("green", "open")})
        await publish_all(mosquitto.port, messages)
        # The last word on B01 is junk (a sensor fault: occupied), on B02 a clean "empty".
        await occupancy(mosquitto.port, B01=b"\xff\xfe{", B02=EMPTY)
        await settle(mq, {"B01": ("green", "open"), "B02": ("blue", "reserved")})
        rss_end = rss_mb(daemon.proc.pid)
    assert_no_crash(daemon)
    lines, kinds = fault_lines(daemon, log_at)
    print(f"\nfuzz mqtt: {len(messages) + len(retained)} junk messages ({len(retained)} retained), 0 crashes, "
          f"{len(lines)} MQTT/warning log lines over {len(kinds)} kinds, RSS {rss_start:.1f} -> {rss_end:.1f} MB")
    worst = kinds.most_common(3)
    assert not worst or worst[0][1] <= FAULT_LINES_MAX, f"logged per message: {worst}\n" + "\n".join(lines[:40])
    assert len(lines) <= 40, "\n".join(lines[:60])


async def toggle(port: int, bay: str, seconds: float) -> int:
    """Flip a bay's sensor as fast as the broker takes it for `seconds`; ends on "empty". Returns the messages sent."""
    topic = f"{ROOT}/bays/{bay}/occupancy"
    sent = 0
    async with aiomqtt.Client("127.0.0.1", port, timeout=10) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(100):
                await client.publish(topic, OCCUPIED if sent % 2 == 0 else EMPTY, qos=0)
                sent += 1
            await asyncio.sleep(0)
        await client.publish(topic, EMPTY, qos=1, retain=True)
    return sent + 1


def colour_changes(mq: MqttWatcher, bay: str, after: float) -> list[float]:
    """When (the command's own `ts`, in s) the bay's light changed colour, for commands that arrived after `after`.

    The command's time, not its arrival: a broker busy with a flood may hold one command back
    and hand over the next at once, which says nothing of the gateway's calm.
    """
    topic = f"{ROOT}/bays/{bay}/light"
    seen = [s for s in mq.seen if s.topic == topic]
    changes = []
    for before, now in pairwise(seen):
        command = now.json()
        if now.at >= after and command["color"] != before.json()["color"]:
            changes.append(datetime.fromisoformat(command["ts"].replace("Z", "+00:00")).timestamp())
    return changes


async def test_an_occupancy_flood_keeps_the_light_calm_and_memory_flat(daemon, mosquitto):
    daemon.start()
    async with MqttWatcher(mosquitto.port, ROOT) as mq, chargers(daemon, "CP01"):
        await occupancy(mosquitto.port, B01=EMPTY, B02=OCCUPIED)
        await settle(mq, {"B01": ("blue", "reserved"), "B02": ("green", "open")})
        log_at = len(daemon.log())
        t0 = time.monotonic()
        sent = await toggle(mosquitto.port, "B01", FLOOD_S)
        rss_warm = rss_mb(daemon.proc.pid)
        for _ in range(MORE_FLOODS):
            sent += await toggle(mosquitto.port, "B01", MORE_FLOOD_S)
        flood_s = time.monotonic() - t0
        await settle(mq, {"B01": ("blue", "reserved"), "B02": ("green", "open")})
        rss_end = rss_mb(daemon.proc.pid)
        changes = colour_changes(mq, "B01", t0)
    assert_no_crash(daemon)
    gaps = [b - a for a, b in pairwise(changes)]
    lines, kinds = fault_lines(daemon, log_at)
    print(f"\nfuzz mqtt flood: {sent} occupancy messages in {flood_s:.1f} s, {len(changes)} colour changes of B01 "
          f"(closest {min(gaps, default=float('nan')):.2f} s apart), 0 crashes, {len(lines)} MQTT/warning log lines, "
          f"RSS {rss_warm:.1f} -> {rss_end:.1f} MB")
    assert len(changes) <= flood_s / MIN_DWELL_S + 2, f"the light flapped: {len(changes)} changes in {flood_s:.1f} s"
    assert all(gap >= MIN_DWELL_S - 0.001 for gap in gaps), f"colour changes closer than min_dwell_s: {gaps}"
    worst = kinds.most_common(3)
    assert not worst or worst[0][1] <= FAULT_LINES_MAX, f"logged per message: {worst}\n" + "\n".join(lines[:40])
    assert rss_end < rss_warm * 1.10, f"RSS grew from {rss_warm:.1f} to {rss_end:.1f} MB"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(BAYS), st.sampled_from([0.0, 0.001, 0.03, 0.1, 0.5]), st.booleans()), max_size=60))
def test_the_throttle_passes_each_bays_last_reading_and_never_two_within_its_interval(offers):
    """What keeps an occupancy flood from stalling the cycle, on its own; the task that takes held readings may run late."""
    every_s = 0.1
    throttle: Throttle[tuple[str, int]] = Throttle(every_s)
    now = 0.0
    passed: list[tuple[float, tuple[str, int]]] = []

    def release_due() -> None:
        due = throttle.next_due_s()
        if due is not None and due <= now:
            passed.extend((now, v) for v in throttle.take_due(now))

    for n, (bay, step_s, task_ran) in enumerate(offers):
        now += step_s
        if task_ran:
            release_due()
        value = throttle.offer(bay, (bay, n), now)
        if value is not None:
            passed.append((now, value))
    while (due := throttle.next_due_s()) is not None:
        now = max(now, due)
        release_due()
    for bay in BAYS:
        times = [t for t, (b, _) in passed if b == bay]
        assert all(b - a >= every_s - 1e-9 for a, b in pairwise(times)), times
        offered = [n for n, (b, *_) in enumerate(offers) if b == bay]
        got = [n for _, (b, n) in passed if b == bay]
        assert got == sorted(got) and set(got) <= set(offered)
        assert (got[-1:] == offered[-1:]), "the last reading of a bay was lost"
