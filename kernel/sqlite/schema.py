"""The SQLite store's tables (kernel/tables.py, in SQLite's spelling) and how they are migrated:
versions applied in order inside one transaction and recorded in a meta table. A file written by
a newer leasecron is refused rather than misread; tables another program made under the prefix
are refused untouched.
"""

from __future__ import annotations

import re
import sqlite3

from ..errors import StoreError
from ..tables import render

# How SQLite spells the markers of the shared table definitions (kernel/tables.py).
SPELLING = {
    "REAL": "REAL",
    "BIGINT": "INTEGER",
    "BOOL": "INTEGER",
    "TRUE": "1",
    "JSON": "TEXT",
    "ENABLED": "enabled = 1",
    "Q": "",
    "NAME_UNIQUE": " UNIQUE",
    "NAME_KEY": "",
    "SEQ": "",
    "RUNS_CREATED": "",
    "SESSION_ORDER": "started_at",
    # a run's spans are one range of the primary key's b-tree, stored together
    "WITHOUT_ROWID": " WITHOUT ROWID",
    "IF_NEW": "",
    "BYTE_ORDER": "",
}

MIGRATIONS: list[str] = render(SPELLING)
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
    created: re.Pattern[str] = _CREATED_TABLE,
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
