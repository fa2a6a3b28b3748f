"""Shared set-up for the benchmarks: bulk schedule rows, a no-op in-process target, timing."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import httpx

from leasecron.kernel import Schedule, SqliteStore
from leasecron.kernel.rows import SCHEDULE_COLUMNS, json_dump


def machine() -> str:
    return (
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, httpx {httpx.__version__}"
    )


class SetupProgress:
    """Progress of a large set-up on stderr (rows written so far), at most every 2 s."""

    def __init__(self, total: int, what: str = "rows"):
        self.total, self.what = total, what
        self.started = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= 2.0 or (done == self.total and now - self.started >= 2.0):
            self.last = now
            print(
                f"... set-up: {done:,} of {self.total:,} {self.what} ({now - self.started:.0f}s)",
                file=sys.stderr,
                flush=True,
            )


def temp_db(name: str) -> str:
    return os.path.join(tempfile.mkdtemp(prefix="leasecron-bench-"), name)


def bulk_schedules(
    path: str, n: int, *, due_at: float, interval: float = 3600.0, prefix: str = "agno_"
) -> None:
    """Insert n interval schedules all due at `due_at`, in one transaction (set-up only)."""
    store = SqliteStore(path, inline=True, prefix=prefix)
    conn = store._connect()
    cols = [c for c in SCHEDULE_COLUMNS]
    marks = ", ".join("?" for _ in cols)
    rows = []
    progress = SetupProgress(n, "schedules")
    for i in range(n):
        if i % 10_000 == 0:
            progress(i)
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


def bulk_schedules_sql(
    path: str,
    n: int,
    *,
    due_at: float,
    spread: float = 0.0,
    interval: float = 3600.0,
    endpoint: str = "/hooks/noop",
    prefix: str = "agno_",
) -> None:
    """Like bulk_schedules, but the rows are generated inside SQLite (a recursive CTE feeding one
    INSERT ... SELECT in one transaction): 1M rows in a few seconds, nothing held in Python.
    Row i is an interval schedule whose start_at = next_run_at = due_at is
    `due_at + spread * i / n`, so spread > 0 spaces the first fires evenly (set-up only)."""
    store = SqliteStore(path, inline=True, prefix=prefix)
    conn = store._connect()
    cols = list(SCHEDULE_COLUMNS)
    template = Schedule(id="", name="", endpoint=endpoint, interval_seconds=interval)
    due = "(:due_at + :spread * i / :n)"
    computed = {
        "id": "printf('s%07d', i)",
        "name": "printf('bench-%07d', i)",
        "enabled": "1",
        "start_at": due,
        "next_run_at": due,
        "due_at": due,
        "created_at": f"({due} - :interval)",
        "updated_at": f"({due} - :interval)",
    }
    params: dict[str, object] = {
        "due_at": float(due_at),
        "spread": float(spread),
        "n": n,
        "interval": interval,
    }
    exprs = []
    for c in cols:
        if c in computed:
            exprs.append(computed[c])
        else:
            exprs.append(f":v_{c}")
            value = getattr(template, c)
            params[f"v_{c}"] = int(value) if isinstance(value, bool) else value
    conn.execute("BEGIN")
    conn.execute(
        f"WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1) "
        f"INSERT INTO {store.schedules_table} ({', '.join(cols)}) "
        f"SELECT {', '.join(exprs)} FROM seq",
        params,
    )
    conn.execute("COMMIT")
    conn.close()
    store._conn = None


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 99)) -> list[float]:
    """Nearest-rank percentiles of `values` (q in 0..100); NaN for an empty sequence."""
    if not values:
        return [float("nan") for _ in qs]
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, max(0, math.ceil(q / 100 * n) - 1))] for q in qs]


def cpu_seconds() -> float:
    """CPU time of this process, every thread, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- PostgreSQL (psycopg is imported only by these helpers: the SQLite scripts run without it) --

PG_ADMIN_DSN = os.environ.get("LEASECRON_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def pg_scratch_database(
    admin_dsn: str = PG_ADMIN_DSN, prefix: str = "leasecron_bench"
) -> Iterator[str]:
    """A new database on the server of `admin_dsn` (a role that may CREATE DATABASE), dropped
    with its connections afterwards, even on error or Ctrl-C; yields its DSN."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_server_version(dsn: str) -> str:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT version()").fetchone()[0]


def pg_bulk_schedules(
    dsn: str,
    table: str,
    n: int,
    *,
    due_at: float,
    step: float = 0.0,
    first: int = 0,
    interval: float = 3600.0,
    endpoint: str = "/hooks/noop",
) -> None:
    """COPY n interval schedules into `table` (schema-qualified, created by PostgresStore), rows
    `first` .. `first + n - 1`, in one transaction (set-up only). Each row is what
    PostgresStore.create_schedule writes; row i has start_at = next_run_at = due_at =
    `due_at + step * i`. About 10 s per million rows (the table's three indexes dominate)."""
    import psycopg

    cols = list(SCHEDULE_COLUMNS)
    template = Schedule(id="", name="", endpoint=endpoint, interval_seconds=interval)
    row = [getattr(template, c) for c in cols]
    row[cols.index("payload")] = json_dump(template.payload)
    row[cols.index("enabled")] = True
    at = {c: cols.index(c) for c in ("id", "name", "start_at", "next_run_at", "due_at")}
    stamps = (cols.index("created_at"), cols.index("updated_at"))
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            progress = SetupProgress(n, "schedules")
            for i in range(first, first + n):
                if (i - first) % 10_000 == 0:
                    progress(i - first)
                due = due_at + step * i
                row[at["id"]] = f"s{i:07d}"
                row[at["name"]] = f"bench-{i:07d}"
                row[at["start_at"]] = row[at["next_run_at"]] = row[at["due_at"]] = due
                row[stamps[0]] = row[stamps[1]] = due - interval
                copy.write_row(row)
        conn.commit()


def pg_settle(dsn: str, *tables: str) -> None:
    """VACUUM ANALYZE the tables (planner statistics, visibility map) and CHECKPOINT, so a timed
    run starts without a pending autovacuum or checkpoint of the set-up's writes."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"VACUUM ANALYZE {table}")
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")
