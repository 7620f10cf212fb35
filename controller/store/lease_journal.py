"""The lease journal: before a lease goes out, the most its charger may then hold is on disk.

After a crash, a kill or a power cut the daemon starts without its lease book. What a charger may
still draw on a connector is then bounded by what was written here: the highest limit sent for the
connector's transaction, until its lease (and one more, so that renewals need no write) runs out.
A lease that goes above the bound's limit waits for a durable write (synchronous=FULL). One that
stays within it goes out at once: a decrease is never held up by the disk; if it runs past the
bound's end, the bound is extended after sending. A lease at or below the safe default needs no
bound at all: a restarted daemon counts every connector at least at its safe default.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta
from typing import Protocol

from controller.store.runs import LeaseBound
from drivers.contract.orders import SCHEDULE_LEAD_S, Order

log = logging.getLogger("laadplein.leases")


class LeaseBoundStore(Protocol):
    """What the journal needs of the store's lease bounds (`controller.store.runs.LeaseBounds`)."""

    async def put(self, bound: LeaseBound, at: datetime) -> None: ...

    async def lower(self, key: str, tx_id: int, limit_a: float) -> None: ...

    async def drop(self, key: str, tx_id: int) -> None: ...


class LeaseStore(Protocol):
    """What the journal needs of the store: its lease bounds."""

    @property
    def leases(self) -> LeaseBoundStore: ...


class LeaseJournal:
    """The lease bounds on disk, with a copy in memory to know when a lease needs a write."""

    def __init__(self, store: LeaseStore, lease_s: float, restored: dict[str, LeaseBound] | None = None) -> None:
        self.store = store
        self.lease_s = lease_s
        self.restored: dict[str, LeaseBound] = dict(restored or {})  # as found at start, for the power control
        self._bounds: dict[str, LeaseBound] = dict(self.restored)

    def bound(self, key: str) -> LeaseBound | None:
        """The bound on record for a connector, None without one."""
        return self._bounds.get(key)

    def _lease_end(self, sent_at: datetime) -> datetime:
        return sent_at + timedelta(seconds=self.lease_s - SCHEDULE_LEAD_S)

    def _current(self, key: str, tx_id: int, at: datetime) -> LeaseBound | None:
        old = self._bounds.get(key)
        return old if old is not None and old.tx_id == tx_id and old.ends_at > at else None

    async def before_send(
        self, order: Order, charger_id: str, connector_id: int, tx_id: int, sent_at: datetime, safe_default_a: float,
    ) -> bool:
        """Make sure the bound on disk allows `order`, sent at `sent_at`, before it goes out; False
        when it could not be written and the lease must not go out."""
        old = self._current(order.key, tx_id, sent_at)
        if old is not None and order.limit_a <= old.limit_a:
            return True  # within the bound's limit: at once (its end is seen to in after_send)
        limit_a = order.limit_a if old is None else max(old.limit_a, order.limit_a)
        ends_at = self._lease_end(sent_at) + timedelta(seconds=self.lease_s)
        bound = LeaseBound(order.key, charger_id, connector_id, tx_id, limit_a, ends_at)
        try:
            await self.store.leases.put(bound, sent_at)
        except (sqlite3.Error, OSError) as exc:
            if order.limit_a <= safe_default_a:
                log.error("%s: could not write the lease of %.1f A down (%s); sent anyway (not above the safe default)",
                          order.key, order.limit_a, exc)
                return True
            log.error("%s: could not write the lease of %.1f A down (%s); it is not sent", order.key, order.limit_a, exc)
            return False
        self._bounds[order.key] = bound
        return True

    async def after_send(self, order: Order, charger_id: str, connector_id: int, tx_id: int, sent_at: datetime) -> None:
        """The lease went out: extend the bound's end if the lease runs past it (a renewal or a
        decrease that was sent without waiting for the disk)."""
        old = self._bounds.get(order.key)
        if old is None or old.tx_id != tx_id or self._lease_end(sent_at) <= old.ends_at:
            return
        limit_a = max(old.limit_a, order.limit_a) if old.ends_at > sent_at else order.limit_a
        bound = LeaseBound(order.key, charger_id, connector_id, tx_id, limit_a,
                           self._lease_end(sent_at) + timedelta(seconds=self.lease_s))
        try:
            await self.store.leases.put(bound, sent_at)
        except (sqlite3.Error, OSError) as exc:
            log.error("%s: could not extend the lease bound on disk (%s)", order.key, exc)
            return
        self._bounds[order.key] = bound

    async def accepted(self, order: Order, tx_id: int) -> None:
        """The charger accepted `order`: it replaced whatever lease the connector held before."""
        old = self._bounds.get(order.key)
        if old is None or old.tx_id != tx_id or order.limit_a >= old.limit_a:
            return
        self._bounds[order.key] = LeaseBound(old.key, old.charger_id, old.connector_id, tx_id, order.limit_a, old.ends_at)
        try:
            await self.store.leases.lower(order.key, tx_id, order.limit_a)
        except (sqlite3.Error, OSError) as exc:  # the higher bound stays on disk: over-counting is safe
            log.warning("%s: could not lower the lease bound on disk (%s)", order.key, exc)

    async def ended(self, key: str) -> None:
        """The connector holds no lease any more (taken back, or its session ended)."""
        old = self._bounds.pop(key, None)
        if old is None:
            return
        try:
            await self.store.leases.drop(key, old.tx_id)
        except (sqlite3.Error, OSError) as exc:
            log.warning("%s: could not drop the lease bound on disk (%s)", key, exc)
