"""PostgresStore's tables brought up to this version: the migrations (kernel/tables.py, in the
Postgres spelling of sql.py) applied in order inside one transaction under an advisory lock, so
two replicas starting at once do not race their CREATEs; tables another program made under the
prefix are refused untouched."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from leasecron.kernel.errors import StoreError
from leasecron.kernel.sqlite.schema import tables_to_create

from . import sql as postgres_sql

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection[Any]

_CREATED_TABLE = re.compile(r'CREATE TABLE IF NOT EXISTS "[^"]+"\."([^"]+)"', re.IGNORECASE)


async def migrate(
    conn: Conn, schema: str, prefix: str, tables: dict[str, str], meta: dict[str, str]
) -> None:
    """Create the schema and meta table if missing, then apply every migration not yet applied."""
    migrations = postgres_sql.MIGRATIONS
    async with conn.transaction():
        await conn.execute(meta["advisory_lock"], {"key": f"leasecron:{schema}.{prefix}"})
        cur = await conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s", {"schema": schema}
        )
        if await cur.fetchone() is None:
            await conn.execute(meta["create_schema"])
        await conn.execute(meta["create_meta"])
        current = await schema_version(conn, meta)
        if current > len(migrations):
            raise RuntimeError(
                f"{schema}.{prefix}*: schema version {current} is newer than this "
                f"leasecron ({len(migrations)}); upgrade leasecron"
            )
        names = {"prefix": prefix, **tables}
        await _refuse_foreign(conn, schema, prefix, names, migrations, current)
        for version in range(current + 1, len(migrations) + 1):
            for statement in migrations[version - 1].format(**names).split(";"):
                if statement.strip():
                    await conn.execute(statement)
            await conn.execute(meta["set_version"], {"version": str(version)})


async def schema_version(conn: Conn, meta: dict[str, str]) -> int:
    """The version recorded in the meta table (0: none yet)."""
    cur = await conn.execute(meta["get_version"])
    row: Any = await cur.fetchone()  # a dict row (the pool's row factory)
    return int(row["value"]) if row else 0


async def _refuse_foreign(
    conn: Conn,
    schema: str,
    prefix: str,
    names: dict[str, str],
    migrations: list[str],
    current: int,
) -> None:
    """A table that a migration not yet applied would create must not exist: migrations run
    in one transaction, so such a table was made by another program (an Agno AgentOS keeps
    agno_sessions with other columns), and CREATE TABLE IF NOT EXISTS would adopt it."""
    pending = tables_to_create(migrations, current, names, _CREATED_TABLE)
    if not pending:
        return
    cur = await conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %(schema)s "
        "AND table_name = ANY(%(names)s) ORDER BY table_name",
        {"schema": schema, "names": pending},
    )
    rows: list[Any] = await cur.fetchall()  # dict rows (the pool's row factory)
    found = [row["table_name"] for row in rows]
    if found:
        raise StoreError(
            "open",
            RuntimeError(
                f"{schema}: table(s) {', '.join(found)} exist but were not made by "
                f"leasecron (no {prefix}leasecron_meta records them; another program, "
                f"e.g. an Agno AgentOS, uses this prefix); choose another prefix= "
                f'(e.g. prefix="leasecron_") or schema='
            ),
        )
