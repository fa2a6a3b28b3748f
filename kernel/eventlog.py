"""A replica's log lines: the Scheduler's on_event hook turned into Python logging records, one
readable line each. Store errors are ERROR (the replica cannot do its work), rate-limited per
operation on the replica's own clock: a dead database would otherwise write a line per poll.
Failed attempts and lost leases are WARNING; everything else is INFO."""

from __future__ import annotations

import logging
from typing import Any

from .clock import Clock
from .fmt import iso_utc, short_id

log = logging.getLogger("leasecron.replica")

STORE_ERROR_EVERY = 60.0  # seconds: at most one line per store operation in this window
_FAILED = ("failed", "timeout")


class ReplicaLog:
    """on_event hook of one replica. `clock` is the scheduler's (a SimClock in tests)."""

    def __init__(
        self,
        clock: Clock,
        *,
        logger: logging.Logger = log,
        store_error_every: float = STORE_ERROR_EVERY,
    ):
        self.clock = clock
        self.logger = logger
        self.store_error_every = store_error_every
        self._names: dict[str, str] = {}  # schedule id -> name, learnt from fire events
        # operation -> (when its last line was written, errors suppressed since, the last one)
        self._store_errors: dict[str, tuple[float, int, str]] = {}

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "fire":
            self._names[data["schedule_id"]] = data["name"]
        elif event == "finish":
            self._finish(data)
        elif event == "lease_lost":
            self.logger.warning(
                "lease lost on schedule %s: %s", self._name(data["schedule_id"]), data["reason"]
            )
        elif event == "store_error":
            self._store_error(data["operation"], data["error"])

    def _name(self, schedule_id: str) -> str:
        name = self._names.get(schedule_id)
        return f"{name} ({short_id(schedule_id)})" if name else schedule_id

    def _finish(self, data: dict[str, Any]) -> None:
        name = data.get("name") or self._name(data["schedule_id"])
        status = data["status"]
        if status in _FAILED:
            reason = data.get("error") or "no error text"
            if data.get("status_code") is not None:
                reason = f"HTTP {data['status_code']}: {reason}"
            then = f"retry at {iso_utc(data['retry_at'])}" if data["retry_at"] else "no retry"
            self.logger.warning(
                "%s: attempt %s %s (%s); %s; run %s",
                name,
                data.get("attempt", "?"),
                status,
                reason,
                then,
                short_id(data["run_row_id"]),
            )
        if not data["recorded"]:
            self.logger.warning(
                "%s: outcome %s of run %s not recorded: the lease was lost (the row is "
                "another replica's now)",
                name,
                status,
                short_id(data["run_row_id"]),
            )

    def _store_error(self, operation: str, error: str) -> None:
        now = self.clock.now()
        last = self._store_errors.get(operation)
        if last is not None and now - last[0] < self.store_error_every:
            self._store_errors[operation] = (last[0], last[1] + 1, error)
            return
        more = ""
        if last is not None and last[1]:
            more = f" ({last[1]} more since {iso_utc(last[0])})"
        self.logger.error("%s%s", error, more)
        self._store_errors[operation] = (now, 0, error)

    def flush(self) -> None:
        """At stop: say how many store errors went unlogged since each operation's last line."""
        for _, (at, suppressed, error) in sorted(self._store_errors.items()):
            if suppressed:
                self.logger.error(
                    "%s (%d more since %s; this was the last)", error, suppressed, iso_utc(at)
                )
        self._store_errors.clear()
