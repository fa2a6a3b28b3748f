"""The SQLite store's tables and their migrations. Versions are applied in order inside one
transaction and recorded in a meta table; a migration may add tables, columns and indexes, never
drop or rewrite data. A file written by a newer leasecron is refused rather than misread.
"""

from __future__ import annotations

import sqlite3

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS {S} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    method TEXT NOT NULL DEFAULT 'POST',
    endpoint TEXT NOT NULL,
    payload TEXT,
    cron_expr TEXT,
    interval_seconds REAL,
    run_at REAL,
    start_at REAL,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    timeout_seconds REAL NOT NULL DEFAULT 3600,
    max_retries INTEGER NOT NULL DEFAULT 0,
    retry_delay_seconds REAL NOT NULL DEFAULT 60,
    overlap TEXT NOT NULL DEFAULT 'skip',
    misfire TEXT NOT NULL DEFAULT 'fire_once',
    misfire_grace_seconds REAL NOT NULL DEFAULT 60,
    max_catchup INTEGER NOT NULL DEFAULT 100,
    catchup_window_seconds REAL NOT NULL DEFAULT 86400,
    jitter_seconds REAL NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1,
    next_run_at REAL,
    due_at REAL,
    locked_by TEXT,
    locked_at REAL,
    lease_expires_at REAL,
    lease_version INTEGER NOT NULL DEFAULT 0,
    timing_version INTEGER NOT NULL DEFAULT 1,
    last_run_at REAL,
    last_status TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS {prefix}schedules_due ON {S} (due_at)
    WHERE enabled = 1 AND due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {R} (
    id TEXT PRIMARY KEY,
    schedule_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    scheduled_for REAL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    due_at REAL,
    status_code INTEGER,
    run_id TEXT,
    session_id TEXT,
    error TEXT,
    replica TEXT,
    lease_version INTEGER,
    reclaim INTEGER NOT NULL DEFAULT 0,
    triggered_at REAL,
    completed_at REAL,
    duration_ms REAL,
    input TEXT,
    output TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS {prefix}schedule_runs_by_schedule ON {R} (schedule_id, created_at);
CREATE INDEX IF NOT EXISTS {prefix}schedule_runs_open ON {R} (schedule_id, due_at)
    WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS {prefix}schedule_runs_pending ON {R} (schedule_id, due_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS {prefix}schedule_runs_run_id ON {R} (run_id);
"""

# Schema versions, applied in order and recorded in the meta table. A migration may add tables,
# columns and indexes; it never drops or rewrites data.
MIGRATIONS: list[str] = [SCHEMA_V1]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection, prefix: str) -> int:
    row = conn.execute(
        f"SELECT value FROM {prefix}leasecron_meta WHERE key = 'schema_version'"
    ).fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, prefix: str, path: str, migrations: list[str]) -> None:
    """Bring the file's tables up to len(migrations), inside the caller's transaction."""
    meta = f"{prefix}leasecron_meta"
    conn.execute(f"CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT)")
    current = schema_version(conn, prefix)
    if current > len(migrations):
        raise RuntimeError(
            f"{path}: schema version {current} is newer than this leasecron "
            f"({len(migrations)}); upgrade leasecron"
        )
    tables = {"S": f"{prefix}schedules", "R": f"{prefix}schedule_runs", "prefix": prefix}
    for version in range(current + 1, len(migrations) + 1):
        for statement in migrations[version - 1].format(**tables).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            f"INSERT OR REPLACE INTO {meta} (key, value) VALUES ('schema_version', ?)",
            (str(version),),
        )
