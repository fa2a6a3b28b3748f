"""The tables and their migrations, written once for both SQL stores. Each dialect renders these
texts (`render`) with its own spellings of the `$MARKERS` below: kernel/sqlite/schema.py for
SQLite, adapters/postgres/sql.py for Postgres. What remains, `{S}`, `{R}`, `{SE}`, `{WR}`, `{TR}`
and `{prefix}`, is filled in with a store's table names when it migrates.

Versions are applied in order inside one transaction and recorded in the store's meta table; a
migration may add tables, columns and indexes, never drop or rewrite data.

Markers: REAL (seconds, epoch times), BIGINT (versions), BOOL and TRUE, JSON (a JSON column of the
workflow tables), ENABLED (the predicate "enabled"), Q (how an index name is quoted); and what one
dialect has that the other has not: NAME_UNIQUE / NAME_KEY (the name's unique constraint, inline
or named), SEQ (an identity column ordering rows created in the same instant; SQLite uses rowid),
RUNS_CREATED (Postgres prunes oldest first, by an index), SESSION_ORDER, WITHOUT_ROWID, IF_NEW
(ADD COLUMN IF NOT EXISTS) and BYTE_ORDER (names ordered by bytes, as the lists are).
"""

from __future__ import annotations

from string import Template

# The schedules and their runs.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS {S} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL$NAME_UNIQUE,
    description TEXT,
    method TEXT NOT NULL DEFAULT 'POST',
    endpoint TEXT NOT NULL,
    payload TEXT,
    cron_expr TEXT,
    interval_seconds $REAL,
    run_at $REAL,
    start_at $REAL,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    timeout_seconds $REAL NOT NULL DEFAULT 3600,
    max_retries INTEGER NOT NULL DEFAULT 0,
    retry_delay_seconds $REAL NOT NULL DEFAULT 60,
    overlap TEXT NOT NULL DEFAULT 'skip',
    misfire TEXT NOT NULL DEFAULT 'fire_once',
    misfire_grace_seconds $REAL NOT NULL DEFAULT 60,
    max_catchup INTEGER NOT NULL DEFAULT 100,
    catchup_window_seconds $REAL NOT NULL DEFAULT 86400,
    jitter_seconds $REAL NOT NULL DEFAULT 0,
    enabled $BOOL NOT NULL DEFAULT $TRUE,
    next_run_at $REAL,
    due_at $REAL,
    locked_by TEXT,
    locked_at $REAL,
    lease_expires_at $REAL,
    lease_version $BIGINT NOT NULL DEFAULT 0,
    timing_version $BIGINT NOT NULL DEFAULT 1,
    last_run_at $REAL,
    last_status TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    created_at $REAL NOT NULL,
    updated_at $REAL NOT NULL$NAME_KEY
);
CREATE INDEX IF NOT EXISTS ${Q}{prefix}schedules_due$Q ON {S} (due_at)
    WHERE $ENABLED AND due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {R} (
    id TEXT PRIMARY KEY,$SEQ
    schedule_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    scheduled_for $REAL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    due_at $REAL,
    status_code INTEGER,
    run_id TEXT,
    session_id TEXT,
    error TEXT,
    replica TEXT,
    lease_version $BIGINT,
    reclaim INTEGER NOT NULL DEFAULT 0,
    triggered_at $REAL,
    completed_at $REAL,
    duration_ms $REAL,
    input TEXT,
    output TEXT,
    created_at $REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ${Q}{prefix}schedule_runs_by_schedule$Q ON {R} (schedule_id, created_at);
CREATE INDEX IF NOT EXISTS ${Q}{prefix}schedule_runs_open$Q ON {R} (schedule_id, due_at)
    WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS ${Q}{prefix}schedule_runs_pending$Q ON {R} (schedule_id, due_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS ${Q}{prefix}schedule_runs_run_id$Q ON {R} (run_id)$RUNS_CREATED
"""

# Workflow persistence (kernel/workflow/sessions.py): sessions, their runs and the runs' spans.
# New tables only, so a store of version 1 keeps every schedule and run row as it was. Runs have a
# table of their own rather than a JSON list inside the session row (as the reference keeps them):
# a run by id is then one primary-key lookup, and saving a run rewrites one row, not the whole
# session. The traces table is keyed (trace_id, span_id), so a run's spans are stored together
# and read as one key range.
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS {SE} (
    session_id TEXT PRIMARY KEY,
    session_type TEXT NOT NULL,
    workflow_id TEXT,
    agent_id TEXT,
    user_id TEXT,
    session_state $JSON,
    created_at $REAL NOT NULL,
    updated_at $REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS {WR} (
    run_id TEXT PRIMARY KEY,$SEQ
    session_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    workflow_name TEXT,
    user_id TEXT,
    status TEXT NOT NULL,
    input $JSON,
    content $JSON,
    media $JSON,
    step_outputs $JSON,
    session_state $JSON,
    additional_data $JSON,
    error TEXT,
    started_at $REAL,
    ended_at $REAL
);
CREATE INDEX IF NOT EXISTS ${Q}{prefix}workflow_runs_by_session$Q
    ON {WR} (session_id, $SESSION_ORDER);
CREATE TABLE IF NOT EXISTS {TR} (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at $REAL NOT NULL,
    ended_at $REAL,
    attributes $JSON,
    error TEXT,
    PRIMARY KEY (trace_id, span_id)
)$WITHOUT_ROWID
"""

# A row the kernel cannot decode or plan is quarantined: disabled, with the reason kept beside it
# (`leasecron list`/`show` print it; enabling the schedule clears it). The second index finds
# orphans (leased rows whose lease ran out) without walking every due row: under a backlog they
# get a share of each claim instead of waiting behind live rows with older due times.
SCHEMA_V3 = """
ALTER TABLE {S} ADD COLUMN ${IF_NEW}disabled_reason TEXT;
CREATE INDEX IF NOT EXISTS ${Q}{prefix}schedules_orphaned$Q ON {S} (due_at)
    WHERE $ENABLED AND locked_by IS NOT NULL
"""

# Schedules have an owner (a user of a multi-user server; NULL: nobody's). The index serves one
# user's list in name order, paged, and its count, without reading other users' rows.
SCHEMA_V4 = """
ALTER TABLE {S} ADD COLUMN ${IF_NEW}user_id TEXT;
CREATE INDEX IF NOT EXISTS ${Q}{prefix}schedules_by_user$Q ON {S} (user_id, name$BYTE_ORDER)
    WHERE user_id IS NOT NULL
"""

SCHEMAS = (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4)


def render(dialect: dict[str, str]) -> list[str]:
    """The migrations in a dialect's spelling: every marker replaced (a marker the dialect does
    not spell is an error, not left in the SQL)."""
    return [Template(text).substitute(dialect) for text in SCHEMAS]
