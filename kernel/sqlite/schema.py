"""The SQLite store's tables and their migrations. Versions are applied in order inside one
transaction and recorded in a meta table; a migration may add tables, columns and indexes, never
drop or rewrite data. A file written by a newer leasecron is refused rather than misread.
"""

from __future__ import annotations

import re
import sqlite3

from ..errors import StoreError

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

# Workflow persistence (kernel/workflow/sessions.py, statements in kernel/workflow/sqlite_sql.py):
# sessions, their runs and the runs' spans. New tables only, so a file of version 1 keeps every
# schedule and run row as it was. Runs have a table of their own rather than a JSON list inside
# the session row (as the reference keeps them): a run by id is then one primary-key lookup, and
# saving a run rewrites one row, not the whole session. The traces table is keyed (trace_id,
# span_id) WITHOUT ROWID, so a run's spans are stored together and read as one key range.
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS {SE} (
    session_id TEXT PRIMARY KEY,
    session_type TEXT NOT NULL,
    workflow_id TEXT,
    agent_id TEXT,
    user_id TEXT,
    session_state TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS {WR} (
    run_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    workflow_name TEXT,
    user_id TEXT,
    status TEXT NOT NULL,
    input TEXT,
    content TEXT,
    media TEXT,
    step_outputs TEXT,
    session_state TEXT,
    additional_data TEXT,
    error TEXT,
    started_at REAL,
    ended_at REAL
);
CREATE INDEX IF NOT EXISTS {prefix}workflow_runs_by_session ON {WR} (session_id, started_at);
CREATE TABLE IF NOT EXISTS {TR} (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    attributes TEXT,
    error TEXT,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID
"""

# A row the kernel cannot decode or plan is quarantined: disabled, with the reason kept beside it
# (`leasecron list`/`show` print it; enabling the schedule clears it). The second index finds
# orphans (leased rows whose lease ran out) without walking every due row: under a backlog they
# get a share of each claim instead of waiting behind live rows with older due times.
SCHEMA_V3 = """
ALTER TABLE {S} ADD COLUMN disabled_reason TEXT;
CREATE INDEX IF NOT EXISTS {prefix}schedules_orphaned ON {S} (due_at)
    WHERE enabled = 1 AND locked_by IS NOT NULL
"""

# Schedules have an owner (a user of a multi-user server; NULL: nobody's). The index serves one
# user's list in name order, paged, and its count, without reading other users' rows.
SCHEMA_V4 = """
ALTER TABLE {S} ADD COLUMN user_id TEXT;
CREATE INDEX IF NOT EXISTS {prefix}schedules_by_user ON {S} (user_id, name)
    WHERE user_id IS NOT NULL
"""

# Schema versions, applied in order and recorded in the meta table. A migration may add tables,
# columns and indexes; it never drops or rewrites data.
MIGRATIONS: list[str] = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4]
SCHEMA_VERSION = len(MIGRATIONS)


def table_names(prefix: str) -> dict[str, str]:
    """The placeholders of the schema and SQL texts: {S} schedules, {R} schedule runs, {SE}
    sessions, {WR} workflow runs, {TR} traces."""
    return {
        "S": f"{prefix}schedules",
        "R": f"{prefix}schedule_runs",
        "SE": f"{prefix}sessions",
        "WR": f"{prefix}workflow_runs",
        "TR": f"{prefix}traces",
    }


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
    tables = {"prefix": prefix, **table_names(prefix)}
    check_not_foreign(conn, prefix, path, migrations, current)
    for version in range(current + 1, len(migrations) + 1):
        for statement in migrations[version - 1].format(**tables).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            f"INSERT OR REPLACE INTO {meta} (key, value) VALUES ('schema_version', ?)",
            (str(version),),
        )


_CREATED_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)", re.IGNORECASE)


def tables_to_create(
    migrations: list[str],
    current: int,
    tables: dict[str, str],
    created: re.Pattern = _CREATED_TABLE,
) -> list[str]:
    """The tables the migrations after `current` create (`created` captures a table's bare
    name from a CREATE TABLE in the dialect's text): none of them may already exist."""
    return [
        name
        for version in range(current + 1, len(migrations) + 1)
        for name in created.findall(migrations[version - 1].format(**tables))
    ]


def foreign_error(path: str, prefix: str, found: list[str]) -> StoreError:
    """The refusal to touch tables another program made under our prefix."""
    return StoreError(
        "open",
        RuntimeError(
            f"{path}: table(s) {', '.join(found)} exist but were not made by leasecron "
            f"(no {prefix}leasecron_meta records them; another program, e.g. an Agno AgentOS, "
            f'uses this prefix); choose another prefix= (e.g. prefix="leasecron_")'
        ),
    )


def check_not_foreign(
    conn: sqlite3.Connection, prefix: str, path: str, migrations: list[str], current: int
) -> None:
    """A table that a migration not yet applied would create must not exist: migrations run in
    one transaction, so such a table was made by someone else, and CREATE TABLE IF NOT EXISTS
    would silently adopt it (its other columns then fail every statement)."""
    pending = tables_to_create(migrations, current, {"prefix": prefix, **table_names(prefix)})
    if not pending:
        return
    marks = ", ".join("?" for _ in pending)
    found = [
        row[0]
        for row in conn.execute(
            f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({marks}) "
            "ORDER BY name",
            pending,
        )
    ]
    if found:
        raise foreign_error(path, prefix, found)


def check_readable(conn: sqlite3.Connection, prefix: str, path: str, migrations: list[str]) -> int:
    """For a file opened read-only (nothing is migrated): its schema version, when leasecron
    can read it as it is. Older versions are read as they are (their tables are a subset)."""
    meta = f"{prefix}leasecron_meta"
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (meta,)
    ).fetchone()
    if not has_meta:
        check_not_foreign(conn, prefix, path, migrations, 0)
        raise StoreError(
            "open", RuntimeError(f"{path}: not a leasecron database (no {meta} table)")
        )
    current = schema_version(conn, prefix)
    if current > len(migrations):
        raise StoreError(
            "open",
            RuntimeError(
                f"{path}: schema version {current} is newer than this leasecron "
                f"({len(migrations)}); upgrade leasecron"
            ),
        )
    return current
