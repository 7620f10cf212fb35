"""Lease bookkeeping: what each connector was told, what is in force now, and which profiles to send.

Pure (times are arguments): the daemon's cycle and the day simulation use the same book. A lease is
a TxProfile of `lease_s`; when its limit relies on the battery, its first period ends before the
battery's own revert timeout and the second holds the grid-only share (control.md, "Leases").
Decreases go out at once; a rise only when at least `min_rise_a` and at most once per
`rise_every_s` per connector (chargers' flash); a lease is renewed before its first period ends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from controller.core.sharing_types import Sharing
from drivers.contract.orders import SCHEDULE_LEAD_S, Order

SETTLED_MARGIN_A = 0.5
"""A decrease has shown in the meter values once the car draws at most the new limit plus this."""
CHANGE_EPS_A = 0.05


@dataclass(frozen=True)
class ConnectorState:
    """What the sharing core needs to know of a connector's limit and turn (A, UTC times)."""

    in_force_a: float
    settling_from_a: float | None
    changed_at: datetime | None
    running_since: datetime | None = None
    paused_since: datetime | None = None
    resume_offered_at: datetime | None = None




@dataclass(frozen=True)
class _Lease:
    limit_a: float
    grid_only_a: float
    sent_at: datetime
    first_end: datetime
    ends_at: datetime


@dataclass
class _Entry:
    safe_default_a: float = 0.0
    lease: _Lease | None = None
    pending: tuple[Order, datetime, float] | None = None  # order, sent at, what was in force before
    unknown: _Lease | None = None  # an answer that never came: the charger may hold it
    raised_at: datetime | None = None
    settling_from_a: float | None = None
    settling_since: datetime | None = None
    changed_at: datetime | None = None
    running_since: datetime | None = None
    paused_since: datetime | None = None
    resume_offered_at: datetime | None = None


class LeaseBook:
    """Per connector (key "CP01/1"): the lease in force, the one on its way, the turn state."""

    def __init__(
        self,
        *,
        lease_s: float,
        reaction_s: float,
        min_rise_a: float = 1.0,
        rise_every_s: float = 10.0,
        battery_revert_s: float | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.lease_s = lease_s
        self.reaction_s = reaction_s
        self.min_rise_a = min_rise_a
        self.rise_every_s = rise_every_s
        self.battery_revert_s = battery_revert_s
        self.poll_s = poll_s
        self._entries: dict[str, _Entry] = {}

    # ---- state for the core -------------------------------------------------------------------

    def _entry(self, key: str) -> _Entry:
        return self._entries.setdefault(key, _Entry())

    def set_safe_default(self, key: str, safe_default_a: float) -> None:
        """The connector's safe default (A): in force wherever no lease gives a limit."""
        self._entry(key).safe_default_a = safe_default_a

    def safe_default_a(self, key: str) -> float:
        """The connector's safe default (A)."""
        return self._entry(key).safe_default_a

    def lease_limit_a(self, key: str, now: datetime) -> float | None:
        """The limit its lease holds now (A), None without a lease in force."""
        lease = self._entry(key).lease
        return None if lease is None else _lease_limit(lease, now)

    def lease_ends_at(self, key: str) -> datetime | None:
        """When the connector's lease runs out, None without one."""
        lease = self._entry(key).lease
        return None if lease is None else lease.ends_at

    def in_force_a(self, key: str, now: datetime) -> float:
        """What the charger may draw on this connector now (A), for the fuse: the higher of every
        limit it may hold (the lease, one on its way, one whose answer never came)."""
        e = self._entry(key)
        limits = [_lease_limit(e.lease, now) if e.lease is not None else None]
        if e.unknown is not None:
            limits.append(_lease_limit(e.unknown, now))
        if e.pending is not None:
            order, _, _ = e.pending
            limits.append(order.limit_a)
        known = [a for a in limits if a is not None]
        if e.lease is None or _lease_limit(e.lease, now) is None:
            known.append(e.safe_default_a)
        return max(known)

    def connector_state(
        self, key: str, now: datetime, draw_a: float | None, draw_at: datetime | None = None
    ) -> ConnectorState:
        """The connector's limit in force and turn state at `now`, given its latest draw (A).

        A decrease keeps counting at the old limit until the car's draw shows it (a sample taken
        after the decrease was sent, when `draw_at` is given) or `reaction_s` has passed.
        """
        e = self._entry(key)
        in_force_a = self.in_force_a(key, now)
        if e.settling_from_a is not None:
            since = e.settling_since or now
            # A decrease smaller than the margin cannot show within it: a car still at its old limit
            # would pass for settled (and the battery would stop covering it while the charger reacts).
            margin_a = min(SETTLED_MARGIN_A, (e.settling_from_a - in_force_a) / 2)
            shown = draw_a is not None and draw_a <= in_force_a + margin_a and (
                draw_at is None or draw_at > since
            )
            if shown or (now - since).total_seconds() >= self.reaction_s or e.settling_from_a <= in_force_a:
                e.settling_from_a, e.settling_since = None, None
        return ConnectorState(
            in_force_a=in_force_a,
            settling_from_a=e.settling_from_a,
            changed_at=e.changed_at,
            running_since=e.running_since,
            paused_since=e.paused_since,
            resume_offered_at=e.resume_offered_at,
        )

    def remember(self, sharing: Sharing, now: datetime) -> None:
        """Keep the turn state of this decision for the next cycle."""
        for d in sharing.connectors:
            e = self._entry(d.key)
            e.running_since, e.paused_since, e.resume_offered_at = d.running_since, d.paused_since, d.resume_offered_at

    # ---- what to send -------------------------------------------------------------------------

    def orders(self, sharing: Sharing, now: datetime, leasable: set[str] | None = None) -> list[Order]:
        """The leases to send now for this decision (only for keys in `leasable`, when given).

        Each order is marked as on its way at once: until `sent` records the answer, the connector
        counts at the higher of its old and new limit.
        """
        out: list[Order] = []
        for d in sharing.connectors:
            if leasable is not None and d.key not in leasable:
                continue
            e = self._entry(d.key)
            if e.pending is not None:
                continue  # one call at a time per connector; the answer decides what comes next
            order = self._order_for(e, d.key, d.limit_a, d.grid_only_a, now)
            if order is not None:
                e.pending = (order, now, self.in_force_a(d.key, now))
                out.append(order)
        return out

    def _order_for(self, e: _Entry, key: str, limit_a: float, grid_only_a: float, now: datetime) -> Order | None:
        grid_only_a = min(grid_only_a, limit_a)
        current_a = self.in_force_a(key, now)
        if e.lease is None:
            if limit_a > current_a + CHANGE_EPS_A and not self._may_rise(e, now):
                limit_a, grid_only_a = current_a, min(grid_only_a, current_a)
            return self._order(key, limit_a, grid_only_a, "first")
        if limit_a < current_a - CHANGE_EPS_A:
            return self._order(key, limit_a, grid_only_a, "decrease")
        if limit_a >= current_a + self.min_rise_a and self._may_rise(e, now):
            return self._order(key, limit_a, grid_only_a, "increase")
        if now >= e.lease.first_end - timedelta(seconds=self._renew_margin_s(e.lease)):
            keep_a = min(limit_a, current_a) if limit_a > current_a else limit_a
            return self._order(key, keep_a, min(grid_only_a, keep_a), "renew")
        if self.battery_revert_s is not None and grid_only_a < e.lease.grid_only_a - CHANGE_EPS_A:
            # the grid-only share behind this lease fell: the lease must not promise more after the battery
            return self._order(key, min(limit_a, current_a), grid_only_a, "decrease")
        return None

    def _may_rise(self, e: _Entry, now: datetime) -> bool:
        return e.raised_at is None or (now - e.raised_at).total_seconds() >= self.rise_every_s

    def _order(self, key: str, limit_a: float, grid_only_a: float, why: str) -> Order:
        first_period_s = None
        if grid_only_a < limit_a - CHANGE_EPS_A and self.battery_revert_s is not None:
            # The charger must be back at the grid-only share before the battery reverts (its timer
            # runs from its last write, at most one poll before this), allowing for its reaction.
            first_period_s = max(
                SCHEDULE_LEAD_S + 1.0,
                SCHEDULE_LEAD_S + self.battery_revert_s - self.poll_s - self.reaction_s,
            )
        elif grid_only_a < limit_a - CHANGE_EPS_A:
            grid_only_a = limit_a  # no battery revert to guard against: one period
        return Order(key, limit_a, grid_only_a, why, first_period_s)

    def _renew_margin_s(self, lease: _Lease) -> float:
        length_s = (lease.first_end - lease.sent_at).total_seconds()
        return max(3.0 * self.poll_s, min(30.0, length_s / 3.0))

    def sent(self, order: Order, now: datetime, accepted: bool | None) -> None:
        """Record the charger's answer: True accepted, False refused, None no answer (it may hold it)."""
        e = self._entry(order.key)
        if e.pending is None or e.pending[0] != order:
            return
        _, sent_at, before_a = e.pending
        e.pending = None
        start = sent_at - timedelta(seconds=SCHEDULE_LEAD_S)
        ends_at = start + timedelta(seconds=self.lease_s)
        first_end = ends_at if order.first_period_s is None else min(ends_at, start + timedelta(seconds=order.first_period_s))
        lease = _Lease(order.limit_a, order.grid_only_a, sent_at, first_end, ends_at)
        if accepted is None:
            e.unknown = lease if e.unknown is None or order.limit_a >= (_lease_limit(e.unknown, now) or 0) else e.unknown
            return
        if not accepted:
            return
        e.unknown = None
        e.lease = lease
        e.changed_at = sent_at
        if order.limit_a < before_a - CHANGE_EPS_A:
            e.settling_from_a = max(before_a, e.settling_from_a or 0.0)
            e.settling_since = sent_at
        elif order.limit_a > before_a + CHANGE_EPS_A:
            e.raised_at = sent_at

    def assume_held(self, key: str, limit_a: float, now: datetime, until: datetime) -> None:
        """The charger may hold a lease of up to `limit_a` until `until` that this book never saw (a
        lease sent before a restart): counted until then, or until a new lease is accepted."""
        self._entry(key).unknown = _Lease(limit_a, limit_a, now, until, until)

    def resend(self, key: str) -> None:
        """The charger may have lost the connector's lease (someone cleared or replaced it): renew it at
        the next decision, at no more than it was."""
        e = self._entry(key)
        if e.lease is not None:
            e.lease = replace(e.lease, first_end=e.lease.sent_at)

    def end_session(self, key: str) -> None:
        """The car's session ended: its TxProfile ended with it; the safe default is in force again."""
        e = self._entry(key)
        self._entries[key] = _Entry(safe_default_a=e.safe_default_a)

    def keys(self) -> list[str]:
        """Every connector the book knows, sorted."""
        return sorted(self._entries)


def telling_draw_a(
    draw_a: float | None,
    draw_at: datetime | None,
    changed_at: datetime | None,
    reaction_s: float,
    *,
    lag_s: float = 0.0,
) -> float | None:
    """The car's draw (A) as a sign of what it wants, or None when it was measured before the last
    limit change could show (then it says only what the old limit allowed).

    `lag_s`: how long before `draw_at` (when it was read) the value may have been measured. A value
    read just as the reaction time ends was measured before it: right after a rise it still shows
    the old limit, and the car would be taken for one that draws less than it is given.
    """
    if draw_a is None or draw_at is None or changed_at is None:
        return draw_a
    return None if (draw_at - changed_at).total_seconds() - lag_s < reaction_s else draw_a


def _lease_limit(lease: _Lease, now: datetime) -> float | None:
    if now >= lease.ends_at:
        return None
    return lease.limit_a if now < lease.first_end else lease.grid_only_a
