"""The store's multi-statement transactions, written once for every database: the lease holder's
(claim, start, heartbeat, finish, a holder's re-read) and the manager's (create, update, enable,
disable, delete, trigger).

Each write is a generator that yields the statements to run, by name in the store's SQL dict
(kernel/sqlite/sql.py, or an adapter's), and receives each answer. A store drives it inside one
transaction, synchronously (sqlite3) or with awaits (an async driver): the decisions, the
fencing and the order of statements are the same everywhere, and only how a statement travels
differs. Read with the SQL file at hand: each statement's comment says which race it closes.

What a store must answer:
  Count(name, params)  run it; the number of rows it changed
  One(name, params)    run it; its first row (a mapping) or None
  All(name, params)    run it; all its rows. A list parameter is an array: bound as one where
                       the driver can (Postgres: = ANY), else as JSON text (SQLite: json_each)
  Many(name, params)   run it once per parameter set (a batch: executemany); no answer
  Update(name, columns, params)  run it with its `{sets}` replaced by `column = <its parameter>`
                       for each of `columns`, in the store's parameter style; rows changed
  Insert(name, params) run it with `{columns}` replaced by the names of `params` and `{values}`
                       by their placeholders (a row of an older schema lacks later columns)
  Lock(ids)            lock these schedule rows until the transaction ends, in id order (a store
                       whose transactions take the whole database's write lock does nothing)
  Notify()             wake other processes' replicas once this transaction commits (a store
                       without a cross-process channel does nothing)
  Batch(steps)         the steps above, in order; a list of their answers. The rows of a batch
                       move in lockstep (see `lockstep`), so a store can run each round's steps
                       of one kind as one set-based statement (SQLite and Postgres: ROUND_SQL)
                       and send the round in one round trip (Postgres: pipeline mode) instead
                       of one per row.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from .model import Schedule, ScheduleRun
from .rows import Row, UndecodableRow, json_dump, run_params, schedule_values, to_run, to_schedule
from .store import Claim, FinishPlan, StartPlan, orphan_places


class Count(NamedTuple):
    name: str
    params: Mapping[str, Any]


class One(NamedTuple):
    name: str
    params: Mapping[str, Any]


class All(NamedTuple):
    name: str
    params: Mapping[str, Any]


class Many(NamedTuple):
    name: str
    params: list[Mapping[str, Any]]


class Update(NamedTuple):
    name: str
    columns: list[str]
    params: Mapping[str, Any]


class Insert(NamedTuple):
    name: str
    params: Mapping[str, Any]


class Batch(NamedTuple):
    steps: list[Any]  # of the step types above


class Lock(NamedTuple):
    ids: list[str]


class Notify(NamedTuple):
    pass


# What a flow yields: one of these, answered by the store (see the module docstring).
Command = Count | One | All | Many | Update | Insert | Lock | Notify | Batch
# A flow yields Commands, is sent each one's answer, and returns its result (a T).
T = TypeVar("T")
Flow = Generator[Command, Any, T]


def _fence(replica: str, schedule_id: str, version: int) -> dict[str, Any]:
    return {"id": schedule_id, "replica": replica, "version": version}


def _release(fence: Mapping[str, Any]) -> Flow[None]:
    """Release a lease (fenced: a no-op on a lost one); a row actually released may be due now
    for anybody, so other replicas are woken."""
    if (yield Count("release", fence)):
        yield Notify()


def start(replica: str, now: float, plans: list[StartPlan]) -> Flow[list[set[str] | None]]:
    """Apply start plans; per plan (in the caller's order) the set of run row ids now running,
    or None if fenced out. Applied in schedule-id order: the lock order of every write."""
    order = sorted(range(len(plans)), key=lambda i: plans[i].schedule_id)
    # Every row of the batch is locked up front, in id order: the plans then move in lockstep
    # without taking a row lock out of order (a fenced-out plan's UPDATE locks nothing, and its
    # release would otherwise lock its row after the others').
    yield Lock([plans[i].schedule_id for i in order])
    started = yield from lockstep([_start_one(replica, now, plans[i]) for i in order])
    results: list[set[str] | None] = [None] * len(plans)
    for index, result in zip(order, started, strict=True):
        results[index] = result
    return results


def _start_one(replica: str, now: float, plan: StartPlan) -> Flow[set[str] | None]:
    fence = _fence(replica, plan.schedule_id, plan.lease_version)
    fired = (
        plan.start_pending or plan.lost_runs or any(r.status == "running" for r in plan.insert_runs)
    )
    if plan.quarantine is not None:
        assert len(plan.insert_runs) == 1  # the failed row saying why (Planner.plan_unplannable)
        yield from quarantine(
            replica,
            now,
            plan.schedule_id,
            plan.lease_version,
            plan.timing_version,
            plan.insert_runs[0],
        )
        return set()
    held = yield Count(
        "start_fence",
        {
            **fence,
            "timing": plan.timing_version,
            "next_run_at": plan.next_run_at,
            "last_run_at": now if fired else None,
        },
    )
    if held != 1:
        # Lease lost, or the timing changed since the claim: start nothing. If the lease is still
        # ours and nothing else runs under it, give it back now rather than at its expiry (the
        # row is locked, so release sees what the last lock holder committed).
        if not plan.keep_lease:
            yield from _release(fence)
        return None
    started: set[str] = set()
    for orphan_id, replacement, error in plan.lost_runs:
        lost = yield Count("lose_orphan", {"id": orphan_id, "now": now, "error": error})
        if lost and replacement is not None:
            yield Count("insert_run", run_params(replacement))
            started.add(replacement.id)
    if plan.insert_runs:  # a catch-up or skip burst may be hundreds of rows: one batch
        yield Many("insert_run", [run_params(run) for run in plan.insert_runs])
        started.update(run.id for run in plan.insert_runs if run.status == "running")
    for run_row_id in plan.start_pending:
        params = {"id": run_row_id, "replica": replica, "version": plan.lease_version, "now": now}
        if (yield Count("start_pending", params)):
            started.add(run_row_id)
    if plan.disable:
        yield Count("disable_one_off", {**fence, "timing": plan.timing_version})
    if not started and not plan.keep_lease:
        yield from _release(fence)
    return started


def new_run_row_id() -> str:
    """A run row id for rows a store writes on its own (a quarantine found in a claim)."""
    return os.urandom(16).hex()


def claim(replica: str, now: float, lease_seconds: float, limit: int) -> Flow[list[Claim]]:
    """Lease up to `limit` due rows (orphans first) and read their waiting and running runs, in
    one transaction; the Claims, in id order (RETURNING's order is unspecified)."""
    params = {
        "replica": replica,
        "now": now,
        "lease_until": now + lease_seconds,
        "limit": limit,
        "orphans": orphan_places(limit),
    }
    rows = yield All("claim", params)
    rows = sorted(rows, key=lambda row: row["id"])
    return (yield from claims_of(rows, replica, now))


def reread_held(replica: str, leases: list[tuple[str, int]]) -> Flow[list[Claim]]:
    """The rows this replica keeps leased (overlap=allow), still held and enabled, as Claims with
    their pending and running runs; a row no longer held is left out."""
    rows = []
    for schedule_id, version in leases:
        row = yield One("held_row", {"id": schedule_id, "replica": replica, "version": version})
        if row is not None:
            rows.append(row)
    return (yield from claims_of(rows))


def claims_of(
    rows: Sequence[Row], replica: str | None = None, now: float = 0.0
) -> Flow[list[Claim]]:
    """Claimed schedule rows as Claims, with their pending and running runs (one query for the
    batch). With `replica` (a claim), a row the kernel cannot decode is quarantined by the steps
    this yields, in the claim's transaction, and comes back as a quarantined Claim: the claim as
    a whole still succeeds and every other row fires. Without (a holder's re-read) it is left
    out, as if no longer held."""
    claims: dict[str, Claim] = {}
    for row in rows:
        try:
            claims[row["id"]] = Claim(to_schedule(row), row["timing_version"], [], [])
            continue
        except UndecodableRow as exc:
            if replica is None:
                continue
            why = f"cannot decode it: {exc}"
        version, timing = row["lease_version"], row["timing_version"]
        run = quarantine_run(
            row["id"], row["next_run_at"], replica, version, now, why, new_run_row_id()
        )
        yield from quarantine(replica, now, row["id"], version, timing, run)
        stub = Schedule(id=row["id"], name=row["name"], endpoint=row["endpoint"])
        claims[row["id"]] = Claim(stub, timing, [], [], quarantined=run.error)
    ids = [sid for sid, claim in claims.items() if claim.quarantined is None]
    if ids:
        for run_row in (yield All("claim_runs", {"ids": ids})):
            run = to_run(run_row)
            claim = claims[run.schedule_id]
            (claim.pending if run.status == "pending" else claim.running).append(run)
    return list(claims.values())


def quarantine_run(
    schedule_id: str,
    scheduled_for: float | None,
    replica: str,
    version: int,
    now: float,
    why: str,
    run_row_id: str,
) -> ScheduleRun:
    """The failed run row that records why a schedule was quarantined."""
    return ScheduleRun(
        id=run_row_id,
        schedule_id=schedule_id,
        attempt=1,
        scheduled_for=scheduled_for,
        trigger="schedule",
        status="failed",
        idempotency_key=f"{schedule_id}@quarantined:{now:.3f}",
        error=f"schedule disabled: {why}"[:2000],
        replica=replica,
        lease_version=version,
        completed_at=now,
        created_at=now,
    )


def quarantine(
    replica: str, now: float, schedule_id: str, version: int, timing: int, run: ScheduleRun
) -> Flow[bool]:
    """Take a row the kernel cannot decode or plan out of the pool, under the lease just taken
    and the timing it was judged by: disabled with the reason (the run row's error) kept beside
    it, its waiting work cancelled, and a failed run row saying why. Returns whether it was."""
    params = {**_fence(replica, schedule_id, version), "timing": timing, "reason": run.error}
    if not (yield Count("quarantine", params)):
        return False
    yield Count("cancel_pending", {"id": schedule_id, "now": now, "reason": run.error})
    yield Count("insert_run", run_params(run))
    return True


def heartbeat(
    replica: str, now: float, lease_seconds: float, leases: list[tuple[str, int]]
) -> Flow[set[str]]:
    """Extend the given leases; returns the ids whose lease was taken over (lost). A row that is
    gone (deleted) is not lost: its attempt finishes and is recorded."""
    ordered = sorted(leases)
    flows = [_renew_one(replica, now + lease_seconds, sid, version) for sid, version in ordered]
    lost = yield from lockstep(flows)
    return {sid for (sid, _), gone in zip(ordered, lost, strict=True) if gone}


def _renew_one(replica: str, lease_until: float, schedule_id: str, version: int) -> Flow[bool]:
    params = {**_fence(replica, schedule_id, version), "lease_until": lease_until}
    if (yield Count("heartbeat", params)):
        return False
    return (yield One("schedule_exists", {"id": schedule_id})) is not None


def finish(replica: str, now: float, plans: list[FinishPlan]) -> Flow[list[bool]]:
    """Record outcomes. Per plan True if the outcome was recorded (this holder still owned the
    attempt); the schedule-side writes are fenced separately on the lease.

    The batch's schedule rows are locked first, in id order: the run row is written before the
    schedule row, and a reclaiming replica's start locks the schedule row before the same run row
    (lose_orphan), so without this the two could deadlock."""
    yield Lock(sorted({plan.schedule_id for plan in plans}))
    # Outcomes of one schedule are written one after the other, in the caller's order (the last
    # attempt's release must see the retries the others queued); schedules move in lockstep.
    by_schedule: dict[str, list[int]] = {}
    for index, plan in enumerate(plans):
        by_schedule.setdefault(plan.schedule_id, []).append(index)
    groups = [by_schedule[sid] for sid in sorted(by_schedule)]
    flows = [_finish_each(replica, now, [plans[i] for i in group]) for group in groups]
    written = yield from lockstep(flows)
    results = [False] * len(plans)
    for group, recorded in zip(groups, written, strict=True):
        for index, ok in zip(group, recorded, strict=True):
            results[index] = ok
    if any(plan.retry is not None for plan in plans):
        yield Notify()
    return results


def _finish_each(replica: str, now: float, plans: list[FinishPlan]) -> Flow[list[bool]]:
    recorded = []
    for plan in plans:
        recorded.append((yield from _finish_one(replica, now, plan)))
    return recorded


def _finish_one(replica: str, now: float, plan: FinishPlan) -> Flow[bool]:
    fence = _fence(replica, plan.schedule_id, plan.lease_version)
    recorded = yield Count(
        "finish_run",
        {
            "id": plan.run_row_id,
            "replica": replica,
            "version": plan.lease_version,
            "status": plan.status,
            "status_code": plan.status_code,
            "run_id": plan.run_id,
            "session_id": plan.session_id,
            "error": plan.error,
            "completed_at": plan.completed_at,
            "duration_ms": plan.duration_ms,
            "output": json_dump(plan.output),
        },
    )
    if recorded != 1:
        return False
    held = yield One("finish_schedule", {**fence, "status": plan.status, "success": plan.success})
    if held is not None:
        state = held if held["enabled"] else None
    elif plan.retry is not None:
        state = yield One("schedule_enabled", {"id": plan.schedule_id})
    else:
        state = None
    if plan.retry is not None and state is not None:
        yield Count("insert_run", run_params(plan.retry))
    if held is None:
        # Lease taken meanwhile (or the schedule deleted): our result is recorded, the new holder
        # owns the row; refresh due_at only if nobody holds it.
        yield Count("refresh_due", {"id": plan.schedule_id, "now": now})
        return True
    timing_unchanged = state is not None and state["timing_version"] == plan.timing_version
    if plan.advance_slot and timing_unchanged:
        yield Count(
            "finish_advance",
            {**fence, "timing": plan.timing_version, "next_run_at": plan.next_run_at},
        )
        if plan.insert_runs:
            yield Many("insert_run", [run_params(run) for run in plan.insert_runs])
    if plan.disable and plan.retry is None:
        yield Count("disable_one_off", {**fence, "timing": plan.timing_version})
    if plan.release:
        yield from _release(fence)
    return True


# -- the manager's writes ----------------------------------------------------------------------

# Columns whose change moves the slot series, so timing_version is bumped with them (why: the
# timing fence, kernel/sqlite/sql.py).
TIMING_COLUMNS = frozenset({"next_run_at", "enabled"})


def create_schedule(schedule: Schedule) -> Flow[None]:
    """Insert a new row, due at its first slot. A name taken fails the INSERT with the database's
    unique violation (the store names it)."""
    values = schedule_values(schedule)
    values["enabled"] = bool(values["enabled"])
    values["due_at"] = schedule.next_run_at if schedule.enabled else None
    yield Insert("insert_schedule", values)
    yield Notify()


def update_schedule(schedule_id: str, fields: Mapping[str, Any], now: float) -> Flow[Row | None]:
    """Apply caller fields (column -> value) under the row's lock; the row as it now is, or None
    if there is none. A disable cancels waiting work in the same transaction; other edits
    (payload, description, retries) leave a run in flight undisturbed. A name taken by another
    row fails the UPDATE with the database's unique violation (the store names it)."""
    yield Lock([schedule_id])
    if (yield One("schedule_state", {"id": schedule_id})) is None:
        return None
    values = dict(fields)
    if "payload" in values:
        values["payload"] = json_dump(values["payload"])
    if "enabled" in values:
        values["enabled"] = bool(values["enabled"])
    bump = int(not TIMING_COLUMNS.isdisjoint(values))
    params = {**values, "id": schedule_id, "now": now, "bump": bump}
    yield Update("update_fields", list(values), params)
    if fields.get("enabled") is False:
        reason = "schedule disabled"
        yield Count("cancel_pending", {"id": schedule_id, "now": now, "reason": reason})
    yield Count("refresh_due", {"id": schedule_id, "now": now})
    yield Notify()
    row: Row | None = yield One("get_schedule", {"id": schedule_id})
    return row


def enable_schedule(schedule_id: str, next_run_at: float | None, now: float) -> Flow[Row | None]:
    """Enable the row from `next_run_at` (the manager's next slot after now), clearing a
    quarantine's reason; the row as it now is, or None if there is none."""
    yield Lock([schedule_id])
    if (yield One("schedule_state", {"id": schedule_id})) is None:
        return None
    yield Count("enable_schedule", {"id": schedule_id, "next_run_at": next_run_at, "now": now})
    yield Count("refresh_due", {"id": schedule_id, "now": now})
    yield Notify()
    row: Row | None = yield One("get_schedule", {"id": schedule_id})
    return row


def disable_schedule(schedule_id: str, now: float) -> Flow[Row | None]:
    """Disable the row and cancel its waiting work in the same transaction; a run in flight
    finishes and is recorded. The row as it now is, or None if there is none."""
    yield Lock([schedule_id])
    if (yield One("schedule_state", {"id": schedule_id})) is None:
        return None
    yield Count("disable_schedule", {"id": schedule_id, "now": now})
    reason = "schedule disabled"
    yield Count("cancel_pending", {"id": schedule_id, "now": now, "reason": reason})
    yield Count("refresh_due", {"id": schedule_id, "now": now})
    yield Notify()
    row: Row | None = yield One("get_schedule", {"id": schedule_id})
    return row


def delete_schedule(schedule_id: str, now: float) -> Flow[bool]:
    """Delete the row and cancel its waiting work; whether there was a row. Run history stays; an
    attempt in flight under a live lease finishes and is recorded on its run row."""
    yield Lock([schedule_id])
    yield Count("cancel_pending", {"id": schedule_id, "now": now, "reason": "schedule deleted"})
    yield Count("lose_unheld", {"id": schedule_id, "now": now})
    deleted: int = yield Count("delete_schedule", {"id": schedule_id})
    # Frees nothing to run, but other replicas may sleep until this row's due time.
    yield Notify()
    return deleted == 1


def add_pending_run(run: ScheduleRun, now: float) -> Flow[None]:
    """Queue durable work (a manual trigger) under the row's lock: LookupError if the schedule is
    gone, PermissionError if it is disabled, checked in the same transaction as the insert."""
    yield Lock([run.schedule_id])
    state = yield One("schedule_state", {"id": run.schedule_id})
    if state is None:
        raise LookupError(f"schedule {run.schedule_id!r} not found")
    if not state["enabled"]:
        raise PermissionError(f"schedule {run.schedule_id!r} is disabled")
    yield Count("insert_run", run_params(run))
    yield Count("refresh_due", {"id": run.schedule_id, "now": now})
    yield Notify()


def lockstep(flows: list[Flow[T]]) -> Flow[list[T]]:
    """Run flows side by side: each round takes the next step of every flow still going and
    yields them as one Batch. Each flow's own steps keep their order; the flows touch disjoint
    rows (one schedule each), so interleaving them changes no outcome. Returns their results."""
    results: list[Any] = [None] * len(flows)  # each a T once its flow is done
    replies: list[Any] = [None] * len(flows)
    going = list(range(len(flows)))
    while going:
        steps, asked = [], []
        for i in going:
            try:
                steps.append(flows[i].send(replies[i]))
                asked.append(i)
            except StopIteration as done:
                results[i] = done.value
        if steps:
            answers = yield Batch(steps)
            for i, answer in zip(asked, answers, strict=True):
                replies[i] = answer
        going = asked
    return results


def run(
    flow: Flow[T],
    answer: Callable[[Command], Any],
    answer_batch: Callable[[list[Command]], list[Any]] | None = None,
) -> T:
    """Drive a flow with a synchronous driver; returns the flow's result. A Batch goes to
    `answer_batch` whole (a store with set-based rounds), or without one is answered step by
    step."""

    def each(step: Command) -> Any:
        if isinstance(step, Batch):
            if answer_batch is not None:
                return answer_batch(step.steps)
            return [answer(inner) for inner in step.steps]
        return answer(step)

    reply = None
    try:
        while True:
            reply = each(flow.send(reply))
    except StopIteration as done:
        result: T = done.value
        return result


async def arun(flow: Flow[T], answer: Callable[[Command], Awaitable[Any]]) -> T:
    """Drive a flow with an async driver, which answers a Batch itself (all its steps); returns
    the flow's result."""
    reply = None
    try:
        while True:
            reply = await answer(flow.send(reply))
    except StopIteration as done:
        result: T = done.value
        return result
