"""The checks per idempotency key, over its run rows (creation order) and its requests (send
order): duplicates, concurrency, retries, the log against the rows, sends after a change."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .check_rows import (
    EPS,
    Violation,
    in_flight_together,
    max_skew,
    unhealthy,
)


def duplicates_of(runs: list[Any], sent: list[Any]) -> list[Violation]:
    out = []
    replied = {r.run_row_id: r for r in sent if r.status == "success"}
    done = None  # the request whose success was recorded
    for run in runs:
        if run.status != "success":
            continue
        if done is not None:
            out.append(
                Violation(
                    "duplicate",
                    run.schedule_id,
                    f"two success rows for {run.idempotency_key}",
                    run.scheduled_for,
                )
            )
        elif run.id in replied:
            done = replied[run.id]
    if done is not None:
        for req in sent:
            if req is not done and req.seq > done.end_seq:
                out.append(
                    Violation(
                        "duplicate",
                        req.schedule_id,
                        f"{req.key} sent again (event {req.seq}) after its success "
                        f"(event {done.end_seq})",
                        req.slot,
                    )
                )
    return out


def concurrent_of(result: Any, key: str, sent: list[Any]) -> list[Violation]:
    return [
        Violation(
            "concurrent",
            second.schedule_id,
            f"{key} attempt {second.attempt} sent by {second.replica} at "
            f"{second.at:.3f} while {first.replica}'s was in flight",
            second.slot,
        )
        for first, second in in_flight_together(sent)
        if not unhealthy(result, first, second)
    ]


def retries(result: Any) -> list[Violation]:
    """The retry check over an in-memory list of requests (`result.requests`)."""
    by_key: dict[str, list[Any]] = defaultdict(list)
    for req in sorted(result.requests, key=lambda r: r.seq):
        by_key[req.key].append(req)
    return [v for key, sent in by_key.items() for v in retries_of(result, key, sent)]


def retries_of(result: Any, key: str, sent: list[Any]) -> list[Violation]:
    out = []
    if not sent:
        return out
    skew = max_skew(result)
    by_attempt: dict[int, list[Any]] = defaultdict(list)
    for req in sent:
        by_attempt[req.attempt].append(req)
    sid = sent[0].schedule_id
    spec = result.specs.get(sid)
    if spec is None:
        return out
    allowed = 1 + result.max_retries.get(sid, spec.max_retries)
    if max(by_attempt) > allowed:
        out.append(Violation("retries", sid, f"{key}: attempt {max(by_attempt)} > {allowed}"))
    for n, reqs in sorted(by_attempt.items()):
        prev = by_attempt.get(n - 1)
        if not prev or prev[-1].end_seq is None:
            continue
        before, first = prev[-1], reqs[0]
        # A retry is due at a wall time the holder computes from its own now when it records
        # the outcome. A wall-clock step between the reply and that moment moves the due time
        # but not the reply's stamp: a forward step shows as a long wall wait (short on the
        # monotonic clock), a backward one as a negative wall wait (the real wait is the
        # monotonic one). A retry sent too soon is too soon on both clocks.
        waited = max(first.at - before.end_at, first.mono - before.end_mono)
        base = min(3600.0, spec.retry_delay_seconds * 2 ** (n - 2)) * 0.9
        if before.retry_after is not None:  # the target asked for at least this long
            base = max(base, before.retry_after)
        if waited < base - skew - EPS:
            out.append(
                Violation(
                    "retries",
                    sid,
                    f"{key}: attempt {n} sent {waited:.3f}s "
                    f"after attempt {n - 1} ended, sooner than {base:.1f}s",
                )
            )
    return out


def log_mismatch_of(result: Any, runs: list[Any], sent: list[Any]) -> list[Violation]:
    """The runs table against the target's log. A request's run row carries the request's key,
    so one key's rows are enough: a request whose row is not among them has no matching row."""
    out = []
    runs_by_id = {run.id: run for run in runs}
    for req in sent:
        run = runs_by_id.get(req.run_row_id)
        if run is None or run.attempt != req.attempt:
            out.append(
                Violation(
                    "log_mismatch",
                    req.schedule_id,
                    f"request {req.key} attempt {req.attempt} has no matching run row",
                    req.slot,
                )
            )
        elif (
            req.status is not None
            and not req.cancelled
            and run.status not in (req.status, "lease_lost")
            # the holder died with the reply in hand: the row waits for its re-delivery
            and not (run.status == "running" and req.replica in result.crash_seq)
        ):
            out.append(
                Violation(
                    "log_mismatch",
                    req.schedule_id,
                    f"target answered {req.status}, run row says {run.status}",
                    req.slot,
                )
            )
    sent_rows = {req.run_row_id for req in sent}
    for run in runs:
        dispatched = run.status in ("success", "timeout") or (
            run.status == "failed" and "cannot plan" not in (run.error or "")
        )
        if dispatched and run.id not in sent_rows:
            out.append(
                Violation(
                    "log_mismatch",
                    run.schedule_id,
                    f"run row {run.id} is {run.status} but the target never saw it",
                    run.scheduled_for,
                )
            )
    return out


def after_change_of(result: Any, sent: list[Any]) -> list[Violation]:
    out = []
    if not sent:
        return out
    changes = [
        c
        for c in result.changes
        if c.schedule_id == sent[0].schedule_id and c.kind in ("disable", "delete", "enable")
    ]
    if not changes:
        return out
    for req in sent:
        last = None  # the last disable/delete/enable that committed before this attempt started
        started = req.seq if req.started is None else req.started
        for c in changes:
            if c.seq < started:
                last = c
        if last is not None and last.kind != "enable":
            out.append(
                Violation(
                    "after_change",
                    req.schedule_id,
                    f"{req.key} started (event {started}) after the {last.kind} (event {last.seq})",
                    req.slot,
                )
            )
    return out
