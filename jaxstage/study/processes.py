"""A study over several processes: every process runs the study's sweeps (collectives),
but only process 0 touches its files (:mod:`jaxstage.distributed`).

Every step that may refuse (a folder check) or that writes (the journal, the folder) is
an *agreement*: :func:`agreed` runs it and then every process learns whether it failed
anywhere, so a refusal on one process stops every process at once instead of leaving the
others waiting in their next collective until the heartbeat timeout. The agreement is a
collective, so it is also a barrier: what process 0 wrote in :func:`on_main` is complete
when any process goes on and reads it.

In a single process both are plain calls: nothing is added and errors pass unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from jaxstage import distributed

__all__ = ["agreed", "on_main"]

T = TypeVar("T")


def agreed(step: Callable[[], T], what: str) -> T:
    """``step()`` on this process, then wait for every process to finish its own.

    Every process must call it at the same point (it is a collective). When ``step``
    raises on some process, it raises on every one: its own error where it failed, a
    :class:`ValueError` naming ``what`` on the others.
    """
    if distributed.process_count() == 1:
        return step()
    failed: Exception | None = None
    try:
        value = step()
    except Exception as error:  # noqa: BLE001 - re-raised below, once all processes know
        failed = error
    if distributed.agreed_min(int(failed is None)) == 0:
        if failed is not None:
            raise failed
        raise ValueError(
            f"another process failed to {what} (its error is on its own stderr); "
            "this process stops with it"
        )
    return value


def on_main(action: Callable[[], T], what: str) -> T | None:
    """``action()`` on process 0 only (a write, or a check that writes, such as a probe
    folder); the others wait for it and fail with it. Returns its value on process 0,
    ``None`` on the others. Every process must call it (it is a collective), and
    ``action`` must run no collective: it runs on process 0 alone."""
    return agreed(lambda: action() if distributed.is_main_process() else None, what)
