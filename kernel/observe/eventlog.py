"""A replica's log lines: the Scheduler's on_event hook turned into Python logging records, one
readable line each. Store errors are ERROR (the replica cannot do its work), rate-limited per
operation on the replica's own clock: a dead database would otherwise write a line per poll.
Failed attempts and lost leases are WARNING; everything else is INFO."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ..clock import Clock
from ..fmt import iso_utc, short_id

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


class JsonEventLog:
    """`--log-format json`: one JSON object per line for each fire and finish (and each lost
    lease, store error, skip and re-delivery): `ts`, `event`, `schedule`, `schedule_id`, `slot`,
    `attempt`, `trigger`, `replica`, `run`, and on a finish `status`, `status_code`,
    `duration_ms`, `error`, `retry_at`, `recorded`. Times are ISO 8601 UTC."""

    def __init__(self, out: Callable[[str], None], clock: Clock, *, fires: bool = True):
        self.out = out
        self.clock = clock  # stamps the events that carry no time of their own
        self.fires = fires  # fire and finish lines (the rest is always written)
        self._sent: dict[str, dict[str, Any]] = {}

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "fire":
            self._sent[data["run_row_id"]] = data
            if not self.fires:
                return
            record = {
                "ts": iso_utc(data["at"], ms=True),
                "event": "fire",
                "schedule": data["name"],
                "schedule_id": data["schedule_id"],
                "slot": iso_utc(data["scheduled_for"], ms=True) if data["scheduled_for"] else None,
                "attempt": data["attempt"],
                "trigger": data["trigger"],
                "replica": data["replica"],
                "run": data["run_row_id"],
            }
        elif event == "finish":
            fire = self._sent.pop(data["run_row_id"], {})
            if not self.fires and data["status"] not in _FAILED and data["recorded"]:
                return
            took = (data["at"] - fire["at"]) * 1000 if "at" in fire else None
            record = {
                "ts": iso_utc(data["at"], ms=True),
                "event": "finish",
                "schedule": data.get("name") or fire.get("name"),
                "schedule_id": data["schedule_id"],
                "slot": iso_utc(fire["scheduled_for"], ms=True)
                if fire.get("scheduled_for")
                else None,
                "attempt": data.get("attempt"),
                "trigger": fire.get("trigger"),
                "replica": data["replica"],
                "run": data["run_row_id"],
                "status": data["status"],
                "status_code": data.get("status_code"),
                "duration_ms": round(took, 3) if took is not None else None,
                "error": data.get("error"),
                "retry_at": iso_utc(data["retry_at"], ms=True) if data.get("retry_at") else None,
                "recorded": data["recorded"],
            }
        elif event == "poll":  # one per look at the store: the metrics' business, not a log's
            return
        else:
            record = {"ts": iso_utc(self.clock.now(), ms=True), "event": event, **data}
        self.out(json.dumps(record, ensure_ascii=False, default=str))


class JsonFormatter(logging.Formatter):
    """Log records as one JSON object a line: `ts` (ISO 8601 UTC), `level`, `logger`, `message`
    (with the exception's traceback as `exc_info` when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": iso_utc(record.created, ms=True),
            "event": "log",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def chain(*hooks: Any) -> Any:
    """One on_event hook calling each given hook (None ones left out) in order."""
    live = [h for h in hooks if h is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def on_event(event: str, data: dict[str, Any]) -> None:
        for hook in live:
            hook(event, data)

    return on_event
