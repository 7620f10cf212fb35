"""Free TCP ports on loopback for the test rigs' servers (daemon, broker, proxies, simulators)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST_PORT = 20000


def _ephemeral_low() -> int:
    """The first port the kernel hands out to outgoing connections (32768 unless configured)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, below the range of outgoing connections' ports.

    A client that keeps dialling a port while its server restarts can connect to itself when the
    kernel gives it that same port as its source (TCP simultaneous open), and then holds the port
    the server wants back. A listening port outside that range is never a source port.
    """
    low = _ephemeral_low()
    if low - LOWEST_PORT >= 1000:
        for _ in range(100):
            port = random.randrange(LOWEST_PORT, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
