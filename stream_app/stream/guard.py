"""A timer or background task never takes the worker down: it logs, counts, retries next tick.

Faust runs a timer as a task of the app, and an exception that escapes it crashes the whole
worker (a broker outage longer than `list_topics`' timeout did exactly that). `TaskGuard.run`
runs one tick: a failure is counted in `meterwatch_task_failures_total{task=...}` and logged in
one line with its cause — a run of identical failures once, and once more when the task works
again — and the task simply runs at its next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("meterwatch.worker")


class TaskGuard:
    """Runs the ticks of one named task; a failure is counted and logged, never raised."""

    def __init__(self, name: str, failures, interval_s: float | None = None):
        """`failures`: the labelled Prometheus counter; `interval_s`: how often it retries
        (for the log line; None for a task that runs per batch)."""
        self.name, self.failures, self.interval_s = name, failures, interval_s
        self.failed_in_a_row = 0
        self._last_cause: str | None = None

    async def run(self, tick: Callable[[], Awaitable[None]]) -> bool:
        """One tick; True when it succeeded."""
        try:
            await tick()
        except Exception as exc:  # noqa: BLE001 (a timer or background task never stops the worker)
            self.failed(exc)
            return False
        self.succeeded()
        return True

    def failed(self, exc: BaseException) -> None:
        self.failures.labels(self.name).inc()
        self.failed_in_a_row += 1
        cause = f"{type(exc).__name__}: {exc}"
        if cause != self._last_cause:
            when = f"every {self.interval_s:g} s" if self.interval_s else "with the next batch"
            log.warning("%s failed (retried %s): %s", self.name, when, cause)
            self._last_cause = cause

    def succeeded(self) -> None:
        if self.failed_in_a_row:
            log.info("%s works again after %d failed run(s)", self.name, self.failed_in_a_row)
            self.failed_in_a_row, self._last_cause = 0, None
