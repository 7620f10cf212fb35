"""What the simulated Modbus devices share: a pymodbus TCP server's life, and a periodic refresh."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


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


async def serve_registers(
    *,
    unit_id: int,
    start: int,
    count: int,
    action,
    host: str,
    port: int,
    period_s: float,
    step: Callable[[], None],
    listening: Callable[[int | None], None],
    ready: asyncio.Event | None,
    name: str,
    **options,
) -> None:
    """Serve a block of holding/input registers until cancelled, calling `step` every `period_s`.

    `listening(port)` is told the port once the server is up, and `listening(None)` when it stops.
    """
    device = SimDevice(
        id=unit_id, simdata=[SimData(start, count=count, values=0, datatype=DataType.REGISTERS)], action=action
    )
    async with modbus_server(device, host, port, **options) as actual:
        listening(actual)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(every(period_s, step), name=name)
                if ready is not None:
                    ready.set()
        finally:
            listening(None)
