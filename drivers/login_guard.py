"""Rate limit on chargers' failed Basic Auth logins: who is refused (HTTP 429) without a password check.

Pure: the caller passes the time (monotonic seconds). Five failures within the window for one charger
id from one host lock that pair out, and twenty from one host for any ids lock the host out, each for
`lockout_s`. A locked-out attempt costs no password check (a scrypt), which is what keeps guessing
slow and the event loop free. A correct login from a host clears its counts.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["LoginGuard", "Refusal"]

WINDOW_S = 60.0
MAX_CHARGER_FAILURES = 5
MAX_HOST_FAILURES = 20
MAX_ENTRIES = 4096


@dataclass(frozen=True)
class Refusal:
    """A login refused without a password check: for one charger id from a host, or for the whole host.

    `retry_after_s`: seconds until the lockout ends, whole and at least 1 (an HTTP Retry-After value).
    """

    scope: Literal["charger", "host"]
    retry_after_s: int
    failures: int  # the failures that started the lockout


@dataclass
class _Count:
    """Recent failures of one key, and until when it is locked out (monotonic s)."""

    failures: deque[float] = field(default_factory=deque)
    locked_until: float | None = None
    locked_after: int = 0


class LoginGuard:
    """Counts failed logins per (charger id, host) and per host within `window_s`; locks out for `lockout_s`.

    Memory stays bounded: at most `max_entries` keys of each kind, each holding at most its limit
    of failure times; when full, keys with nothing recent go first, then the oldest.
    """

    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        lockout_s: float | None = None,
        max_charger_failures: int = MAX_CHARGER_FAILURES,
        max_host_failures: int = MAX_HOST_FAILURES,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        if window_s <= 0 or (lockout_s is not None and lockout_s <= 0):
            raise ValueError("window_s and lockout_s must be above 0")
        if max_charger_failures < 1 or max_host_failures < 1 or max_entries < 1:
            raise ValueError("the failure limits and max_entries must be at least 1")
        self.window_s = window_s
        self.lockout_s = window_s if lockout_s is None else lockout_s
        self.max_charger_failures = max_charger_failures
        self.max_host_failures = max_host_failures
        self.max_entries = max_entries
        self._chargers: dict[tuple[str, str], _Count] = {}
        self._hosts: dict[str, _Count] = {}

    def __len__(self) -> int:
        """How many keys are held (charger-host pairs and hosts)."""
        return len(self._chargers) + len(self._hosts)

    def refusal(self, charger_id: str, host: str, now_s: float) -> Refusal | None:
        """The lockout an attempt by `charger_id` from `host` falls under at `now_s`, or None: check its password."""
        for scope, table, key in (("host", self._hosts, host), ("charger", self._chargers, (charger_id, host))):
            count = table.get(key)
            if count is None or count.locked_until is None:
                continue
            if now_s < count.locked_until:
                return Refusal(scope, max(1, math.ceil(count.locked_until - now_s)), count.locked_after)
            del table[key]  # the lockout is over: the key starts afresh
        return None

    def failed(self, charger_id: str, host: str, now_s: float) -> Refusal | None:
        """Count a wrong or missing password; the lockout this failure starts, if it starts one."""
        started = None
        for scope, table, key, limit in (
            ("charger", self._chargers, (charger_id, host), self.max_charger_failures),
            ("host", self._hosts, host, self.max_host_failures),
        ):
            count = self._count(table, key, now_s)
            while count.failures and count.failures[0] <= now_s - self.window_s:
                count.failures.popleft()
            count.failures.append(now_s)
            if len(count.failures) >= limit:
                count.locked_until, count.locked_after = now_s + self.lockout_s, len(count.failures)
                count.failures.clear()
                # The host's lockout covers the pair's: report the wider one.
                started = Refusal(scope, max(1, math.ceil(self.lockout_s)), count.locked_after)
        return started

    def succeeded(self, charger_id: str, host: str) -> None:
        """A correct password from `host`: its counts (the host's, and this charger's from it) start afresh."""
        self._chargers.pop((charger_id, host), None)
        self._hosts.pop(host, None)

    def _count(self, table: dict, key: object, now_s: float) -> _Count:
        count = table.get(key)
        if count is not None:
            return count
        if len(table) >= self.max_entries:
            self._make_room(table, now_s)
        count = table[key] = _Count()
        return count

    def _make_room(self, table: dict, now_s: float) -> None:
        """Forget keys with no recent failure and no lockout; if none, the oldest (dicts keep insertion order)."""
        idle = [
            key
            for key, count in table.items()
            if (count.locked_until is None or count.locked_until <= now_s)
            and (not count.failures or count.failures[-1] <= now_s - self.window_s)
        ]
        for key in idle:
            del table[key]
        while len(table) >= self.max_entries:
            del table[next(iter(table))]
