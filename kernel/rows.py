"""Rows <-> values for the SQL stores: schedule and run rows to the kernel's dataclasses and
back, with JSON columns encoded once here. Any DB-API row that maps names to values works."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields as dc_fields
from typing import Any, Protocol

from .model import Schedule, ScheduleRun

# Columns of later schemas: a row of an older schema (a file opened read-only) lacks them and
# reads them as None. `disabled_reason` (schema 3) is the kernel's to write, when it quarantines
# a row; `user_id` (schema 4) is written when a schedule has an owner.
LATER_COLUMNS = ("disabled_reason", "user_id")
# Columns every new schedule row is written with.
SCHEDULE_COLUMNS = [f.name for f in dc_fields(Schedule) if f.name not in LATER_COLUMNS]
RUN_COLUMNS = [f.name for f in dc_fields(ScheduleRun)]


class Row(Protocol):
    """A row as the stores' drivers give it, its values by column name (sqlite3.Row, a psycopg
    dict row); a column it lacks raises KeyError or IndexError."""

    def __getitem__(self, column: str, /) -> Any: ...


def json_dump(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):  # circular, or a key JSON cannot hold: keep it readable
        return json.dumps(repr(value)[:65_536])


def schedule_values(schedule: Schedule) -> dict[str, Any]:
    """A new row's column values (payload as JSON text); the owner only when there is one."""
    values = {name: getattr(schedule, name) for name in SCHEDULE_COLUMNS}
    values["payload"] = json_dump(values["payload"])
    if schedule.user_id is not None:
        values["user_id"] = schedule.user_id
    return values


def json_load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class UndecodableRow(ValueError):
    """A stored row the kernel cannot turn back into values (written by another tool, or by hand):
    the claim quarantines it instead of failing for every schedule."""


def _payload(text: str | None) -> Any:
    try:
        payload = json_load(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past Python's stack
        raise UndecodableRow(f"payload is not valid JSON: {type(exc).__name__}: {exc}") from None
    if payload is not None and not isinstance(payload, dict):
        raise UndecodableRow(f"payload is a JSON {type(payload).__name__}, not an object")
    return payload


def _by_name(row: Any) -> Mapping[str, Any]:
    """The row as a dict. A sqlite3.Row finds a name by scanning its columns, so ~50 look-ups
    by name cost more than pairing its keys with its values once. (Any: a Row as the drivers
    give it, which the Row protocol types only by its look-up.)"""
    if isinstance(row, dict):
        return row
    if isinstance(row, Mapping):
        return dict(row)
    return dict(zip(row.keys(), row, strict=True))


def to_schedule(row: Row, *, strict: bool = True) -> Schedule:
    """A schedule row as a Schedule. strict (what a claim needs: the payload is sent): a payload
    that cannot be decoded raises UndecodableRow. Not strict (reads for people and the manager):
    such a payload reads as None and the reason shows as disabled_reason, so the row can be
    listed, shown and repaired."""
    named = _by_name(row)
    values = {name: named[name] for name in SCHEDULE_COLUMNS}
    for name in LATER_COLUMNS:  # a row of a schema before the column's reads it as None
        values[name] = named.get(name)
    try:
        values["payload"] = _payload(values["payload"])
    except UndecodableRow as exc:
        if strict:
            raise
        values["payload"] = None
        values["disabled_reason"] = values["disabled_reason"] or str(exc)
    values["enabled"] = bool(values["enabled"])
    return Schedule(**values)


def _lenient_json(text: str | None) -> Any:
    """History columns (a run's input and output) are for reading: JSON that does not decode is
    shown as the stored text rather than failing the read (or a claim) that meets it."""
    try:
        return json_load(text)
    except (ValueError, RecursionError):
        return text


def to_run(row: Row) -> ScheduleRun:
    named = _by_name(row)
    values = {name: named[name] for name in RUN_COLUMNS}
    values["input"] = _lenient_json(values["input"])
    values["output"] = _lenient_json(values["output"])
    return ScheduleRun(**values)


def run_params(run: ScheduleRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "schedule_id": run.schedule_id,
        "attempt": run.attempt,
        "scheduled_for": run.scheduled_for,
        "trigger": run.trigger,
        "status": run.status,
        "idempotency_key": run.idempotency_key,
        "due_at": run.due_at,
        "run_id": run.run_id,
        "session_id": run.session_id,
        "error": run.error,
        "replica": run.replica,
        "lease_version": run.lease_version,
        "reclaim": run.reclaim,
        "triggered_at": run.triggered_at,
        "completed_at": run.completed_at,
        "input": json_dump(run.input),
        "created_at": run.created_at,
    }


def schedule_filter(
    enabled: bool | None,
    user_id: str | None,
    param: Callable[[str], str],
    name_contains: str | None = None,
    contains: str = "",
) -> tuple[str, dict[str, Any]]:
    """The WHERE of a schedule list or count, for either store: `param(name)` is the dialect's
    placeholder (":name" in SQLite, "%(name)s" in psycopg) and `contains` its test that the name
    holds a substring in any case, with `{needle}` where the placeholder goes."""
    terms: list[str] = []
    args: dict[str, Any] = {}
    if name_contains:
        terms.append(contains.format(needle=param("needle")))
        args["needle"] = name_contains
    if enabled is not None:
        terms.append(f"enabled = {param('enabled')}")
        args["enabled"] = bool(enabled)
    if user_id is not None:
        terms.append(f"user_id = {param('user_id')}")
        args["user_id"] = user_id
    return (" WHERE " + " AND ".join(terms) if terms else ""), args
