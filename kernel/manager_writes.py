"""The manager's writes, the same on every store: each one flow of writes.py run as one
transaction, then this process's listeners woken. A store mixes this in and gives the one thing
that differs, `_transaction` (how it runs a flow: SQLite on its worker thread, Postgres on a
pooled connection), with a taken name raised as ScheduleExistsError."""

from __future__ import annotations

from typing import Any, TypeVar

from . import writes
from .model import Schedule, ScheduleRun
from .rows import to_schedule
from .store import check_updatable

T = TypeVar("T")


class ManagerWrites:
    """create, update, enable, disable and delete a schedule; queue a trigger's run."""

    async def _transaction(self, operation: str, flow: writes.Flow[T], name: str = "") -> T:
        """Run `flow` as one transaction named `operation`; a UNIQUE violation of the schedule
        name `name` (when given) as ScheduleExistsError."""
        raise NotImplementedError

    def notify(self) -> None:
        raise NotImplementedError

    async def create_schedule(self, schedule: Schedule) -> None:
        """Insert a new row (writes.create_schedule)."""
        flow = writes.create_schedule(schedule)
        await self._transaction("create_schedule", flow, schedule.name)
        self.notify()

    async def update_schedule(
        self, schedule_id: str, fields: dict[str, Any], now: float
    ) -> Schedule | None:
        """Apply caller fields (writes.update_schedule); the row as it now is, or None."""
        check_updatable(fields)
        flow = writes.update_schedule(schedule_id, fields, now)
        return await self._schedule_write("update_schedule", flow, fields.get("name", ""))

    async def enable_schedule(
        self, schedule_id: str, next_run_at: float | None, now: float
    ) -> Schedule | None:
        """Enable from `next_run_at` (writes.enable_schedule); the row as it now is, or None."""
        flow = writes.enable_schedule(schedule_id, next_run_at, now)
        return await self._schedule_write("enable_schedule", flow)

    async def disable_schedule(self, schedule_id: str, now: float) -> Schedule | None:
        """Disable, cancelling waiting work (writes.disable_schedule); the row, or None."""
        return await self._schedule_write(
            "disable_schedule", writes.disable_schedule(schedule_id, now)
        )

    async def _schedule_write(
        self, operation: str, flow: writes.Flow[Any], name: str = ""
    ) -> Schedule | None:
        """A manager write answering the row as it now is."""
        row = await self._transaction(operation, flow, name)
        self.notify()
        return to_schedule(row, strict=False) if row else None

    async def delete_schedule(self, schedule_id: str, now: float) -> bool:
        """Delete the schedule and cancel its pending runs (writes.delete_schedule)."""
        deleted: bool = await self._transaction(
            "delete_schedule", writes.delete_schedule(schedule_id, now)
        )
        self.notify()
        return deleted

    async def add_pending_run(self, run: ScheduleRun, now: float) -> None:
        """Queue durable work, a manual trigger (writes.add_pending_run)."""
        await self._transaction("add_pending_run", writes.add_pending_run(run, now))
        self.notify()
