"""How the MQTT link retries a lost broker (a back-off with jitter, capped by interfaces.md §4's
5 s) and how it drops a connection that did not end cleanly."""

from __future__ import annotations

import socket
import struct

import aiomqtt

FIRST_RETRY_S = 0.5  # a broker that restarts is back within a second or two: do not make the lights wait
RETRY_JITTER = 0.2  # each wait is shortened by up to this share, so gateways that lost one broker spread out
STABLE_AFTER_S = 10.0  # a connection up this long was a real one: the next loss starts the backoff afresh


def retry_delay_s(failures: int, cap_s: float, *, draw: float = 0.0) -> float:
    """Seconds to wait before the next attempt after `failures` (>= 1) failed ones in a row.

    FIRST_RETRY_S, doubling with every failure, never more than `cap_s`; `draw` (in [0, 1), a random
    number in the link) shortens the wait by up to RETRY_JITTER of it, so the jitter never breaks the cap.
    """
    if failures < 1:
        raise ValueError(f"failures must be >= 1, got {failures}")
    if cap_s <= 0:
        raise ValueError(f"cap_s must be > 0, got {cap_s}")
    if not 0 <= draw < 1:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    base_s = min(FIRST_RETRY_S * 2 ** min(failures - 1, 32), cap_s)
    return base_s * (1 - RETRY_JITTER * draw)


def failures_after_loss(failures: int, up_s: float) -> int:
    """Failed attempts in a row once a connection that was up for `up_s` s (0: never up) is lost.

    A connection that lasted STABLE_AFTER_S counts as a success and the backoff starts again at its
    first step; one that drops at once (a broker that accepts and then throws us out) is one more failure.
    """
    return 1 if up_s >= STABLE_AFTER_S else failures + 1


def abandon_socket(client: aiomqtt.Client) -> None:
    """Reset the socket of a connection that did not end cleanly (no CONNACK, or no answer to DISCONNECT).

    aiomqtt leaves it open after a timeout, and a broker that wakes up later would then act on the
    CONNECT still in flight: a ghost with the gateway's client id that takes the live connection's
    session over (and fires its Last Will). A reset drops whatever was not yet delivered.
    """
    paho = getattr(client, "_client", None)  # neither aiomqtt nor paho has a public way to drop the socket
    close = getattr(paho, "_sock_close", None)  # it also takes the socket off aiomqtt's event loop
    sock = paho.socket() if close is not None else None
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already closed by the peer: nothing left to drop
    close()
