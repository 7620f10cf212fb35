"""What the simulated Modbus devices share: a pymodbus TCP server's life, and a periodic refresh."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimDevice


@contextlib.asynccontextmanager
async def modbus_server(device: SimDevice, host: str, port: int, **options) -> AsyncIterator[int]:
    """Serve `device` over Modbus TCP while the block runs; yields the port it listens on (port 0: a free one)."""
    server = ModbusTcpServer(device, address=(host, port), **options)
    await server.serve_forever(background=True)
    try:
        yield server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await server.shutdown()


async def every(period_s: float, step: Callable[[], None]) -> None:
    """Call `step` every `period_s` seconds until cancelled."""
    while True:
        await asyncio.sleep(period_s)
        step()
