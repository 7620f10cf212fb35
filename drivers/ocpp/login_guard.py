"""Rate limit on chargers' failed Basic Auth logins: who is refused (HTTP 429) without a password check.

Pure: the caller passes the time (monotonic seconds). Five failures within the window for one charger
id from one host lock that pair out, and twenty from one host for any ids lock the host out, each for
`lockout_s`. A locked-out attempt costs no password check (a scrypt), which is what keeps guessing
slow and the event loop free. A correct login from a host clears its counts. An attempt with a charger
id that is not the square's counts like a wrong password towards its host's lockout: guessing ids is
the first step of guessing passwords.

Many chargers of a square may share one address (behind an LTE router's NAT), so a few misconfigured
ones must not lock out the rest: a charger id that logged in correctly from a host within
`known_good_s` (a day) is not held by that host's lockout, only by its own.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["LoginGuard", "Refusal"]

WINDOW_S = 60.0
MAX_CHARGER_FAILURES = 5
MAX_HOST_FAILURES = 20
MAX_ENTRIES = 4096
KNOWN_GOOD_S = 24 * 3600.0


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
    of failure times; when full, keys with nothing recent go first, then the oldest. The same bound
    holds for the (charger id, host) pairs remembered as known good, the least recent going first.
    """

    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        lockout_s: float | None = None,
        max_charger_failures: int = MAX_CHARGER_FAILURES,
        max_host_failures: int = MAX_HOST_FAILURES,
        max_entries: int = MAX_ENTRIES,
        known_good_s: float = KNOWN_GOOD_S,
    ) -> None:
        if window_s <= 0 or (lockout_s is not None and lockout_s <= 0) or known_good_s < 0:
            raise ValueError("window_s and lockout_s must be above 0, known_good_s at least 0")
        if max_charger_failures < 1 or max_host_failures < 1 or max_entries < 1:
            raise ValueError("the failure limits and max_entries must be at least 1")
        self.window_s = window_s
        self.lockout_s = window_s if lockout_s is None else lockout_s
        self.max_charger_failures = max_charger_failures
        self.max_host_failures = max_host_failures
        self.max_entries = max_entries
        self.known_good_s = known_good_s
        self._chargers: dict[tuple[str, str], _Count] = {}
        self._hosts: dict[str, _Count] = {}
        self._good: OrderedDict[tuple[str, str], float] = OrderedDict()  # pair -> last correct login, oldest first

    def __len__(self) -> int:
        """How many keys are held (charger-host pairs and hosts with failures, pairs known good)."""
        return len(self._chargers) + len(self._hosts) + len(self._good)

    def refusal(self, charger_id: str, host: str, now_s: float) -> Refusal | None:
        """The lockout an attempt by `charger_id` from `host` falls under at `now_s`, or None: check its password."""
        for scope, table, key in (("host", self._hosts, host), ("charger", self._chargers, (charger_id, host))):
            count = table.get(key)
            if count is None or count.locked_until is None:
                continue
            if now_s < count.locked_until:
                if scope == "host" and self._known_good(charger_id, host, now_s):
                    continue
                return Refusal(scope, max(1, math.ceil(count.locked_until - now_s)), count.locked_after)
            # The lockout is over. Failures counted meanwhile (by known-good chargers let in) still count.
            count.locked_until, count.locked_after = None, 0
            if not count.failures:
                del table[key]
        return None

    def failed(self, charger_id: str, host: str, now_s: float) -> Refusal | None:
        """Count a wrong or missing password; the lockout this failure starts, if it starts one."""
        by_pair = self._count_failure("charger", self._chargers, (charger_id, host), self.max_charger_failures, now_s)
        by_host = self._count_failure("host", self._hosts, host, self.max_host_failures, now_s)
        return by_host or by_pair  # the host's lockout covers the pair's: report the wider one

    def _count_failure(
        self, scope: Literal["charger", "host"], table: dict, key: object, limit: int, now_s: float
    ) -> Refusal | None:
        count = self._count(table, key, now_s)
        while count.failures and count.failures[0] <= now_s - self.window_s:
            count.failures.popleft()
        count.failures.append(now_s)
        if len(count.failures) < limit:
            return None
        count.locked_until, count.locked_after = now_s + self.lockout_s, len(count.failures)
        count.failures.clear()
        return Refusal(scope, max(1, math.ceil(self.lockout_s)), count.locked_after)

    def unknown_id(self, host: str, now_s: float) -> Refusal | None:
        """Count an attempt with a charger id that is not the square's, towards `host`'s lockout only (the
        id has nothing to guard); the lockout this attempt starts, if it starts one."""
        return self._count_failure("host", self._hosts, host, self.max_host_failures, now_s)

    def succeeded(self, charger_id: str, host: str, now_s: float) -> None:
        """A correct password from `host`: its counts (the host's, and this charger's from it) start afresh.

        A lockout of the host in force stays: the charger was let in as known good, and the ids
        that were being guessed stay locked out. The pair is known good for `known_good_s` from now.
        """
        pair = (charger_id, host)
        self._chargers.pop(pair, None)
        count = self._hosts.get(host)
        if count is not None and (count.locked_until is None or count.locked_until <= now_s):
            del self._hosts[host]
        elif count is not None:
            count.failures.clear()
        if self.known_good_s > 0:
            self._good[pair] = now_s
            self._good.move_to_end(pair)
            while len(self._good) > self.max_entries:
                self._good.popitem(last=False)

    def _known_good(self, charger_id: str, host: str, now_s: float) -> bool:
        """True when the charger logged in correctly from `host` within `known_good_s` before `now_s`."""
        pair = (charger_id, host)
        at = self._good.get(pair)
        if at is None:
            return False
        if now_s - at < self.known_good_s:
            return True
        del self._good[pair]
        return False

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
