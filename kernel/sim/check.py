"""The invariant checker of a simulated run: what the lease algorithm promises, checked against
the target's own request log, the runs table and the schedule rows. Used by `simulation.py` and
by tests; each check can fail (the tests break the kernel on purpose to prove it).

  duplicate        a slot (idempotency key) has two success rows, or is sent after its success
  concurrent       two requests for one slot in flight at once while the first held its lease
  overlap          two requests of one schedule in flight at once, overlap policy not `allow`
  lost             a slot before the schedule's cursor neither fired nor recorded skipped
  skipped          a slot skipped against its policy (wrong policy, or not late / not overlapped)
  trigger_lost     a trigger that never became a run
  stuck            an enabled schedule due long ago that no replica took up
  retries          more attempts than 1 + max_retries, or a retry sooner than its delay
  log_mismatch     the runs table and the target's log disagree
  lease_outlived   a dead replica's lease not ending lease_seconds after a write it made alive
  orphaned         an attempt of a dead replica never taken over (still running at the end)
  after_change     a request sent for an attempt started after a disable or delete committed
  dst              a wall-clock cron slot fired twice in one local day, or a slot off the series

It streams: the target's log and the runs table are read from SQLite (`result.db`: tables
`requests` and `started`, a view `runs`) in pages of PAGE rows, each pass sorted so that what a
check compares arrives together: by idempotency key (duplicates, concurrency, retries, the log
against the rows, changes), by send order per schedule (overlap), by slot per schedule (lost,
DST) and by wall time per schedule (skips). What a check carries from one page to the next is
bounded (one key's rows, the requests in flight, a day of DST slots), so memory does not grow
with the length of the run.

This file runs the passes; the checks are in `check_keys.py` (per idempotency key),
`check_schedules.py` (per schedule) and `check_liveness.py` (what must have happened did), on
the rows and stream of `check_rows.py`.
"""

from __future__ import annotations

from typing import Any

from .check_keys import (
    after_change_of,
    concurrent_of,
    duplicates_of,
    log_mismatch_of,
    retries_of,
)
from .check_liveness import leases, orphans, stuck, triggers
from .check_rows import (
    KINDS,
    PAGE,
    RUN_COLUMNS,
    RunRow,
    Sent,
    Violation,
    merge,
    stream,
)
from .check_schedules import by_slot, overlaps, skips
from .target import REQUEST_COLUMNS

__all__ = ["KINDS", "PAGE", "RUN_COLUMNS", "Violation", "check_run"]


def check_run(result: Any, behaviours: dict[str, Any] | None = None) -> list[Violation]:
    """All violations of a SimResult, in a stable order: by kind (KINDS), then by schedule and
    time within a kind."""
    found: dict[str, list[Violation]] = {kind: [] for kind in KINDS}

    def add(violations: list[Violation]) -> None:
        for v in violations:
            found[v.kind].append(v)

    db = result.db
    for (_, key), runs, sent in merge(
        stream(db, RunRow, f"SELECT ord, {', '.join(RUN_COLUMNS)} FROM runs "
                "ORDER BY schedule_id, idempotency_key, ord"),
        stream(db, Sent, f"SELECT {', '.join('q.' + c for c in REQUEST_COLUMNS)}, s.seq "
                "FROM requests AS q LEFT JOIN started AS s USING (run_row_id) "
                "ORDER BY q.schedule_id, q.key, q.seq"),
        lambda run: (run.schedule_id, run.idempotency_key),
        lambda req: (req.schedule_id, req.key),
    ):  # fmt: skip
        add(duplicates_of(runs, sent))
        add(concurrent_of(result, key, sent))
        add(retries_of(result, key, sent))
        add(log_mismatch_of(result, runs, sent))
        add(after_change_of(result, sent))
    add(overlaps(result, db))
    add(by_slot(result, db))
    add(skips(result, db))
    add(triggers(result, db))
    add(stuck(result))
    add(leases(result))
    add(orphans(result))
    return [v for kind in KINDS for v in found[kind]]
