"""Cancellation that survives libraries which swallow it (pymodbus, the `ocpp` library on Python 3.11)."""

from __future__ import annotations

import asyncio


def cancel_count() -> int:
    """How many cancellations of the running task are pending (Task.cancelling)."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def raise_if_cancelled(since: int) -> None:
    """Raise CancelledError when the running task was cancelled after `cancel_count()` gave `since`.

    pymodbus can turn a cancellation that lands inside one of its requests into an error of its
    own, and the `ocpp` library's wait_for can swallow one that arrives with an answer (Python
    3.11); a loop that goes on after that would stop the daemon from shutting down. Counting from
    a base, not from zero: on 3.11 a TaskGroup whose child failed can leave its parent's count raised.
    """
    if cancel_count() > since:
        raise asyncio.CancelledError
