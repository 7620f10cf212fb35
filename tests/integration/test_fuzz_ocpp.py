"""Fuzzing the OCPP endpoint of the real daemon: every bad frame gets what interfaces.md §3 prescribes.

A raw WebSocket client plays charger CP01 and sends hypothesis-drawn frames; after each one a
Heartbeat probe shows the connection is still up and fences off the answers the frame got.
A flood test checks that the daemon answers the valid frames among thousands of bad ones, logs
each kind of fault a handful of times rather than per frame, and that its memory stays flat.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.fuzz_strategies import (
    Expect,
    OcppFrame,
    drawn,
    heartbeat,
    ocpp_expectation,
    ocpp_frames,
)
from tests.integration.harness import Daemon, square_toml
from tests.integration.ports import free_port

pytestmark = pytest.mark.integration

EXAMPLES = 300
# One charger sends tens of thousands of frames here, as fast as the socket takes them: the caps of
# a street square (test_ocpp_limits.py) would pace the flood to minutes and trim its readings.
FLOOD_CAPS = "max_messages_per_s = 10000\nmessage_burst = 100000\nmax_samples_per_frame = 10000\n"
FLOOD_FRAMES = 20_000
MORE_FLOODS, MORE_FLOOD_FRAMES = 5, 4_000
ANSWER_TIMEOUT_S = 10.0
FAULT_LINES_MAX = 3  # log lines per kind of fault in one flood: "a handful", not one per frame


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid` in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def new_log_lines(daemon: Daemon, since_chars: int) -> list[str]:
    return [line for line in daemon.log()[since_chars:].splitlines() if line.strip()]


_NOISE = re.compile(r"\S*/\S*|\d+|'[^']*'|\"[^\"]*\"")


def fault_kind(line: str) -> str:
    """A log line without its time, numbers, topics and quoted values: lines of one kind of fault look alike."""
    text = line.split(": ", 1)[-1] if re.match(r"^\d{4}-\d\d-\d\d", line) else line
    return _NOISE.sub("#", text)[:70]


_ACCEPTING = frozenset({
    "TriggerMessage", "ChangeConfiguration", "ClearChargingProfile", "SetChargingProfile", "ChangeAvailability",
    "RemoteStartTransaction", "RemoteStopTransaction", "Reset", "UnlockConnector", "ClearCache",
})


@dataclass
class Outcome:
    """What one frame got: the answers before the probe's, and the close code if the gateway closed the connection."""

    answers: list[list] = field(default_factory=list)
    close_code: int | None = None


class FuzzCharger:
    """A raw OCPP-J client as a known charger: sends any frame, and answers the gateway's own CALLs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.connects = 0
        self._probes = itertools.count()

    async def __aenter__(self) -> FuzzCharger:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def connect(self) -> None:
        self.ws = await connect(
            self.url, subprotocols=["ocpp1.6"], open_timeout=ANSWER_TIMEOUT_S, max_size=2**22  # type: ignore[list-item]
        )
        self.connects += 1

    async def send(self, frame: OcppFrame | str) -> None:
        assert self.ws is not None
        if isinstance(frame, str):
            await self.ws.send(frame)
        elif isinstance(frame.data, bytes):
            await self.ws.send(frame.data, text=frame.text)
        else:
            await self.ws.send(frame.data)

    async def answer_gateway(self, message: list) -> None:
        """Answer as a willing charger, so that the gateway's log speaks of the fuzzed frames, not of its set-up."""
        assert self.ws is not None
        action, payload = message[2], message[3]
        if action == "GetConfiguration":
            result: dict = {"configurationKey": [], "unknownKey": payload.get("key", [])}
        elif action in ("DataTransfer",):
            result = {"status": "UnknownVendorId"}
        elif action in _ACCEPTING:
            result = {"status": "Accepted"}
        else:
            await self.ws.send(json.dumps([4, message[1], "NotImplemented", f"{action} not here", {}]))
            return
        await self.ws.send(json.dumps([3, message[1], result]))

    async def exchange(self, frame: OcppFrame) -> Outcome:
        """Send `frame` and a Heartbeat probe; the answers that came before the probe's (frames are handled in order)."""
        assert self.ws is not None
        probe = f"~probe~{next(self._probes)}"
        outcome = Outcome()
        try:
            await self.send(frame)
            await self.ws.send(heartbeat(probe))
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                while True:
                    message = json.loads(await self.ws.recv())
                    if message[0] == 2:
                        await self.answer_gateway(message)
                    elif message[1] == probe:
                        assert message[0] == 3, f"the probe got {message}"
                        return outcome
                    else:
                        outcome.answers.append(message)
        except ConnectionClosed as closed:
            outcome.close_code = closed.rcvd.code if closed.rcvd is not None else -1
            await self.connect()
            return outcome


def check(frame: OcppFrame, expect: Expect, got: Outcome) -> None:
    """The frame got exactly what it is owed."""
    where = f"{frame.what}: {str(frame.data)[:300]!r}"
    if expect.kind == "close":
        assert got.close_code == expect.close_code, f"{where}: expected close {expect.close_code}, got {got}"
        return
    assert got.close_code is None, f"{where}: connection closed ({got.close_code}), expected {expect.kind}"
    if expect.kind == "nothing":
        assert got.answers == [], f"{where}: expected no answer, got {got.answers}"
        return
    assert len(got.answers) == 1, f"{where}: expected one {expect.kind}, got {got.answers}"
    answer = got.answers[0]
    assert answer[1] == expect.unique_id, f"{where}: answer {answer} is not for {expect.unique_id!r}"
    if expect.kind == "result":
        assert answer[0] == 3 and isinstance(answer[2], dict), f"{where}: expected a CALLRESULT, got {answer}"
    else:
        assert answer[0] == 4 and answer[2] in expect.codes, f"{where}: expected one of {sorted(expect.codes)}, got {answer}"


@pytest.fixture
def daemon(tmp_path, mosquitto) -> Iterator[Daemon]:
    ocpp_port, api_port = free_port(), free_port()
    text = square_toml(ocpp_port=ocpp_port, api_port=api_port, mqtt_port=mosquitto.port, chargers=1, ocpp=FLOOD_CAPS)
    d = Daemon(tmp_path / "daemon", text, api_port=api_port, ocpp_port=ocpp_port)
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


_CRASH = re.compile(r"^Traceback \(most recent call last\):$|: failed to handle a frame|; answered InternalError")


def crash_lines(lines: list[str]) -> list[int]:
    """Indexes of the log lines that show a handler or task failing (a traceback, an InternalError answered)."""
    return [i for i, line in enumerate(lines) if _CRASH.search(line)]


def assert_no_crash(daemon: Daemon) -> None:
    assert daemon.proc is not None and daemon.proc.poll() is None, f"daemon exited:\n{daemon.log()[-3000:]}"
    lines = daemon.log().splitlines()
    crashes = crash_lines(lines)
    assert not crashes, "a handler failed:\n" + "\n".join(lines[crashes[0] : crashes[0] + 40])


async def boot_works(client: FuzzCharger) -> None:
    boot = OcppFrame(json.dumps([2, "boot", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}]), "boot")
    got = await client.exchange(boot)
    assert got.close_code is None and len(got.answers) == 1
    assert got.answers[0][:2] == [3, "boot"] and got.answers[0][2]["status"] == "Accepted"


async def test_every_frame_gets_what_the_spec_prescribes(daemon):
    frames = drawn(ocpp_frames(), EXAMPLES)
    closes: Counter[int] = Counter()
    async with FuzzCharger(f"{daemon.ocpp_url}/CP01") as client:
        rss_start = rss_mb(daemon.proc.pid)
        for frame in frames:
            expect = ocpp_expectation(frame)
            got = await client.exchange(frame)
            check(frame, expect, got)
            if got.close_code is not None:
                closes[got.close_code] += 1
        await boot_works(client)
        rss_end = rss_mb(daemon.proc.pid)
    assert_no_crash(daemon)
    print(f"\nfuzz ocpp: {len(frames)} frames, closes {dict(closes)} (size limit / invalid UTF-8), "
          f"{client.connects} connections, 0 crashes, RSS {rss_start:.1f} -> {rss_end:.1f} MB")


def flood_frames(junk: list[OcppFrame], count: int, tag: str) -> Iterable[OcppFrame | str]:
    """`count` frames: every other one a Heartbeat with its own id, the rest junk in turn."""
    pool = itertools.cycle(junk)
    for i in range(count):
        yield heartbeat(f"{tag}-{i}") if i % 2 == 0 else next(pool)


async def flood(client: FuzzCharger, frames: Iterable[OcppFrame | str], tag: str) -> None:
    """Send all frames as fast as the socket takes them while reading the answers; check them all once the last is in."""
    assert client.ws is not None
    ws = client.ws
    owed: Counter[tuple[int, str]] = Counter()
    codes: dict[str, set[str]] = {}
    got: Counter[tuple[int, str]] = Counter()
    wrong: list[list] = []
    end = f"{tag}-end"

    async def read() -> None:
        while True:
            message = json.loads(await ws.recv())
            if message[0] == 2:
                await client.answer_gateway(message)
                continue
            if message[1] == end:
                return
            got[message[0], message[1]] += 1
            if message[0] == 4 and message[2] not in codes.get(message[1], ()):
                wrong.append(message)

    async with asyncio.TaskGroup() as tg:
        reader = tg.create_task(read())
        for frame in frames:
            if isinstance(frame, str):
                owed[3, json.loads(frame)[1]] += 1
            else:
                expect = ocpp_expectation(frame)
                if expect.kind in ("result", "error"):
                    assert expect.unique_id is not None
                    owed[3 if expect.kind == "result" else 4, expect.unique_id] += 1
                    codes.setdefault(expect.unique_id, set()).update(expect.codes)
            await client.send(frame)
        await ws.send(heartbeat(end))
        async with asyncio.timeout(60):
            await reader
    assert got == owed, f"answers differ: missing {owed - got}, unexpected {got - owed}"
    assert wrong == [], f"CALLERRORs with the wrong code: {wrong[:5]}"


async def test_a_flood_is_answered_logged_per_kind_and_memory_stays_flat(daemon):
    # Junk: frames the gateway refuses or drops. Well-formed requests are no fault, however odd their values.
    junk = [f for f in drawn(ocpp_frames(), 400) if ocpp_expectation(f).kind in ("nothing", "error")]
    async with FuzzCharger(f"{daemon.ocpp_url}/CP01") as client:
        await boot_works(client)
        log_at = len(daemon.log())
        await flood(client, flood_frames(junk, FLOOD_FRAMES, "warm"), "warm")
        lines = new_log_lines(daemon, log_at)
        rss_warm = rss_mb(daemon.proc.pid)
        for n in range(MORE_FLOODS):
            await flood(client, flood_frames(junk, MORE_FLOOD_FRAMES, f"more{n}"), f"more{n}")
        rss_end = rss_mb(daemon.proc.pid)
        await boot_works(client)
        assert client.connects == 1, "the flood cost the connection"
    assert_no_crash(daemon)
    kinds = Counter(fault_kind(line) for line in lines if " WARNING " in line or " ERROR " in line or " INFO " in line)
    print(f"\nfuzz ocpp flood: {FLOOD_FRAMES + MORE_FLOODS * MORE_FLOOD_FRAMES} frames, 0 crashes, "
          f"{len(lines)} log lines in the first flood over {len(kinds)} kinds, RSS {rss_warm:.1f} -> {rss_end:.1f} MB")
    worst = kinds.most_common(3)
    assert not worst or worst[0][1] <= FAULT_LINES_MAX, f"logged per frame: {worst}\n" + "\n".join(lines[:40])
    assert len(lines) <= 60, "\n".join(lines[:80])
    assert rss_end < rss_warm * 1.10, f"RSS grew from {rss_warm:.1f} to {rss_end:.1f} MB"
