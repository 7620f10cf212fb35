"""Who may open an OCPP connection before any password is checked: the endpoint's exposure rules for
chargers without (long enough) passwords, and the caps on handshakes per address and connections in all.

Pure: no sockets, no clock; the OCPP server asks and logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from config.schema import EXPOSED_MIN_PASSWORD_CHARS

__all__ = ["ConnectionGate", "LoginPolicy"]


@dataclass(frozen=True)
class LoginPolicy:
    """What a charger needs to connect to an endpoint that others on the network can reach.

    `exposed`: the endpoint listens on a non-loopback address. There a charger needs a password of at
    least `min_password_chars`, unless its id is in `insecure` (its config says insecure = true) or it is
    not in the config and `unknown_insecure` (allow_unknown_chargers: any id let in, stated on purpose).
    """

    exposed: bool = False
    insecure: frozenset[str] = frozenset()
    unknown_insecure: bool = False
    min_password_chars: int = EXPOSED_MIN_PASSWORD_CHARS
    configured: frozenset[str] = frozenset()

    def stated_insecure(self, charger_id: str) -> bool:
        """True when the config lets this charger in without a (long enough) password."""
        if charger_id in self.configured:
            return charger_id in self.insecure
        return self.unknown_insecure

    def no_password_refused(self, charger_id: str) -> bool:
        """True when a charger that needs no password must not connect: the endpoint is exposed."""
        return self.exposed and not self.stated_insecure(charger_id)

    def short_password_refused(self, charger_id: str, password: str) -> bool:
        """True when the charger's correct `password` is too short for an exposed endpoint."""
        return self.exposed and len(password) < self.min_password_chars and not self.stated_insecure(charger_id)


@dataclass
class ConnectionGate:
    """Counts connections in their opening handshake per peer address, and open ones in all.

    A connection is `admit`ted when it arrives, `handshake_done` once it is an OCPP connection, and
    `closed` when its socket is gone (whether or not its handshake ended).
    """

    max_handshakes_per_host: int
    max_connections: int
    handshaking: dict[str, int] = field(default_factory=dict)
    open_count: int = 0

    def admit(self, host: str) -> Literal["ok", "host", "total"]:
        """Count a new connection from `host`, or say which cap refuses it (then nothing is counted)."""
        if self.open_count >= self.max_connections:
            return "total"
        if self.handshaking.get(host, 0) >= self.max_handshakes_per_host:
            return "host"
        self.handshaking[host] = self.handshaking.get(host, 0) + 1
        self.open_count += 1
        return "ok"

    def handshake_done(self, host: str) -> None:
        """The connection from `host` (admitted) finished its handshake; it stays open."""
        left = self.handshaking.get(host, 0) - 1
        if left > 0:
            self.handshaking[host] = left
        else:
            self.handshaking.pop(host, None)

    def closed(self, host: str, *, handshaking: bool) -> None:
        """An admitted connection from `host` is gone; `handshaking`: before its handshake was done."""
        if handshaking:
            self.handshake_done(host)
        self.open_count = max(0, self.open_count - 1)
