"""A TCP proxy on a free loopback port that can cut the line without closing it, for network-fault tests.

`freeze()` stops forwarding in both directions while every socket stays open: each end sees a
peer that has gone silent, as with a cut cable or a hung host, and neither hears a close (a close
or reset from one end is held like any other data). `thaw()` lets everything through again, held
data first. `close()` drops every connection and stops listening, like a router that restarts;
`start()` listens again on the same port, forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.integration.ports import free_port

CHUNK_BYTES = 65536
CONNECT_TIMEOUT_S = 5.0


class _Pair:
    """One client's connection and its connection to the target."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.target: asyncio.StreamWriter | None = None

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.target) if w is not None]


class TcpProxy:
    """Forwards connections on 127.0.0.1:`port` to `target_host`:`target_port`."""

    host = "127.0.0.1"

    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.port = port or free_port(self.host)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def frozen(self) -> bool:
        return not self._flowing.is_set()

    async def start(self) -> None:
        """Listen on self.port (again, after close())."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)

    def freeze(self) -> None:
        """Stop forwarding both ways; keep every socket open; hold new connections the same way."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forward again, beginning with what was held."""
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and reset every connection at once; also ends a freeze."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for pair in list(self._pairs):
            for writer in pair.writers():
                writer.transport.abort()
        self.thaw()  # the held pumps wake up to find their sockets gone, and end
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        pair = _Pair(client_writer)
        self._pairs.add(pair)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._flowing.wait()  # a connection made across a cut line reaches nobody until it is mended
            if client_writer.transport.is_closing():
                return  # reset by its client, or dropped by close(), while it waited: it reaches nobody
            try:
                target_reader, pair.target = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                return  # the target is down: the client sees its connection dropped, as through a router
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(client_reader, pair.target))
                tg.create_task(self._pump(target_reader, client_writer))
        except* (OSError, EOFError):
            pass  # either end went away: the pair ends, both sides are closed below
        finally:
            self._pairs.discard(pair)
            self._handlers.discard(task)
            for writer in pair.writers():
                writer.close()  # what was forwarded still goes out, then FIN

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await self._flowing.wait()
            data = await reader.read(CHUNK_BYTES)
            # What was read just before a freeze waits with everything else, not a byte gets through.
            await self._flowing.wait()
            if not data:
                raise EOFError  # ends the other direction too: websockets and MQTT need no half-close
            writer.write(data)
            await writer.drain()
