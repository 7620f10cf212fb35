"""A central system on 127.0.0.1 that a simulated charger connects to and that can go away and come back
on the same port, as a killed gateway does: the rig the simulated chargers' integration tests share.

Each test file brings its own central system for its OCPP version (an ocpp `ChargePoint` built as
`central(charger_id, connection, heard)`, one per connection) and the subprotocol it speaks; all the
central systems on one port write into one `Heard`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ocpp.charge_point import ChargePoint
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from drivers.sim.charger_core import SimChargerCore
from tests.integration.ports import free_port

WAIT_S = 5.0


@dataclass
class Heard:
    """Everything the central systems on one port heard, across their restarts, in arrival order."""

    frames: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (action, payload as handed to the handler)
    # Set once the link is gone: a central system that holds a call back waits for it, so that a late
    # answer cannot slip out while the charger still listens.
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, action: str) -> list[dict[str, Any]]:
        return [p for a, p in self.frames if a == action]


H = TypeVar("H", bound=Heard)
S = TypeVar("S", bound=SimChargerCore)
C = TypeVar("C", bound=ChargePoint)


@dataclass
class Rig(Generic[H, S, C]):
    """The central system's port, the charger on it, and every central-system connection so far."""

    port: int
    heard: H
    sim: S
    central: Callable[[str, ServerConnection, H], C]
    subprotocol: str
    server: Server | None = None
    centrals: list[C] = field(default_factory=list)

    async def up(self) -> None:
        """The central system starts (again) on its port; the charger finds it by itself."""

        async def handler(connection: ServerConnection) -> None:
            central = self.central(connection.request.path.rsplit("/", 1)[-1], connection, self.heard)
            self.centrals.append(central)
            try:
                await central.start()
            except ConnectionClosed:
                pass

        self.heard.released = asyncio.Event()
        self.server = await serve(handler, "127.0.0.1", self.port, subprotocols=[Subprotocol(self.subprotocol)])

    async def down(self) -> None:
        """The central system goes, as a killed gateway: connections drop, held calls stay unanswered."""
        assert self.server is not None
        self.server.close()
        await eventually(lambda: not self.sim.connected)
        self.heard.released.set()  # only now: an answer must not slip out before the link is gone
        async with asyncio.timeout(WAIT_S):
            await self.server.wait_closed()
        self.server = None

    async def send(self, payload: Any) -> Any:
        """A request from the central system (from the test's task, never from a handler); the charger's answer."""
        return await self.centrals[-1].call(payload)


@asynccontextmanager
async def open_rig(
    central: Callable[[str, ServerConnection, H], C], subprotocol: str, heard: H, sim: Callable[[str], S]
) -> AsyncIterator[Rig[H, S, C]]:
    """A central system on a free port with the charger `sim(url_base)` connected and booted; all gone on exit."""
    port = free_port()
    r = Rig(port, heard, sim(f"ws://127.0.0.1:{port}/ocpp"), central, subprotocol)
    await r.up()
    try:
        async with asyncio.TaskGroup() as tasks:
            ready = asyncio.Event()
            running = tasks.create_task(r.sim.run(ready), name=f"sim-{r.sim.charger_id}")
            async with asyncio.timeout(WAIT_S):
                await ready.wait()
            try:
                yield r
            finally:
                running.cancel()
    finally:
        if r.server is not None:
            r.server.close()
            r.heard.released.set()
            async with asyncio.timeout(WAIT_S):
                await r.server.wait_closed()


async def eventually(check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)
