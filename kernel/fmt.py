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

ERROR_WIDTH = 60  # the error column of run tables is cut to this

# -- formatting --------------------------------------------------------------------------------


def iso_utc(ts: float | None, *, ms: bool = False) -> str:
    if ts is None:
        return "-"
    dt = datetime.fromtimestamp(ts, UTC)
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
    return datetime.fromtimestamp(ts, zone).isoformat(timespec="seconds")


def clock_utc(ts: float | None) -> str:
    """HH:MM:SS.mmm in UTC, for the demo's live lines."""
    if ts is None:
        return "-"
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def short_id(value: str | None, n: int = 8) -> str:
    return value[:n] if value else "-"


def cut(text: str | None, limit: int = ERROR_WIDTH) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    rows = [
        (
            iso_utc(r.triggered_at or r.completed_at or r.created_at, ms=True),
            names.get(r.schedule_id, short_id(r.schedule_id)),
            r.attempt,
            r.trigger,
            r.status,
            r.status_code,
            fmt_duration(r.duration_ms),
            r.run_id or "-",
            cut(r.error),
        )
        for r in runs
    ]
    headers = ("TIME", "SCHEDULE", "ATTEMPT", "TRIGGER", "STATUS", "CODE", "DURATION", "RUN_ID")
    return table((*headers, "ERROR"), rows)
