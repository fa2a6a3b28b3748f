"""SqliteStore's workflow persistence (sessions, workflow runs, traces), apart from the lease
algorithm: `Workflow(db=store)` saves through it, and it reads runs, sessions and span trees back.
Its statements are in sqlite_sql.py. `SqliteStore` is the lease store (sqlite/store.py) with
this part mixed in: it uses the store's plumbing (`_run`, `_write`, `_connect`) and `prefix`."""

from __future__ import annotations

import sqlite3
from functools import cached_property

from ..errors import ValidationError
from ..rows import json_load
from ..sqlite.schema import table_names
from ..sqlite.store import SqliteLeaseStore
from .sessions import (
    TraceNode,
    WorkflowSession,
    check_limit,
    clean_text,
    run_from_row,
    run_params,
    run_taken,
    session_from_row,
    session_params,
    span_from_row,
    span_params,
    span_tree,
)
from .sqlite_sql import SESSIONS_SQL
from .trace import Span
from .types import WorkflowRunOutput


class SqliteSessions:
    """Workflow persistence for a SqliteLeaseStore (see the module docstring)."""

    prefix: str

    @cached_property
    def _sessions_sql(self) -> dict[str, str]:
        tables = table_names(self.prefix)
        return {name: sql.format(**tables) for name, sql in SESSIONS_SQL.items()}

    async def save_run(
        self, run: WorkflowRunOutput, *, create: bool = False, summary: bool = False
    ) -> None:
        """Create or update the run's row and its session's, in one transaction. Called by the
        engine as the run starts (RUNNING, `create=True`: a run id already stored is refused
        with a ValidationError naming run_id, and nothing is written) and as it ends; the session
        takes the run's session_state only from the save at its end. `summary=True`: the
        engine's second try after the save at the end failed (see sessions.session_params)."""
        # Encoded here, on the caller's thread: the run's objects change while it lasts.
        session, row = session_params(run, summary=summary), run_params(run)

        def op(conn: sqlite3.Connection) -> None:
            if create:
                if conn.execute(self._sessions_sql["insert_run"], row).rowcount == 0:
                    raise ValidationError("run_id", run_taken(row["run_id"]))
            else:
                conn.execute(self._sessions_sql["upsert_run"], row)
            conn.execute(self._sessions_sql["upsert_session"], session)

        await self._write("save_run", op)

    async def save_spans(self, spans: list[Span]) -> None:
        """Store spans (each keyed by trace id and span id; saving one again replaces it)."""
        rows = [span_params(span) for span in spans]

        def op(conn: sqlite3.Connection) -> None:
            # Not the cursor: returned, it would be freed on the event loop's thread, resetting
            # its cached statement while the worker binds that statement for the next call
            # (sqlite3 "bad parameter or other API misuse" under concurrent saves).
            conn.executemany(self._sessions_sql["upsert_span"], rows)

        if rows:
            await self._write("save_spans", op)

    async def save_end(self, run: WorkflowRunOutput, spans: list[Span]) -> None:
        """The save at a run's end in one transaction: its row, its session's, its spans. All or
        nothing; the engine falls back to save_run and save_spans apart when it fails."""
        session, row = session_params(run), run_params(run)
        rows = [span_params(span) for span in spans]

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(self._sessions_sql["upsert_run"], row)
            conn.execute(self._sessions_sql["upsert_session"], session)
            if rows:
                conn.executemany(self._sessions_sql["upsert_span"], rows)

        await self._write("save_end", op)

    async def get_workflow_run(self, run_id: str) -> WorkflowRunOutput | None:
        """The run as last saved (spans left out: `get_trace`), or None."""

        def op() -> WorkflowRunOutput | None:
            sql = self._sessions_sql["get_run"]
            row = self._connect().execute(sql, {"run_id": clean_text(run_id)}).fetchone()
            return run_from_row(row, json_load) if row else None

        return await self._run("get_workflow_run", op)

    async def get_session(
        self, session_id: str, *, with_runs: bool = True, limit: int | None = None
    ) -> WorkflowSession | None:
        """The session with its runs in the order they started (none with with_runs=False; only
        the newest `limit` of them, still in start order, with a limit), or None."""
        limit = check_limit(limit)

        def op() -> WorkflowSession | None:
            conn = self._connect()
            args = {"session_id": clean_text(session_id), "limit": limit}
            row = conn.execute(self._sessions_sql["get_session"], args).fetchone()
            if row is None:
                return None
            found = ()
            if with_runs:
                sql = "session_runs" if limit is None else "session_runs_newest"
                found = conn.execute(self._sessions_sql[sql], args)
            return session_from_row(row, json_load, [run_from_row(r, json_load) for r in found])

        return await self._run("get_session", op)

    async def get_trace(self, run_id: str) -> list[TraceNode]:
        """The run's spans as a tree: roots first, each node's children in start order."""

        def op() -> list[TraceNode]:
            rows = self._connect().execute(
                self._sessions_sql["trace"], {"trace_id": clean_text(run_id)}
            )
            return span_tree(span_from_row(r, json_load) for r in rows)

        return await self._run("get_trace", op)


class SqliteStore(SqliteSessions, SqliteLeaseStore):
    """The embedded store with its workflow part: schedules, runs and leases (SqliteLeaseStore,
    whose arguments it takes) and workflow sessions, runs and traces in the same file."""
