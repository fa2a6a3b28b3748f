"""The store's run rows as the checker reads them: a `runs` view beside the trace, attached in
place for this process's SQLite file, copied over a page at a time from any other store, so
memory stays flat however many rows the run wrote."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..rows import to_run
from ..sqlite import SqliteStore
from .check import RUN_COLUMNS

_PAGE = 5000  # run rows per read from a store that is not this process's SQLite file


async def _pages(store: Any, schedule_ids: Any):
    """Every run row of these schedules, a page at a time, newest first within a schedule (the
    order list_runs pages in)."""
    for sid in sorted(schedule_ids):
        offset = 0
        while True:
            page = await store.list_runs(sid, _PAGE, offset)
            for run in page:
                yield run
            if len(page) < _PAGE:
                break
            offset += _PAGE


async def running_runs(store: Any, schedule_ids: Any) -> list[Any]:
    """The run rows still running (a few: at most the replicas' concurrency), without loading
    the rest."""
    if isinstance(store, SqliteStore):
        rows = store.execute(
            f"SELECT * FROM {store.runs_table} WHERE status = 'running' "
            "ORDER BY created_at DESC, rowid DESC"
        )
        return [to_run(row) for row in rows]
    return [run async for run in _pages(store, schedule_ids) if run.status == "running"]


async def attach_runs(db: sqlite3.Connection, store: Any, schedule_ids: Any) -> None:
    """Give the trace a `runs` view of the store's run rows, columns check.RUN_COLUMNS, `ord`
    ascending in creation order within a schedule. This process's SQLite file is attached and
    read in place; any other store is copied over, a page at a time."""
    columns = ", ".join(RUN_COLUMNS)
    if isinstance(store, SqliteStore):
        db.execute("ATTACH DATABASE ? AS store", (store.path,))
        db.execute(
            f"CREATE TEMP VIEW runs AS SELECT rowid AS ord, {columns} FROM store.{store.runs_table}"
        )
        return
    db.execute(f"CREATE TABLE runs_copy (ord INTEGER, {', '.join(RUN_COLUMNS)}, PRIMARY KEY (id))")
    db.execute(f"CREATE TEMP VIEW runs AS SELECT ord, {columns} FROM runs_copy")
    insert = f"INSERT INTO runs_copy VALUES ({', '.join('?' * (len(RUN_COLUMNS) + 1))})"
    batch: list[tuple] = []
    n = 0
    db.execute("BEGIN")
    async for run in _pages(store, schedule_ids):
        n += 1  # newest first: a falling ord, so ascending ord is creation order
        batch.append((-n, *(getattr(run, c) for c in RUN_COLUMNS)))
        if len(batch) >= _PAGE:
            db.executemany(insert, batch)
            batch.clear()
    db.executemany(insert, batch)
    db.execute("COMMIT")
