"""Rows <-> values for the SQL stores: schedule and run rows to the kernel's dataclasses and
back, with JSON columns encoded once here. Any DB-API row that maps names to values works."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields as dc_fields
from typing import Any

from .model import Schedule, ScheduleRun

_SCHEDULE_COLUMNS = [f.name for f in dc_fields(Schedule)]
_RUN_COLUMNS = [f.name for f in dc_fields(ScheduleRun)]


def _json_dump(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):  # circular, or a key JSON cannot hold: keep it readable
        return json.dumps(repr(value)[:65_536])


def _json_load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _to_schedule(row: Mapping[str, Any]) -> Schedule:
    values = {name: row[name] for name in _SCHEDULE_COLUMNS}
    values["payload"] = _json_load(values["payload"])
    values["enabled"] = bool(values["enabled"])
    return Schedule(**values)


def _to_run(row: Mapping[str, Any]) -> ScheduleRun:
    values = {name: row[name] for name in _RUN_COLUMNS}
    values["input"] = _json_load(values["input"])
    values["output"] = _json_load(values["output"])
    return ScheduleRun(**values)


def _run_params(run: ScheduleRun) -> dict[str, Any]:
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
        "input": _json_dump(run.input),
        "created_at": run.created_at,
    }
