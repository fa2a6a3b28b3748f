"""The commands on the schedule table: add, list, show, pause, resume, trigger, rm, status,
runs, prune. Each takes the parsed arguments and a ScheduleManager and returns the exit code."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from typing import Any

from ..errors import ScheduleNotFoundError, ValidationError
from ..fmt import iso_local, iso_utc, kind_of, runs_table, short_id, table
from ..manager import ScheduleManager
from ..model import Schedule
from ..observe.status import cluster_status, render_status
from .inputs import parse_payload, parse_run_at, resolve
from .progress import Progress

# Schedule fields holding epoch seconds: shown as ISO 8601 by `show`.
_TIME_FIELDS = frozenset(
    {
        "run_at",
        "start_at",
        "next_run_at",
        "due_at",
        "locked_at",
        "lease_expires_at",
        "last_run_at",
        "created_at",
        "updated_at",
    }
)


async def cmd_add(args: argparse.Namespace, manager: ScheduleManager) -> int:
    fields_: dict[str, Any] = {}
    if args.cron is not None:
        fields_["cron"] = args.cron
    if args.interval is not None:
        fields_["interval_seconds"] = args.interval
    if args.run_at is not None:
        fields_["run_at"] = parse_run_at(args.run_at, args.timezone)
    if args.payload is not None:
        fields_["payload"] = parse_payload(args.payload)
    optional = {
        "timezone": args.timezone,
        "max_retries": args.max_retries,
        "retry_delay_seconds": args.retry_delay,
        "timeout_seconds": args.timeout,
        "overlap": args.overlap,
        "misfire": args.misfire,
        "jitter_seconds": args.jitter,
        "method": args.method,
        "description": args.description,
    }
    fields_.update({k: v for k, v in optional.items() if v is not None})
    before = await manager.get_by_name(args.name)
    schedule = await manager.create(
        args.name, endpoint=args.endpoint, if_exists=args.if_exists, **fields_
    )
    if before is None:
        verb = "created"
    elif args.if_exists == "skip":
        verb = "exists, skipped"
    else:
        verb = "updated" if schedule.updated_at != before.updated_at else "unchanged"
    print(f"{verb}: {schedule.name} (id {schedule.id})")
    print(f"  {kind_of(schedule)}  ->  {schedule.method} {schedule.endpoint}")
    print(
        f"  next run: {iso_utc(schedule.next_run_at)}"
        f"  ({iso_local(schedule.next_run_at, schedule.timezone)} {schedule.timezone})"
    )
    return 0


async def cmd_list(args: argparse.Namespace, manager: ScheduleManager) -> int:
    enabled = True if args.enabled else False if args.disabled else None
    schedules = await manager.list(enabled)
    if not schedules:
        print("no schedules")
        return 0
    rows = [
        (
            s.name,
            short_id(s.id),
            kind_of(s),
            s.timezone,
            "yes" if s.enabled else "no (quarantined)" if s.disabled_reason else "no",
            iso_utc(s.next_run_at) if s.enabled else "(disabled)",
            iso_local(s.next_run_at, s.timezone) if s.enabled else "(disabled)",
            s.last_status or "-",
            s.consecutive_failures,
        )
        for s in schedules
    ]
    headers = ("NAME", "ID", "KIND", "TZ", "ENABLED", "NEXT RUN (UTC)", "NEXT RUN (TZ)")
    headers = (*headers, "LAST STATUS", "FAILURES")
    if any(s.user_id is not None for s in schedules):  # a multi-user server's file: who owns it
        headers = (*headers, "OWNER")
        rows = [(*row, s.user_id or "-") for row, s in zip(rows, schedules, strict=True)]
    print(table(headers, rows))
    for s in schedules:  # rows the kernel took out of the pool, and why, in full
        if s.disabled_reason:
            print(f"{s.name}: disabled by leasecron: {s.disabled_reason}")
    return 0


def _show_value(s: Schedule, name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name in _TIME_FIELDS:
        return f"{iso_utc(value, ms=True)}  ({iso_local(value, s.timezone)})  [{value:.3f}]"
    if name == "payload":
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


async def cmd_show(args: argparse.Namespace, manager: ScheduleManager) -> int:
    if (args.schedule is None) == (args.run is None):
        raise ValidationError("--run", "give a schedule NAME_OR_ID or --run RUN_ID (one of them)")
    if args.run is not None:
        return await show_run(args.run, manager)
    s = await resolve(manager, args.schedule)
    width = max(len(f.name) for f in fields(Schedule))
    print(f"{'kind':<{width}}  {kind_of(s)}")
    for f in fields(Schedule):
        print(f"{f.name:<{width}}  {_show_value(s, f.name, getattr(s, f.name))}")
    runs = await manager.runs(s.id, 5)
    print()
    print("last 5 runs (oldest first):" if runs else "no runs yet")
    if runs:
        print(runs_table(runs[::-1], {s.id: s.name}))
    return 0


_RUN_TIME_FIELDS = frozenset(
    {"scheduled_for", "due_at", "triggered_at", "completed_at", "created_at"}
)


async def show_run(key: str, manager: ScheduleManager) -> int:
    """One run row whole: every field, the error and the output in full."""
    run = await manager.store.get_run(key)
    if run is None and len(key) >= 4:
        # the short id of `runs`: a unique prefix among the newest rows
        matches = [r for r in await manager.store.list_runs(None, 100_000) if r.id.startswith(key)]
        if len(matches) > 1:
            raise ValidationError("--run", f"run id prefix {key!r} is ambiguous")
        run = matches[0] if matches else None
    if run is None:
        raise ValidationError("--run", f"no run with id {key!r}")
    schedule = await manager.get(run.schedule_id)
    width = max(len(f.name) for f in fields(run))
    print(f"{'schedule':<{width}}  {schedule.name if schedule else '(deleted)'}")
    for f in fields(run):
        value = getattr(run, f.name)
        if value is None:
            text = "-"
        elif f.name in _RUN_TIME_FIELDS:
            text = f"{iso_utc(value, ms=True)}  [{value:.3f}]"
        elif f.name in ("error", "output", "input") or not isinstance(value, str | int | float):
            text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
            text = text.replace("\n", "\n" + " " * (width + 2))
        else:
            text = f"{value:g}" if isinstance(value, float) else str(value)
        print(f"{f.name:<{width}}  {text}")
    return 0


async def cmd_pause(args: argparse.Namespace, manager: ScheduleManager) -> int:
    s = await resolve(manager, args.schedule)
    was = s.enabled
    s = await manager.disable(s.id)
    print(f"{'paused' if was else 'already paused'}: {s.name} (id {s.id})")
    return 0


async def cmd_resume(args: argparse.Namespace, manager: ScheduleManager) -> int:
    s = await resolve(manager, args.schedule)
    was = s.enabled
    s = await manager.enable(s.id)
    print(
        f"{'already enabled' if was else 'resumed'}: {s.name} (id {s.id}); "
        f"next run {iso_utc(s.next_run_at)}"
    )
    return 0


async def cmd_trigger(args: argparse.Namespace, manager: ScheduleManager) -> int:
    s = await resolve(manager, args.schedule)
    print(await manager.trigger(s.id))
    return 0


async def cmd_rm(args: argparse.Namespace, manager: ScheduleManager) -> int:
    s = await resolve(manager, args.schedule)
    if not await manager.delete(s.id):
        raise ScheduleNotFoundError(args.schedule)
    print(f"deleted: {s.name} (id {s.id})")
    return 0


async def cmd_status(args: argparse.Namespace, manager: ScheduleManager) -> int:
    status = await cluster_status(manager, await manager.now(), window=args.window_minutes * 60)
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
    else:
        print(render_status(status))
    return 0


async def cmd_runs(args: argparse.Namespace, manager: ScheduleManager) -> int:
    if args.limit < 1:
        raise ValidationError("limit", f"{args.limit!r} must be >= 1")
    names = {s.id: s.name for s in await manager.list()}
    if args.schedule is None:
        runs = await manager.store.list_runs(None, args.limit)
    else:
        try:
            schedule_id = (await resolve(manager, args.schedule)).id
        except ScheduleNotFoundError:
            # A deleted schedule's history stays: accept its full id if it has runs.
            if not await manager.runs(args.schedule, 1):
                raise
            schedule_id = args.schedule
        runs = await manager.runs(schedule_id, args.limit)
    if not runs:
        print("no runs")
        return 0
    print(runs_table(runs[::-1], names))  # the newest N, oldest first: read like a log
    return 0


async def cmd_prune(args: argparse.Namespace, manager: ScheduleManager) -> int:
    if not args.older_than_days >= 0:
        raise ValidationError("older_than_days", f"{args.older_than_days!r} must be >= 0")
    progress = Progress()
    deleted = await manager.prune_runs(
        args.older_than_days * 86_400,
        on_progress=lambda n: progress(f"{n} run rows deleted so far"),
    )
    print(f"deleted {deleted} finished run(s) older than {args.older_than_days:g} day(s)")
    return 0
