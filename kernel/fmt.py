"""Terminal formatting for the CLI and the demo: times as ISO 8601, short ids, plain tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .cron import load_timezone
from .errors import (
    ValidationError,
)
from .model import Schedule, ScheduleRun

# -- formatting --------------------------------------------------------------------------------


def _out_of_range(ts: float) -> str:
    return f"{ts!r} (out of range)"


def iso_utc(ts: float | None, *, ms: bool = False) -> str:
    """ISO 8601 UTC. A time no calendar can show (a row written by another tool) is printed as
    the number it is: one bad row must not stop a listing of every other."""
    if ts is None:
        return "-"
    try:
        dt = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, ValueError, OSError):
        return _out_of_range(ts)
    if ms:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_local(ts: float | None, tz: str) -> str:
    if ts is None:
        return "-"
    try:
        zone = load_timezone(tz)
    except ValidationError:
        return "?"
    try:
        return datetime.fromtimestamp(ts, zone).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return _out_of_range(ts)


def clock_utc(ts: float | None) -> str:
    """HH:MM:SS.mmm in UTC, for the demo's live lines."""
    if ts is None:
        return "-"
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def short_id(value: str | None, n: int = 8) -> str:
    return value[:n] if value else "-"


def one_line(text: str | None) -> str:
    """`text` on one line, whole: a table's last column may run long, never cut."""
    if not text:
        return "-"
    return " ".join(text.split())


def fmt_seconds(value: float) -> str:
    return f"{value:g}s"


def fmt_duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f}ms" if ms < 10_000 else f"{ms / 1000:.1f}s"


def kind_of(s: Schedule) -> str:
    if s.cron_expr:
        return f"cron {s.cron_expr}"
    if s.interval_seconds:
        return f"every {fmt_seconds(s.interval_seconds)}"
    if s.run_at is not None:
        return f"once at {iso_utc(s.run_at)}"
    return "on demand"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()

    out = [line(cells[0]), line(["-" * w for w in widths])]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def runs_table(runs: Sequence[ScheduleRun], names: dict[str, str]) -> str:
    """Run rows in the order given (callers pass them oldest first, like a log). TIME is when
    the attempt was sent (or the row made, if it never was), SLOT the slot it serves, RUN the
    row's short id (for `show --run`), RUN_ID the target's own run id; the error is whole."""
    rows = [
        (
            iso_utc(r.triggered_at or r.created_at or r.completed_at, ms=True),
            names.get(r.schedule_id, short_id(r.schedule_id)),
            iso_utc(r.scheduled_for, ms=True) if r.scheduled_for is not None else "-",
            r.attempt,
            r.trigger,
            r.status,
            r.status_code,
            fmt_duration(r.duration_ms),
            short_id(r.id),
            r.run_id or "-",
            one_line(r.error),
        )
        for r in runs
    ]
    headers = ("TIME", "SCHEDULE", "SLOT", "ATTEMPT", "TRIGGER", "STATUS", "CODE", "DURATION")
    return table((*headers, "RUN", "RUN_ID", "ERROR"), rows)
