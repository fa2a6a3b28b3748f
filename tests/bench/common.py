"""Shared set-up for the benchmarks: bulk schedule rows, a no-op in-process target, timing."""

from __future__ import annotations

import os
import platform
import sqlite3
import tempfile
import time

import httpx

from leasecron.kernel import Schedule, SqliteStore
from leasecron.kernel.sqlite import _SCHEDULE_COLUMNS


def machine() -> str:
    return (
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, httpx {httpx.__version__}"
    )


def temp_db(name: str) -> str:
    return os.path.join(tempfile.mkdtemp(prefix="leasecron-bench-"), name)


def bulk_schedules(
    path: str, n: int, *, due_at: float, interval: float = 3600.0, prefix: str = "agno_"
) -> None:
    """Insert n interval schedules all due at `due_at`, in one transaction (set-up only)."""
    store = SqliteStore(path, inline=True, prefix=prefix)
    conn = store._connect()
    cols = [c for c in _SCHEDULE_COLUMNS]
    marks = ", ".join("?" for _ in cols)
    rows = []
    for i in range(n):
        s = Schedule(
            id=f"s{i:07d}",
            name=f"bench-{i:07d}",
            endpoint="/hooks/noop",
            interval_seconds=interval,
            start_at=due_at,
            next_run_at=due_at,
            due_at=due_at,
            created_at=due_at - interval,
            updated_at=due_at - interval,
        )
        values = [getattr(s, c) for c in cols]
        values[cols.index("enabled")] = 1
        rows.append(values)
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO {store.schedules_table} ({', '.join(cols)}) VALUES ({marks})", rows
    )
    conn.execute("COMMIT")
    conn.close()
    store._conn = None


def noop_transport() -> httpx.MockTransport:
    response = httpx.Response(200, json={"ok": True})

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=b'{"ok":true}', headers={"content-type": "application/json"}
        )

    del response
    return httpx.MockTransport(handler)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
