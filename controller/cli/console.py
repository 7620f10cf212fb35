"""The technician's live console: polls a running daemon's admin API, reads keys in cbreak mode and
always gives the terminal back as it found it. The screen itself is drawn by `controller.cli.console_render`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from dataclasses import dataclass, field
from datetime import datetime

from rich.console import Console, RenderableType
from rich.live import Live

from controller.cli.client import EXIT_REFUSED, EXIT_UNREACHABLE, ClientError
from controller.cli.console_render import (
    COMPACT_BLOCK_W,
    CONNECTED,
    CONNECTING,
    HELP,
    LIGHTS,
    ROOMY_BLOCK_H,
    ROOMY_BLOCK_W,
    ROOMY_MIN_H,
    ROOMY_MIN_W,
    UNKNOWN_LIGHT,
    render,
    zone_or_utc,
)

__all__ = [
    "COMPACT_BLOCK_W",
    "CONNECTED",
    "CONNECTING",
    "EVENTS_POLLED",
    "HELP",
    "LIGHTS",
    "ROOMY_BLOCK_H",
    "ROOMY_BLOCK_W",
    "ROOMY_MIN_H",
    "ROOMY_MIN_W",
    "UNKNOWN_LIGHT",
    "render",
    "run_console",
]

EVENTS_POLLED = 20


@dataclass
class _Screen:
    """What the console knows: the last answers, the connection, the help toggle."""

    url: str
    status: dict | None = None
    alarms: list = field(default_factory=list)
    events: list = field(default_factory=list)
    connection: str = CONNECTING
    lost_since: datetime | None = None
    help_shown: bool = False
    refused: str | None = None

    def answered(self, status: dict, alarms: list, events: list) -> None:
        self.status, self.alarms, self.events = status, alarms, events
        self.connection, self.lost_since = CONNECTED, None

    def lost(self, error: Exception) -> None:
        zone = zone_or_utc((self.status or {}).get("timezone") or "UTC")
        self.lost_since = self.lost_since or datetime.now(zone)
        since = self.lost_since.strftime("%H:%M:%S")
        if isinstance(error, ClientError) and error.exit_code == EXIT_UNREACHABLE:
            self.connection = f"daemon not reachable at {self.url} — reconnecting (since {since})"
        else:
            self.connection = f"no usable answer from {self.url} ({error}) — retrying (since {since})"

    def frame(self, width: int, height: int) -> RenderableType:
        zone = zone_or_utc((self.status or {}).get("timezone") or "UTC")
        now_local = datetime.now(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
        return render(self.status, self.alarms, self.events, width=width, height=height,
                      connection=self.connection, help_shown=self.help_shown, now_local=now_local)


async def run_console(
    client, *, refresh_s: float = 1.0, stdin_keys: bool = True, console: Console | None = None
) -> int:
    """Show the square live until `q` (exit 0) or a refused token (exit 4, the reason on stderr)."""
    console = console or Console()
    screen = _Screen(client.base_url)
    inbox: asyncio.Queue = asyncio.Queue()
    with _cbreak_keys(inbox, enabled=stdin_keys), Live(console=console, screen=True, auto_refresh=False) as live:

        def draw() -> None:
            width, height = console.size
            live.update(screen.frame(width, height), refresh=True)

        draw()
        with _on_resize(draw):
            async with asyncio.TaskGroup() as tg:
                poller = tg.create_task(_poll(client, screen, draw, inbox, refresh_s), name="console-poll")
                try:
                    code = await _keys(inbox, screen, draw)
                finally:
                    poller.cancel()
    if screen.refused:
        print(f"laadplein console: {screen.refused}", file=sys.stderr)
    return code


async def read_screen(client) -> tuple[dict, list, list]:
    """What the console shows, asked of the daemon at once: the status, the alarms, the last events."""
    status, alarms, events = await asyncio.gather(
        asyncio.to_thread(client.get, "/api/status"),
        asyncio.to_thread(client.get, "/api/alarms"),
        asyncio.to_thread(client.get, f"/api/events?limit={EVENTS_POLLED}"),
    )
    return status, alarms, events


async def _poll(client, screen: _Screen, draw, inbox: asyncio.Queue, refresh_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            status, alarms, events = await read_screen(client)
        except ClientError as exc:
            if exc.exit_code == EXIT_REFUSED:
                inbox.put_nowait(exc)
                return
            screen.lost(exc)
        except ValueError as exc:  # not JSON: something else answers on that port
            screen.lost(exc)
        else:
            screen.answered(status, alarms or [], events or [])
        draw()
        await asyncio.sleep(max(0.0, refresh_s - (loop.time() - started)))


async def _keys(inbox: asyncio.Queue, screen: _Screen, draw) -> int:
    while True:
        item = await inbox.get()
        if isinstance(item, ClientError):
            screen.refused = str(item)
            return EXIT_REFUSED
        for key in item:
            if key in "qQ":
                return 0
            if key == "?":
                screen.help_shown = not screen.help_shown
                draw()


@contextlib.contextmanager
def _cbreak_keys(inbox: asyncio.Queue, *, enabled: bool):
    """Keys from a terminal stdin, one at a time and unechoed, into `inbox`; the terminal restored after."""
    if not enabled or not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    loop = asyncio.get_running_loop()
    saved = termios.tcgetattr(fd)

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if data:
            inbox.put_nowait(data.decode(errors="ignore"))
        else:  # end of input: only signals and a refused token end the console now
            loop.remove_reader(fd)

    try:
        tty.setcbreak(fd)
        loop.add_reader(fd, readable)
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _on_resize(draw):
    """Redraw at once when the terminal changes size, where signals can be handled."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGWINCH, draw)
    except (ValueError, RuntimeError, NotImplementedError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
