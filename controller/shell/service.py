"""Living under systemd: readiness, status and watchdog pings (sd_notify), and log lines the journal ranks.

The notify protocol is one datagram of `KEY=VALUE` lines to the AF_UNIX socket named in
$NOTIFY_SOCKET (a name starting with '@' lives in the abstract namespace). It is written out
here rather than taken from a library: it is some forty lines, and an embedded gateway is
better off with one dependency less. Nothing in this module raises into the daemon: a service
manager that cannot be told how we are doing is no reason to stop controlling the square.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

log = logging.getLogger("laadplein.service")

# sd-daemon(3) priorities, by the least logging level that earns them.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_DEBUG_PRIORITY = 7


def _notify_address(value: str | None) -> bytes | None:
    """The socket address in $NOTIFY_SOCKET, or None when there is none we can use."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return os.fsencode(value)
    # systemd also knows vsock addresses (for virtual machines); a gateway is not one.
    log.warning("NOTIFY_SOCKET %r is neither a path nor an abstract name: not telling systemd anything", value)
    return None


def _watchdog_s(environ: Mapping[str, str]) -> float | None:
    """The watchdog interval (s) systemd asks this process to keep, or None."""
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None  # meant for another process (we were started by the watched one)
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


class ServiceNotifier:
    """Tells systemd that the daemon is ready, how it is, that it is alive, and that it is stopping.

    A no-op when $NOTIFY_SOCKET is unset (run by hand, or by another service manager).
    """

    def __init__(self, environ: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.monotonic) -> None:
        self._where = environ.get("NOTIFY_SOCKET", "")
        self._address = _notify_address(self._where)
        self.enabled: bool = self._address is not None
        self.watchdog_s: float | None = _watchdog_s(environ) if self.enabled else None
        self._clock = clock
        self._pinged_at_s: float | None = None
        self._stopping = False
        self._failing = False

    def ready(self, status: str) -> None:
        """Start-up is done: systemd counts the service as started from now on."""
        self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        """A line for `systemctl status`."""
        self._send(f"STATUS={_one_line(text)}")

    def alive(self) -> None:
        """A control cycle completed: ping the watchdog, at most once per quarter of its interval."""
        if self.watchdog_s is None:
            return
        now_s = self._clock()
        # A quarter leaves room for three late pings before systemd gives up on us, and spares
        # the gateway a datagram on every one of several cycles a second.
        if self._pinged_at_s is not None and now_s - self._pinged_at_s < self.watchdog_s / 4:
            return
        self._pinged_at_s = now_s
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """Shutdown has begun (said once, however many ways the daemon learns it is stopping)."""
        if self._stopping:
            return
        self._stopping = True
        self._send("STOPPING=1\nSTATUS=shutting down")

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            # A socket per message, as sd_notify does: nothing to keep open or to clean up. Not
            # blocking: a service manager too busy to read must not stall the control loop.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.warning("cannot notify systemd at %s (%s); carrying on without it", self._where, exc)
            return
        if self._failing:
            self._failing = False
            log.info("notifying systemd again")


def _one_line(text: str) -> str:
    """A newline would start a new assignment in the datagram."""
    return " ".join(text.splitlines())


def journal_stream(environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """True when `stream` (default stderr) is the journal's own stream, as $JOURNAL_STREAM (dev:inode) says."""
    environ = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    expected = environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = expected.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        # No file behind the stream (captured, closed) or a malformed variable: not the journal.
        return False


class JournalFormatter(logging.Formatter):
    """Log lines for the journal: a `<N>` syslog priority in front, no time (the journal keeps its own).

    Every line of a multi-line record (a traceback) carries the prefix, because the journal
    reads each line of the stream as an entry of its own.
    """

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    @staticmethod
    def priority(levelno: int) -> int:
        """The syslog priority (0-7) of a logging level."""
        for least, priority in _PRIORITIES:
            if levelno >= least:
                return priority
        return _DEBUG_PRIORITY

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])
