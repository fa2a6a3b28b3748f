"""PostgresStore: the kernel's Store on PostgreSQL, over psycopg 3 (async) and psycopg_pool.

Same tables, same lease algorithm and the same semantics as SqliteStore; every lease statement it
runs is in sql.py, each with the race it closes, and the workflow persistence statements
(sessions, workflow runs, traces) are in sessions_sql.py. Where SQLite serialises every
transaction on the file's write lock (BEGIN IMMEDIATE), Postgres runs READ COMMITTED with row
locks: claim skips rows other transactions hold (FOR UPDATE SKIP LOCKED), and every other write
transaction takes its schedule rows' locks before the statements that decide (see
sql.py, "Transactions and locks"); the tables and their migrations are in migrate.py.

Time: by default the database's clock is the authority. Schedulers and managers on this store get
an `AlignedClock` (`aligned_clock`), re-read with every idle poll, so every replica's `now` is the
server's within half a round trip, whatever its host's clock says.

A dropped connection or a server restart surfaces as StoreError ("not claimed", or "retry the
write"); the pool replaces broken connections on the next call and the scheduler backs off.

Wake-ups cross hosts: a write that can make work due sooner for another replica sends NOTIFY on
the store's channel in its own transaction, and a store with listeners keeps one LISTEN
connection that wakes them. Polling stays the safety net for anything missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypedDict

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from leasecron.kernel import writes
from leasecron.kernel.clock import AlignedClock, Clock, SystemClock
from leasecron.kernel.errors import ScheduleExistsError, StoreError
from leasecron.kernel.offload import tracked
from leasecron.kernel.rows import Row
from leasecron.kernel.store import Claim, FinishPlan, StartPlan, orphan_places

from .listen import relay_notifications
from .migrate import migrate, schema_version
from .rounds import SetRounds, round_column
from .schedules import PostgresSchedules
from .sessions import PostgresSessions
from .sessions_sql import SESSIONS_SQL
from .sql import LEASE_SQL, META_SQL, ROUND_SQL

log = logging.getLogger("leasecron")


class _Keepalive(TypedDict):
    keepalives: int
    keepalives_idle: int
    keepalives_interval: int
    keepalives_count: int


# A TypedDict, so that the type checker sees these keys cannot be a connect() parameter.
_KEEPALIVE: _Keepalive = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
_CHECK_IDLE_AFTER = 5.0  # seconds a pooled connection may idle before it is checked on checkout

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")
# Connection errors that waiting cannot cure: the pool would retry them until connect_timeout,
# logging a warning per attempt. libpq gives no SQLSTATE for them, only the server's words.
_HOPELESS = re.compile(
    r'database ".*" does not exist|role ".*" does not exist|authentication failed'
    r"|no pg_hba\.conf entry|no password supplied|permission denied for database"
)
_PROBE_TIMEOUT = 2  # seconds the first direct connect may take before the pool takes over

Conn = psycopg.AsyncConnection[dict[str, Any]]  # every connection makes dict rows


class PostgresStore(PostgresSchedules, PostgresSessions, SetRounds):
    """The kernel's Store on a PostgreSQL database.

    dsn: a libpq connection string or URI ("postgresql://user@host:5432/db").
    schema: the schema holding the tables (created if missing; default "public").
    prefix: table name prefix (default "agno_": agno_schedules, agno_schedule_runs, and for
        workflows agno_sessions, agno_workflow_runs, agno_traces).
    min_size, max_size: the connection pool's bounds.
    connect_timeout: seconds the first open waits for min_size connections.
    time_authority: "database" (default): schedulers and managers on this store whose clock is
        a wall clock (SystemClock, the default) run on the server's clock (see aligned_clock),
        so skewed app hosts agree; any other clock they are given (a SimClock) is used as is.
        "local": every clock is used as given.
    clock_sql: the SQL expression read as the authority's time, epoch seconds.
    The pool opens and the tables are created or migrated on first use, or by `await open()`.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        prefix: str = "agno_",
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 10.0,
        time_authority: str = "database",
        clock_sql: str = "extract(epoch from clock_timestamp())::float8",
    ):
        if not _NAME.fullmatch(prefix):
            raise ValueError(f"prefix: {prefix!r} must be letters, digits and underscores")
        if not _NAME.fullmatch(schema):
            raise ValueError(f"schema: {schema!r} must be letters, digits and underscores")
        if time_authority not in ("database", "local"):
            raise ValueError(f"time_authority: {time_authority!r} must be 'database' or 'local'")
        self.time_authority = time_authority
        self.dsn = dsn
        self.schema = schema
        self.prefix = prefix
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.schedules_table = f'"{schema}"."{prefix}schedules"'
        self.runs_table = f'"{schema}"."{prefix}schedule_runs"'
        self.meta_table = f'"{schema}"."{prefix}leasecron_meta"'
        self.sessions_table = f'"{schema}"."{prefix}sessions"'
        self.workflow_runs_table = f'"{schema}"."{prefix}workflow_runs"'
        self.traces_table = f'"{schema}"."{prefix}traces"'
        self._sql = {
            name: sql.format(S=self.schedules_table, R=self.runs_table, clock=clock_sql)
            for name, sql in LEASE_SQL.items()
        }
        self._round_sql = {
            name: sql.format(S=self.schedules_table, R=self.runs_table)
            for name, (_, sql) in ROUND_SQL.items()
        }
        self._round_columns = {
            name: [round_column(column) for column in spec.split(",")]
            for name, (spec, _) in ROUND_SQL.items()
        }
        self._sessions_sql = {
            name: sql.format(**self._tables()) for name, sql in SESSIONS_SQL.items()
        }
        self._meta = {
            name: sql.format(M=self.meta_table, schema=f'"{schema}"')
            for name, sql in META_SQL.items()
        }
        # One channel per (schema, prefix): replicas sharing tables wake each other, others don't.
        # Postgres caps identifiers at 63 bytes; two long names sharing a truncated channel only
        # cost each other spurious wake-ups.
        self.channel = f"leasecron_{schema}_{prefix}"[:63]
        self._clocks: weakref.WeakSet[AlignedClock] = weakref.WeakSet()
        # connection -> when a call last finished on it (weak: closed connections drop out)
        self._used_at: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self._poll_conn: Conn | None = None  # next_due's own connection
        self._poll_lock: asyncio.Lock | None = None  # made on first use, in the store's loop
        self._listeners: list[Callable[[], None]] = []
        self._listen_task: asyncio.Task[None] | None = None
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._open_lock: asyncio.Lock | None = None
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the pool and bring the tables up to this version. Idempotent; every operation
        calls it, so an explicit open only moves the cost (and a connection error) up front."""
        try:
            await self._open()
        except psycopg.Error as exc:
            raise StoreError("open", exc) from exc

    async def _open(self) -> None:
        if self._pool is not None:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._pool is not None:
                return
            if self._closed:
                raise RuntimeError("PostgresStore is closed")
            pool = AsyncConnectionPool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                # TCP keepalives: a server that vanished (host down, network cut) fails the call
                # in seconds instead of leaving it waiting on a dead socket.
                kwargs={"autocommit": True, "row_factory": dict_row, **_KEEPALIVE},
                check=self._check_if_idle,
                open=False,
                name=f"leasecron-{self.schema}-{self.prefix}",
            )
            try:
                await self._probe()
                await pool.open(wait=True, timeout=self.connect_timeout)
                async with pool.connection() as conn:
                    await self._migrate(conn)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
        self._start_listening()

    async def _probe(self) -> None:
        """One direct connect before the pool opens: a wrong database name or password fails at
        once, with the server's one line. Anything else (a server not up yet) is left to the
        pool, which retries until connect_timeout."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=max(1, min(_PROBE_TIMEOUT, int(self.connect_timeout))),
                **_KEEPALIVE,
            )
        except psycopg.OperationalError as exc:
            if _HOPELESS.search(str(exc)):
                raise
            return
        await conn.close()

    async def _check_if_idle(self, conn: Conn) -> None:
        """The pool's check on checkout: a round trip, paid only by a connection idle for a while
        (a server restart or an idle timeout may have cut it). A hot connection skips it, so the
        idle poll costs one round trip, not two; one cut since its last use fails that call as a
        StoreError, which every caller retries."""
        if time.monotonic() - self._used_at.get(conn, 0.0) > _CHECK_IDLE_AFTER:
            await AsyncConnectionPool.check_connection(conn)

    async def _migrate(self, conn: Conn) -> None:
        await migrate(conn, self.schema, self.prefix, self._tables(), self._meta)

    def _tables(self) -> dict[str, str]:
        """The placeholders of the schema and SQL texts, as in kernel/sqlite/schema.py."""
        return {
            "S": self.schedules_table,
            "R": self.runs_table,
            "SE": self.sessions_table,
            "WR": self.workflow_runs_table,
            "TR": self.traces_table,
        }

    async def _version(self, conn: Conn) -> int:
        return await schema_version(conn, self._meta)

    async def schema_version(self) -> int:
        """The version recorded in the meta table."""
        return await self._run("schema_version", self._version)

    async def _run(self, operation: str, fn: Callable[[Conn], Awaitable[Any]]) -> Any:
        """Run fn on a pooled connection (autocommit: one statement, one transaction); psycopg
        errors leave the store once, as StoreError(operation)."""
        try:
            with tracked():
                await self._open()
                assert self._pool is not None
                # a server that is down fails the call after connect_timeout, not the pool's 30 s
                async with self._pool.connection(timeout=self.connect_timeout) as conn:
                    try:
                        return await fn(conn)
                    finally:
                        self._used_at[conn] = time.monotonic()
        except (ScheduleExistsError, StoreError):
            raise
        except psycopg.Error as exc:
            raise StoreError(operation, exc) from exc

    async def _tx(self, operation: str, fn: Callable[[Conn], Awaitable[Any]]) -> Any:
        """Run fn inside one transaction; rolled back on any error."""

        async def op(conn: Conn) -> Any:
            async with conn.transaction():
                return await fn(conn)

        return await self._run(operation, op)

    @staticmethod
    async def _one(conn: Conn, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        cur = await conn.execute(sql, params)
        return await cur.fetchone()

    @staticmethod
    async def _count(conn: Conn, sql: str, params: Mapping[str, Any]) -> int:
        cur = await conn.execute(sql, params)
        return cur.rowcount

    async def _notify_others(self, conn: Conn) -> None:
        """Wake the other replicas once this transaction commits (see sql.py "notify")."""
        await conn.execute(self._sql["notify"], {"channel": self.channel})

    async def _lock(self, conn: Conn, ids: list[str]) -> dict[str, bool]:
        """Lock these schedule rows (id order) for the rest of the transaction; id -> enabled
        for the rows that exist."""
        if not ids:
            return {}
        cur = await conn.execute(self._sql["lock_schedules"], {"ids": sorted(set(ids))})
        return {row["id"]: row["enabled"] for row in await cur.fetchall()}

    # -- wake-ups --------------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)
        self._start_listening()

    def remove_listener(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def notify(self) -> None:
        """Wake every scheduler of this process that listens on this store (other hosts are
        woken by the NOTIFY each write sends in its transaction)."""
        for callback in list(self._listeners):
            callback()

    def _start_listening(self) -> None:
        # Started lazily: add_listener may run outside an event loop (then open() starts it), and
        # a store nobody listens on (a manager's) needs no extra connection.
        if self._listen_task is not None or self._closed or not self._listeners:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._listen_task = loop.create_task(self._listen(), name=f"leasecron-{self.channel}")

    async def _listen(self) -> None:
        await relay_notifications(self.dsn, self.channel, self.connect_timeout, self.notify)

    async def close(self) -> None:
        self._closed = True
        if self._listen_task is not None:
            task, self._listen_task = self._listen_task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._poll_conn is not None:
            conn, self._poll_conn = self._poll_conn, None
            await conn.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # -- the lease algorithm -----------------------------------------------------------------------

    async def next_due(self) -> float | None:
        """The idle poll: one index probe, one round trip; with the database as time authority,
        the same round trip reads its clock for every aligned clock of this store."""
        clocks = list(self._clocks)
        sql = self._sql["next_due_and_now" if clocks else "next_due"]
        try:
            if self._poll_lock is None:
                self._poll_lock = asyncio.Lock()
            with tracked():
                async with self._poll_lock:
                    conn = await self._poll_connection()
                    sent = [clock.monotonic() for clock in clocks]
                    try:
                        cur = await conn.execute(sql)
                        row = await cur.fetchone()
                    except BaseException:
                        # broken, or cancelled mid-query: the next poll opens a fresh one
                        self._poll_conn = None
                        await conn.close()
                        raise
        except psycopg.Error as exc:
            raise StoreError("next_due", exc) from exc
        assert row is not None  # a SELECT without FROM: always one row
        for clock, at in zip(clocks, sent, strict=True):
            clock.observe(row["now"], at, clock.monotonic())
        return row["due"]

    async def _poll_connection(self) -> Conn:
        """The idle poll's own connection, opened on first use: the poll is the loop's hottest
        call, and a pool checkout (locks, bookkeeping) would cost about as much as the query."""
        await self._open()  # the tables exist before the first poll
        if self._poll_conn is None or self._poll_conn.closed:
            self._poll_conn = await psycopg.AsyncConnection.connect(
                self.dsn,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(1, int(self.connect_timeout)),
                **_KEEPALIVE,
            )
        return self._poll_conn

    # -- time --------------------------------------------------------------------------------------

    def aligned_clock(self, local: Clock) -> Clock:
        """The clock schedulers and managers on this store use: a wall clock (`SystemClock`, the
        default) kept to the database's (time_authority="database", the default), or `local`
        itself. A clock of another kind (a SimClock, a clock of the caller's own) is the
        caller's explicit choice of time and always wins: replaced, a SimClock advanced ten
        minutes would fire nothing, as the server's clock had not moved. With "local", every
        clock is used as given."""
        if (
            self.time_authority == "local"
            or not isinstance(local, SystemClock)
            or local in self._clocks
        ):
            return local
        clock = AlignedClock(local, self.server_time)
        self._clocks.add(clock)
        return clock

    async def reclaim_space(self, max_pages: int = 1000) -> int:
        """0: autovacuum gives a pruned row's space back on its own."""
        return 0

    async def checkpoint(self) -> bool:
        """True: the server manages its own write-ahead log."""
        return True

    async def server_time(self) -> float:
        """The time authority's clock, epoch seconds (one round trip)."""

        async def op(conn: Conn) -> float:
            return (await self._one(conn, self._sql["server_time"]))["now"]

        return await self._run("server_time", op)

    async def _claims_of(
        self,
        conn: Conn,
        rows: Sequence[Row],
        replica: str | None = None,
        now: float = 0.0,
    ) -> list[Claim]:
        """Claims of claimed rows, with their pending and running runs (writes.claims_of)."""
        return await self._flow(writes.claims_of(rows, replica, now))(conn)

    async def claim(
        self, replica: str, now: float, lease_seconds: float, limit: int
    ) -> list[Claim]:
        async def op(conn: Conn) -> list[Claim]:
            cur = await conn.execute(
                self._sql["claim"],
                {
                    "replica": replica,
                    "now": now,
                    "lease_until": now + lease_seconds,
                    "limit": limit,
                    "orphans": orphan_places(limit),
                },
            )
            rows = await cur.fetchall()
            rows.sort(key=lambda r: (r["due_at"], r["id"]))  # RETURNING order is unspecified
            return await self._claims_of(conn, rows, replica, now)

        return await self._tx("claim", op)

    async def _answer(self, conn: Conn, step: writes.Command) -> Any:
        """One step of a shared write flow (leasecron.kernel.writes): a statement, or a Batch
        of them sent in pipeline mode (one round trip for the round, not one per row)."""
        if isinstance(step, writes.Batch):
            if len(step.steps) == 1:
                return [await self._answer(conn, step.steps[0])]
            return await self._round(conn, step.steps)
        if isinstance(step, writes.Count):
            return await self._count(conn, self._sql[step.name], step.params)
        if isinstance(step, writes.One):
            return await self._one(conn, self._sql[step.name], step.params)
        if isinstance(step, writes.All):
            cur = await conn.execute(self._sql[step.name], step.params)
            return await cur.fetchall()
        if isinstance(step, writes.Many):
            async with conn.cursor() as cur:
                await cur.executemany(self._sql[step.name], step.params)
            return None
        if isinstance(step, writes.Lock):
            return await self._lock(conn, step.ids)
        if isinstance(step, writes.Update):
            sets = ", ".join(f"{column} = %({column})s" for column in step.columns)
            sql = self._sql[step.name].format(sets=sets)
            return await self._count(conn, sql, step.params)
        if isinstance(step, writes.Insert):
            columns = ", ".join(step.params)
            values = ", ".join(f"%({column})s" for column in step.params)
            sql = self._sql[step.name].format(columns=columns, values=values)
            return await self._count(conn, sql, step.params)
        return await self._notify_others(conn)

    def _flow(self, flow: writes.Flow) -> Callable[[Conn], Awaitable[Any]]:
        return lambda conn: writes.arun(flow, lambda step: self._answer(conn, step))

    async def start(
        self, replica: str, now: float, lease_seconds: float, plans: list[StartPlan]
    ) -> list[set[str] | None]:
        """Apply start plans; per plan the set of run row ids now running, or None if fenced out."""
        return await self._tx("start", self._flow(writes.start(replica, now, plans)))

    async def heartbeat(
        self, replica: str, now: float, lease_seconds: float, leases: list[tuple[str, int]]
    ) -> set[str]:
        """Extend the given leases; returns the ids whose lease was taken over (lost)."""
        flow = writes.heartbeat(replica, now, lease_seconds, leases)
        return await self._tx("heartbeat", self._flow(flow))

    async def finish(self, replica: str, now: float, plans: list[FinishPlan]) -> list[bool]:
        """Record outcomes. Per plan True if the outcome was recorded (this holder still owned the
        attempt); the schedule-side writes are fenced separately on the lease."""
        results = await self._tx("finish", self._flow(writes.finish(replica, now, plans)))
        if any(plan.retry is not None or plan.release for plan in plans):
            self.notify()
        return results

    async def reread_held(self, replica: str, leases: list[tuple[str, int]]) -> list[Claim]:
        """Rows this replica keeps leased, still held and enabled (writes.reread_held)."""
        # REPEATABLE READ would make the rows and their runs one snapshot; the lease makes this
        # holder the only writer of the rows' runs except for the manager's triggers, which a
        # later re-read sees.
        return await self._tx("reread_held", self._flow(writes.reread_held(replica, leases)))

    async def leases_of(self, replica: str, now: float) -> list[tuple[str, int]]:
        """(schedule id, lease version) of every live lease `replica` holds."""

        async def op(conn: Conn) -> list[tuple[str, int]]:
            cur = await conn.execute(self._sql["leases_of"], {"replica": replica, "now": now})
            return [(row["id"], row["lease_version"]) for row in await cur.fetchall()]

        return await self._run("leases_of", op)

    async def holds(self, replica: str, schedule_id: str, version: int) -> bool:
        """Whether the row exists, is enabled and is leased to (replica, version)."""

        async def op(conn: Conn) -> bool:
            row = await self._one(
                conn,
                self._sql["held_row"],
                {"id": schedule_id, "replica": replica, "version": version},
            )
            return row is not None

        return await self._run("holds", op)

    async def expire_leases(self, replica: str, now: float, leases: list[tuple[str, int]]) -> None:
        async def op(conn: Conn) -> None:
            for schedule_id, version in sorted(leases):
                await conn.execute(
                    self._sql["expire_lease"],
                    {"id": schedule_id, "replica": replica, "version": version, "now": now},
                )
            if leases:
                await self._notify_others(conn)

        await self._tx("expire_leases", op)
        self.notify()

    async def set_run_ids(
        self, replica: str, run_row_id: str, run_id: str | None, session_id: str | None
    ) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                self._sql["set_run_ids"],
                {"id": run_row_id, "replica": replica, "run_id": run_id, "session_id": session_id},
            )

        await self._run("set_run_ids", op)
