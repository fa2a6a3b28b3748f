"""PostgresStore's workflow persistence (sessions, workflow runs, traces), apart from the lease
algorithm: `Workflow(db=store)` saves through it, and it reads runs, sessions and span trees back.
Its statements are in sessions_sql.py. A mixin of PostgresStore: it uses the store's
connection plumbing (`_run`, `_tx`, `_one`) and its formatted `_sessions_sql`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from leasecron.kernel.errors import ValidationError
from leasecron.kernel.workflow.sessions import (
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
from leasecron.kernel.workflow.trace import Span
from leasecron.kernel.workflow.types import WorkflowRunOutput

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.AsyncConnection


class PostgresSessions:
    """Workflow persistence for PostgresStore (see the module docstring)."""

    async def save_run(
        self, run: WorkflowRunOutput, *, create: bool = False, summary: bool = False
    ) -> None:
        """Create or update the run's row and its session's, in one transaction. Called by the
        engine as the run starts (RUNNING, `create=True`: a run id already stored is refused
        with a ValidationError naming run_id, and nothing is written) and as it ends; the session
        takes the run's session_state only from the save at its end. `summary=True`: the
        engine's second try after the save at the end failed (see sessions.session_params)."""
        # Encoded now: the run's objects change while it lasts.
        session, row = session_params(run, summary=summary), run_params(run)

        async def op(conn: Conn) -> None:
            if create:
                cur = await conn.execute(self._sessions_sql["insert_run"], row)
                if cur.rowcount == 0:
                    raise ValidationError("run_id", run_taken(row["run_id"]))
            else:
                await conn.execute(self._sessions_sql["upsert_run"], row)
            await conn.execute(self._sessions_sql["upsert_session"], session)

        await self._tx("save_run", op)

    async def save_spans(self, spans: list[Span]) -> None:
        """Store spans (each keyed by trace id and span id; saving one again replaces it)."""
        rows = [span_params(span) for span in spans]

        async def op(conn: Conn) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(self._sessions_sql["upsert_span"], rows)

        if rows:
            await self._tx("save_spans", op)

    async def save_end(self, run: WorkflowRunOutput, spans: list[Span]) -> None:
        """The save at a run's end in one transaction: its row, its session's, its spans. All or
        nothing; the engine falls back to save_run and save_spans apart when it fails."""
        session, row = session_params(run), run_params(run)
        rows = [span_params(span) for span in spans]

        async def op(conn: Conn) -> None:
            await conn.execute(self._sessions_sql["upsert_run"], row)
            await conn.execute(self._sessions_sql["upsert_session"], session)
            if rows:
                async with conn.cursor() as cur:
                    await cur.executemany(self._sessions_sql["upsert_span"], rows)

        await self._tx("save_end", op)

    async def get_workflow_run(self, run_id: str) -> WorkflowRunOutput | None:
        """The run as last saved (spans left out: `get_trace`), or None."""

        async def op(conn: Conn) -> WorkflowRunOutput | None:
            row = await self._one(
                conn, self._sessions_sql["get_run"], {"run_id": clean_text(run_id)}
            )
            return run_from_row(row, _decoded) if row else None

        return await self._run("get_workflow_run", op)

    async def get_session(
        self, session_id: str, *, with_runs: bool = True, limit: int | None = None
    ) -> WorkflowSession | None:
        """The session with its runs in the order they started (none with with_runs=False; only
        the newest `limit` of them, still in start order, with a limit), or None."""
        limit = check_limit(limit)
        args = {"session_id": clean_text(session_id), "limit": limit}

        async def op(conn: Conn) -> WorkflowSession | None:
            row = await self._one(conn, self._sessions_sql["get_session"], args)
            if row is None:
                return None
            runs = []
            if with_runs:
                sql = "session_runs" if limit is None else "session_runs_newest"
                cur = await conn.execute(self._sessions_sql[sql], args)
                runs = [run_from_row(r, _decoded) for r in await cur.fetchall()]
            return session_from_row(row, _decoded, runs)

        return await self._run("get_session", op)

    async def get_trace(self, run_id: str) -> list[TraceNode]:
        """The run's spans as a tree: roots first, each node's children in start order."""

        async def op(conn: Conn) -> list[TraceNode]:
            cur = await conn.execute(self._sessions_sql["trace"], {"trace_id": clean_text(run_id)})
            return span_tree(span_from_row(r, _decoded) for r in await cur.fetchall())

        return await self._run("get_trace", op)


def _decoded(value: Any) -> Any:
    """JSONB columns come back from psycopg already decoded."""
    return value
