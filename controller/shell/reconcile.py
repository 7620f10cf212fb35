"""Sessions that ended while the gateway did not see it, closed by the gateway itself.

A charger queues its StopTransaction while the gateway is down and sends it first on reconnecting;
but a charger may lose it (a reboot, a full queue), or start a new transaction on the connector
first. Such a session is closed at its last meter reading with the stop reason `Reconciled`, an
event says why, and a StopTransaction that still arrives replaces the gateway's guess.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from drivers.contract.words import AVAILABLE, FINISHING

if TYPE_CHECKING:
    from controller.shell.state import SquareState

RECONCILE_AFTER_S = 60.0
"""How long a connector with an open session must be reported free, by a charger connected that
long, before the gateway closes the session itself (a charger sends its queued StopTransaction
within seconds of reconnecting)."""
FREE_STATUSES = frozenset({AVAILABLE, FINISHING})
"""OCPP 1.6 statuses in which a connector has no running transaction (Finishing: it has stopped).
Not Preparing: some chargers start the transaction at the badge and stay Preparing until the car
takes current."""


async def reconcile_sessions(state: SquareState, now: datetime, after_s: float = RECONCILE_AFTER_S) -> None:
    """Close open sessions whose connector the charger has reported free for `after_s`, while
    connected at least that long."""
    for cid, c in state.chargers.items():
        if not c.online or c.connected_at is None:
            continue
        for n, conn in c.connectors.items():
            tx = conn.transaction_id
            if tx is None or conn.status not in FREE_STATUSES or conn.status_at is None:
                continue
            # Only a status reported after the gateway learnt of the transaction says it is over:
            # an older one (Available before a slow badge) says nothing about it.
            seen = conn.tx_seen_at
            if seen is None or conn.status_at <= seen:
                continue
            if (now - max(conn.status_at, c.connected_at)).total_seconds() >= after_s:
                await state.close_unseen(
                    cid, n, tx, conn.status_at,
                    f"the charger reports it {conn.status} and sent no StopTransaction within {after_s:.0f} s",
                )
