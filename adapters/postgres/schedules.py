"""PostgresStore's schedules and run history: create, read, list, update, delete, trigger (a
pending run), the runs table read back and pruned. Every write locks its schedule row first and
sends NOTIFY in its transaction (see sql.py, "Transactions and locks"). A mixin of
PostgresStore: it uses the store's plumbing (`_run`, `_tx`, `_one`, `_count`, `_lock`,
`_notify_others`, `notify`) and its formatted `_sql`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from psycopg import errors as pg_errors

from leasecron.kernel.errors import ScheduleExistsError
from leasecron.kernel.manager_writes import ManagerWrites
from leasecron.kernel.model import Schedule, ScheduleRun
from leasecron.kernel.rows import (
    schedule_filter,
    to_run,
    to_schedule,
)

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection

# strpos, not LIKE: the needle's % and _ are plain characters; lower() folds by the database's
# locale (all letters, where SQLite's folds A-Z only).
CONTAINS = "strpos(lower(name), lower({needle})) > 0"


@contextlib.contextmanager
def _unique_name(constraint: str, name: str) -> Iterator[None]:
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        if exc.diag.constraint_name == constraint:
            raise ScheduleExistsError(name) from exc
        raise


def _filter(
    enabled: bool | None, user_id: str | None, name_contains: str | None
) -> tuple[str, dict[str, Any]]:
    return schedule_filter(enabled, user_id, lambda n: f"%({n})s", name_contains, CONTAINS)


class PostgresSchedules(ManagerWrites):
    """Schedule and run-history operations for PostgresStore (see the module docstring)."""

    def _unique_name(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A name taken by another row: the UNIQUE violation as ScheduleExistsError."""
        return _unique_name(f"{self.prefix}schedules_name_key", name)

    async def _transaction(self, operation: str, flow: Any, name: str = "") -> Any:
        """A manager write (leasecron.kernel.manager_writes): the flow as one transaction."""
        write = self._flow(flow)

        async def op(conn: Conn) -> Any:
            if not name:
                return await write(conn)
            with self._unique_name(name):
                return await write(conn)

        return await self._tx(operation, op)

    async def _get(self, conn: Conn, column: str, value: str) -> Schedule | None:
        row = await self._one(
            conn, f"SELECT * FROM {self.schedules_table} WHERE {column} = %(v)s", {"v": value}
        )
        return to_schedule(row, strict=False) if row else None

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return await self._run("get_schedule", lambda conn: self._get(conn, "id", schedule_id))

    async def get_schedule_by_name(self, name: str) -> Schedule | None:
        return await self._run("get_schedule_by_name", lambda conn: self._get(conn, "name", name))

    async def list_schedules(
        self,
        enabled: bool | None = None,
        *,
        user_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        name_contains: str | None = None,
    ) -> list[Schedule]:
        async def op(conn: Conn) -> list[Schedule]:
            where, args = _filter(enabled, user_id, name_contains)
            args.update(limit=limit, offset=offset)  # LIMIT NULL: no limit
            # COLLATE "C": the same byte order as SQLite's ORDER BY name, whatever the locale.
            sql = f'SELECT * FROM {self.schedules_table}{where} ORDER BY name COLLATE "C"'
            cur = await conn.execute(sql + " LIMIT %(limit)s OFFSET %(offset)s", args)
            return [to_schedule(r, strict=False) for r in await cur.fetchall()]

        return await self._run("list_schedules", op)

    async def count_schedules(
        self,
        enabled: bool | None = None,
        *,
        user_id: str | None = None,
        name_contains: str | None = None,
    ) -> int:
        async def op(conn: Conn) -> int:
            where, args = _filter(enabled, user_id, name_contains)
            row = await self._one(
                conn, f"SELECT count(*) AS n FROM {self.schedules_table}{where}", args
            )
            return int(row["n"])

        return await self._run("count_schedules", op)

    async def list_runs(
        self, schedule_id: str | None, limit: int = 20, offset: int = 0
    ) -> list[ScheduleRun]:
        async def op(conn: Conn) -> list[ScheduleRun]:
            where = "WHERE schedule_id = %(sid)s" if schedule_id else ""
            cur = await conn.execute(
                f"SELECT * FROM {self.runs_table} {where} "
                f"ORDER BY created_at DESC, seq DESC LIMIT %(limit)s OFFSET %(offset)s",
                {"sid": schedule_id, "limit": limit, "offset": offset},
            )
            return [to_run(r) for r in await cur.fetchall()]

        return await self._run("list_runs", op)

    async def count_runs(self, schedule_id: str | None) -> int:
        async def op(conn: Conn) -> int:
            where = "WHERE schedule_id = %(sid)s" if schedule_id else ""
            row = await self._one(
                conn, f"SELECT count(*) AS n FROM {self.runs_table} {where}", {"sid": schedule_id}
            )
            return row["n"]

        return await self._run("count_runs", op)

    async def get_run(self, run_row_id: str) -> ScheduleRun | None:
        async def op(conn: Conn) -> ScheduleRun | None:
            row = await self._one(
                conn, f"SELECT * FROM {self.runs_table} WHERE id = %(id)s", {"id": run_row_id}
            )
            return to_run(row) if row else None

        return await self._run("get_run", op)

    async def prune_runs(self, before: float, limit: int | None = None) -> int:
        """Delete final run rows created before `before`, at most `limit` (None: all) in this
        transaction; returns how many. A plain DELETE: autovacuum gives the space back."""
        return await self._run(
            "prune_runs",
            lambda conn: self._count(
                conn, self._sql["prune_runs"], {"before": before, "limit": limit}
            ),
        )
