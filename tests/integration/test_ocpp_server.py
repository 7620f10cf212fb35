"""The OCPP central system over real sockets, against the simulated charger and raw WebSocket clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.headers import build_authorization_basic

from drivers.contract.backend import (
    CallErrorReceived,
    CallTimedOut,
    ChargerNotConnected,
    TransactionAnswer,
)
from drivers.contract.events import (
    ChargerBooted,
    ChargerConnected,
    ChargerDisconnected,
    ConnectorStatusChanged,
    Event,
    MeterSample,
)
from drivers.ocpp.pacing import FrameLimits
from drivers.ocpp.server import OcppServer
from drivers.sim.charger16 import SimCharger

WAIT_S = 3.0
START_TX = '[2,"{id}","StartTransaction",{{"connectorId":1,"idTag":"TAG-1","meterStart":0,"timestamp":"2026-11-28T13:05:09Z"}}]'


class FakeBackend:
    """The square in memory: what the server told it, and a few chargers with passwords."""

    def __init__(self, chargers: dict[str, str | None]) -> None:
        self.chargers = chargers
        self.events: list[Event] = []
        self.authorized: list[tuple[str, str]] = []
        self.started: list[tuple[str, int, str, int]] = []
        self.stopped: list[tuple[str, int, int, str | None, str | None, list[MeterSample]]] = []
        self.samples: list[MeterSample] = []
        self._next_tx = 100

    def charger_known(self, charger_id: str) -> bool:
        return charger_id in self.chargers

    def charger_password_ok(self, charger_id: str, password: str | None) -> bool:
        expected = self.chargers.get(charger_id)
        return expected is None or password == expected

    def charger_password_known(self, charger_id: str, password: str | None) -> bool | None:
        return self.charger_password_ok(charger_id, password)

    def charger_lenient(self, charger_id: str) -> bool:
        return False

    connectors = 2

    def connector_count(self, charger_id: str) -> int:
        return self.connectors

    def record(self, event: Event) -> None:
        self.events.append(event)

    async def authorize(self, charger_id: str, id_tag: str) -> str:
        self.authorized.append((charger_id, id_tag))
        return "Blocked" if id_tag.startswith("BAD") else "Accepted"

    async def start_transaction(
        self, charger_id: str, connector_id: int, id_tag: str, meter_start_wh: int, timestamp: datetime,
        *, charger_tx: str | None = None,
    ) -> TransactionAnswer:
        self._next_tx += 1
        self.started.append((charger_id, connector_id, id_tag, meter_start_wh))
        return TransactionAnswer(self._next_tx, "Accepted")

    async def stop_transaction(
        self,
        charger_id: str,
        transaction_id: int,
        meter_stop_wh: int,
        timestamp: datetime,
        reason: str | None,
        id_tag: str | None,
        samples: list[MeterSample],
    ) -> str | None:
        self.stopped.append((charger_id, transaction_id, meter_stop_wh, reason, id_tag, samples))
        return "Accepted" if id_tag else None

    async def meter_values(self, charger_id: str, samples: list[MeterSample]) -> None:
        self.samples.extend(samples)

    def data_transfer(self, charger_id: str, vendor_id: str, message_id: str | None, data: str | None) -> str:
        return "UnknownVendorId"

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def eventually(check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


@asynccontextmanager
async def square(backend: FakeBackend, *sims: str, **server_options: Any) -> AsyncIterator[tuple[OcppServer, list[SimCharger]]]:
    """A running server (port 0) with simulated chargers connected and booted."""
    server = OcppServer("127.0.0.1", 0, "/ocpp", backend, **server_options)
    async with asyncio.TaskGroup() as tasks:
        ready = asyncio.Event()
        running = [tasks.create_task(server.run(ready), name="server")]
        async with asyncio.timeout(WAIT_S):
            await ready.wait()
        chargers = []
        for charger_id in sims:
            sim = SimCharger(
                f"ws://127.0.0.1:{server.port}/ocpp",
                charger_id,
                password=backend.chargers.get(charger_id),
                meter_interval_s=0.05,
                reaction_s=0.1,
            )
            sim_ready = asyncio.Event()
            running.append(tasks.create_task(sim.run(sim_ready), name=f"sim-{charger_id}"))
            async with asyncio.timeout(WAIT_S):
                await sim_ready.wait()
            chargers.append(sim)
        try:
            yield server, chargers
        finally:
            for task in running:
                task.cancel()


def client(server: OcppServer, charger_id: str = "CP01", *, password: str | None = None, subprotocols: tuple[str, ...] = ("ocpp1.6",)):
    headers = {"Authorization": build_authorization_basic(charger_id, password)} if password is not None else {}
    return connect(
        f"ws://127.0.0.1:{server.port}/ocpp/{charger_id}",
        subprotocols=list(subprotocols),  # type: ignore[arg-type]
        additional_headers=headers,
        open_timeout=WAIT_S,
    )


async def exchange(ws: ClientConnection, frame: str | bytes, unique_id: str | None, timeout_s: float = 0.5) -> list | None:
    """Send a frame; the answer carrying `unique_id`, or None when none comes. The gateway's own CALLs are skipped."""
    await ws.send(frame)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                answer = json.loads(await ws.recv())
                if answer[0] in (3, 4) and answer[1] == unique_id:
                    return answer
    except TimeoutError:
        return None


# --- sessions with the simulated charger ------------------------------------------------------


async def test_boot_status_authorize_start_meter_stop_reach_the_backend() -> None:
    backend = FakeBackend({"CP01": None})
    async with square(backend, "CP01") as (server, (sim,)):
        assert server.connected() == {"CP01": "ocpp1.6"}
        assert backend.of(ChargerConnected)[0].ocpp_version == "ocpp1.6"
        assert backend.of(ChargerBooted)[0].vendor == "laadplein"
        await eventually(lambda: {(e.connector_id, e.status) for e in backend.of(ConnectorStatusChanged)} >= {(1, "Available"), (2, "Available")})

        transaction_id = await sim.plug_in(1, "TAG-42", car_max_a=16)
        assert sim.transactions == {1: transaction_id}
        assert backend.authorized == [("CP01", "TAG-42")]
        assert backend.started == [("CP01", 1, "TAG-42", 0)]
        await eventually(lambda: any(s.transaction_id == transaction_id and s.current_a == (16, 16, 16) for s in backend.samples))
        sample = backend.samples[-1]
        assert sample.connector_id == 1 and sample.power_w == 16 * 230 * 3 and sample.offered_a == 32

        await sim.stop(1)
        await sim.unplug(1)
        (stopped,) = backend.stopped
        assert stopped[:2] == ("CP01", transaction_id) and stopped[3:5] == ("Local", "TAG-42")
        assert stopped[5][0].energy_wh == stopped[2] and stopped[5][0].connector_id == 1
        statuses = [e.status for e in backend.of(ConnectorStatusChanged) if e.connector_id == 1]
        assert statuses[-4:] == ["Preparing", "Charging", "Finishing", "Available"]


async def test_the_gateway_asks_for_the_status_of_connectors_not_heard_within_5_s_of_a_connect() -> None:
    backend = FakeBackend({"CP01": None})
    backend.connectors = 3  # the simulated charger has 2: it reports those, and the third stays silent
    async with square(backend, "CP01") as (_, (sim,)):
        await eventually(lambda: any(a == "TriggerMessage" for a, _ in sim.received), timeout_s=5 + WAIT_S)
        await asyncio.sleep(0.5)
        triggers = [p for a, p in sim.received if a == "TriggerMessage"]
        assert triggers == [{"requestedMessage": "StatusNotification", "connectorId": 3}]


async def test_calls_to_chargers_answer_or_raise() -> None:
    backend = FakeBackend({"CP01": None, "CP02": None})
    async with square(backend, "CP01") as (server, (sim,)):
        answer = await server.call("CP01", "GetConfiguration", {"key": ["HeartbeatInterval", "Nope"]})
        assert answer["configurationKey"][0]["key"] == "HeartbeatInterval" and answer["unknownKey"] == ["Nope"]

        with pytest.raises(CallErrorReceived) as error:
            await server.call("CP01", "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
        assert error.value.code == "NotImplemented"
        with pytest.raises(ChargerNotConnected):
            await server.call("CP02", "GetConfiguration", {})

        transaction_id = await sim.plug_in(2)
        profile = {
            "connectorId": 2,
            "csChargingProfiles": {
                "chargingProfileId": 2,
                "stackLevel": 1,
                "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Absolute",
                "transactionId": transaction_id,
                "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.5}]},
            },
        }
        assert await server.call("CP01", "SetChargingProfile", profile) == {"status": "Accepted"}
        await eventually(lambda: any(s.current_a == (10.5, 10.5, 10.5) for s in backend.samples[-3:]))

        assert await server.call("CP01", "RemoteStopTransaction", {"transactionId": transaction_id}) == {"status": "Accepted"}
        await eventually(lambda: len(backend.stopped) == 1)
        assert backend.stopped[0][3] == "Remote"


async def test_a_charger_that_does_not_answer_times_out() -> None:
    backend = FakeBackend({"CP01": None})
    async with square(backend, call_timeout_s=0.3) as (server, _), client(server) as ws:
        await eventually(lambda: "CP01" in server.connected())
        with pytest.raises(CallTimedOut):
            await server.call("CP01", "GetConfiguration", {})
        assert ws.state.name == "OPEN"


async def test_reset_reconnects_and_boots_again() -> None:
    backend = FakeBackend({"CP01": None})
    async with square(backend, "CP01") as (server, (sim,)):
        assert await server.call("CP01", "Reset", {"type": "Soft"}) == {"status": "Accepted"}
        await eventually(lambda: len(backend.of(ChargerBooted)) == 2)
        assert server.connected() == {"CP01": "ocpp1.6"}
        assert sim.connected


# --- handshake ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ocpp/CP99", "/ocpp/", "/other/CP01", "/ocpp/CP01/extra"])
async def test_unknown_chargers_and_paths_are_refused_with_404(path: str) -> None:
    async with square(FakeBackend({"CP01": None})) as (server, _):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{server.port}{path}", subprotocols=["ocpp1.6"], open_timeout=WAIT_S):  # type: ignore[list-item]
                pass
        assert refused.value.response.status_code == 404


async def test_basic_auth_password_is_required_when_set() -> None:
    async with square(FakeBackend({"CP01": "s3cret"})) as (server, _):
        for password in (None, "wrong"):
            with pytest.raises(InvalidStatus) as refused:
                async with client(server, password=password):
                    pass
            assert refused.value.response.status_code == 401
        async with client(server, password="s3cret") as ws:
            assert ws.response is not None and ws.response.status_code == 101
            assert ws.subprotocol == "ocpp1.6"


@pytest.mark.parametrize("offered", [("ocpp2.0",), ()])
async def test_a_charger_without_a_common_subprotocol_is_refused(offered: tuple[str, ...]) -> None:
    async with square(FakeBackend({"CP01": None})) as (server, _):
        with pytest.raises(InvalidStatus) as refused:
            async with client(server, subprotocols=offered):
                pass
        assert refused.value.response.status_code == 400
        assert server.connected() == {}


async def test_the_first_offered_supported_subprotocol_is_taken() -> None:
    async with square(FakeBackend({"CP01": None})) as (server, _), client(server, subprotocols=("ocpp2.0", "ocpp1.6")) as ws:
        assert ws.subprotocol == "ocpp1.6"


# --- malformed frames ----------------------------------------------------------------------------


MALFORMED = [
    ("not json", None, None),
    ('[2,"id1"]', "id1", "FormationViolation"),
    ('[2,"id2","BootNotification",{}]', "id2", "FormationViolation"),
    ('[2,"id3","Foo",{}]', "id3", "NotImplemented"),
    ('[2,"id4","ChangeAvailability",{"connectorId":1,"type":"Inoperative"}]', "id4", "NotImplemented"),
    ('[2,"id5","Heartbeat",{"extra":1}]', "id5", "FormationViolation"),
    ('[2,"id6","Authorize",{"idTag":17}]', "id6", "TypeConstraintViolation"),
    (b"\x00\x01binary", None, None),
    ("[" * 10_000 + "]" * 10_000, None, None),
    ('[2,"id7","DataTransfer",{"vendorId":"x","data":' + "[" * 10_000 + "]" * 10_000 + "}]", None, None),
    ('[2,"id8","StartTransaction",{"connectorId":1,"idTag":"T","meterStart":' + "9" * 5000 + ',"timestamp":"2026-11-28T13:05:09Z"}]', "id8", "TypeConstraintViolation"),
    ('[2,"id9","StartTransaction",{"connectorId":1,"idTag":"T","meterStart":1e999999,"timestamp":"2026-11-28T13:05:09Z"}]', "id9", "TypeConstraintViolation"),
    ('[3,"id10",{}]', None, None),  # an answer to nothing: ignored
    ('[4,"id11","Oops"]', None, None),
]


@pytest.mark.parametrize("frame, unique_id, code", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
async def test_malformed_frames_are_answered_or_dropped_and_the_connection_stays_usable(
    frame: str | bytes, unique_id: str | None, code: str | None
) -> None:
    backend = FakeBackend({"CP01": None})
    async with square(backend) as (server, _), client(server) as ws:
        answer = await exchange(ws, frame, unique_id, timeout_s=0.5 if unique_id is None else WAIT_S)
        if code is None:
            assert answer is None
        else:
            assert answer is not None and answer[:3] == [4, unique_id, code]
        started = await exchange(ws, START_TX.format(id="after"), "after", timeout_s=WAIT_S)
        assert started is not None and started[0] == 3 and started[2]["idTagInfo"] == {"status": "Accepted"}
        assert backend.of(ChargerDisconnected) == []


async def test_a_frame_over_the_limit_closes_with_1009_and_the_charger_comes_back() -> None:
    backend = FakeBackend({"CP01": None})
    big = '[2,"big","DataTransfer",{"vendorId":"x","data":"' + "a" * 70 * 1024 + '"}]'
    async with square(backend) as (server, _):
        async with client(server) as ws:
            await ws.send(big)
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(WAIT_S):
                    while True:
                        await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await eventually(lambda: len(backend.of(ChargerDisconnected)) == 1)
        assert "1009" in backend.of(ChargerDisconnected)[0].reason
        async with client(server) as ws:
            assert await exchange(ws, START_TX.format(id="again"), "again", timeout_s=WAIT_S) is not None


async def test_a_flood_of_garbage_leaves_the_connection_usable() -> None:
    # Caps a street square never sets: what is tested here is the handler's survival, not the pace
    # (test_ocpp_limits.py), which would answer the last frame of this flood after 20 s.
    uncapped = FrameLimits(max_messages_per_s=10_000, message_burst=100_000, max_samples_per_frame=10_000)
    async with square(FakeBackend({"CP01": None}), frame_limits=uncapped) as (server, _), client(server) as ws:
        for i in range(300):
            await ws.send(["garbage", f'[2,"f{i}"]', b"\xff", "{}"][i % 4])
        started = await exchange(ws, START_TX.format(id="after"), "after", timeout_s=WAIT_S)
        assert started is not None and started[0] == 3


async def test_a_charger_connecting_again_replaces_its_old_connection() -> None:
    backend = FakeBackend({"CP01": None})
    async with square(backend) as (server, _):
        async with client(server) as old:
            await eventually(lambda: "CP01" in server.connected())
            async with client(server) as new:
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(WAIT_S):
                        while True:
                            await old.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
                await asyncio.sleep(0.1)  # the old handler's teardown has run by now
                assert server.connected() == {"CP01": "ocpp1.6"}
                assert backend.of(ChargerDisconnected) == []
                assert len(backend.of(ChargerConnected)) == 2
                assert await exchange(new, START_TX.format(id="new"), "new", timeout_s=WAIT_S) is not None
            await eventually(lambda: len(backend.of(ChargerDisconnected)) == 1)
            assert server.connected() == {}
