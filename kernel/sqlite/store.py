"""SqliteLeaseStore: the embedded store of schedules, runs and leases. One file, WAL mode; every
lease statement it runs is in sql.py, each with the race it closes. `SqliteStore` is this store
with the workflow part (workflow/sqlite.py) when the kernel carries workflow/. Blocking sqlite3
calls run on the store's own worker thread (or inline, for deterministic simulation), never on
the event loop.

Transactions take the write lock up front (BEGIN IMMEDIATE): within one, nothing another replica
or process commits can interleave, so "read the row, decide, write it" is safe. The re-checks in
the WHERE clauses still matter: they are what makes a write by a holder that lost its lease a no-op.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, TypeVarTuple

from .. import writes
from ..clock import Clock
from ..errors import ScheduleExistsError, StoreError
from ..manager_writes import ManagerWrites
from ..model import Schedule, ScheduleRun
from ..offload import Worker
from ..rows import json_dump, schedule_filter, to_run, to_schedule
from ..store import Claim, FinishPlan, StartPlan
from .group_commit import GroupCommit
from .rounds import SetRounds
from .schema import (  # noqa: F401
    MIGRATIONS,
    SCHEMA_VERSION,
    check_readable,
    migrate,
    schema_version,
    table_names,
)
from .sql import _FAR, LEASE_SQL, ROUND_SQL

WAL_SIZE_LIMIT = 16 * 1024 * 1024  # bytes a WAL is cut back to after a checkpoint
# Prepared statements a connection keeps: a set-based round's text differs by its number of rows
# (kinds x round sizes), and sqlite3's default of 128 would re-prepare the common ones.
STATEMENT_CACHE = 512

T = TypeVar("T")
Args = TypeVarTuple("Args")


class SqliteLeaseStore(ManagerWrites):
    """The kernel's Store on one SQLite file.

    path: a file path (":memory:" works for a single store object).
    prefix: table name prefix (default "agno_": agno_schedules, agno_schedule_runs, and for
        workflows agno_sessions, agno_workflow_runs, agno_traces).
    inline: run statements on the calling thread instead of the worker thread. Deterministic, for
        the simulator and tests; a busy file would then block the event loop.
    readonly: open an existing file for reading only: nothing is created or migrated (a file of
        an older schema version is read as it is), so it works on a read-only file or directory.
        A missing file, or one without leasecron's tables, is a StoreError("open").
    """

    def __init__(
        self,
        path: str,
        *,
        prefix: str = "agno_",
        inline: bool = False,
        busy_timeout: float = 10.0,
        readonly: bool = False,
    ):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,40}", prefix):
            raise ValueError(f"prefix: {prefix!r} must be letters, digits and underscores")
        self.path = str(path)
        self.prefix = prefix
        tables = table_names(prefix)
        self.schedules_table = tables["S"]
        self.runs_table = tables["R"]
        self.sessions_table = tables["SE"]
        self.workflow_runs_table = tables["WR"]
        self.traces_table = tables["TR"]
        self._sql = {
            name: sql.format(S=self.schedules_table, R=self.runs_table, far=_FAR)
            for name, sql in LEASE_SQL.items()
        }
        self._rounds = SetRounds(
            {
                name: (
                    columns.split(),
                    sql.format(S=self.schedules_table, R=self.runs_table, far=_FAR, rows="{rows}"),
                )
                for name, (columns, sql) in ROUND_SQL.items()
            }
        )
        self._listeners: list[Callable[[], None]] = []
        self._worker = None if inline else Worker(f"leasecron-sqlite-{prefix}")
        self._group = (
            None if self._worker is None else GroupCommit(self._worker, self._connect, self._tx)
        )
        self._local = threading.local()
        self._conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._busy_timeout = busy_timeout
        self.readonly = readonly
        if readonly:
            self._call(self._check_readable)
        else:
            self._call(self._migrate)

    # -- plumbing ------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None and self.readonly:
            self._conn = self._connect_readonly(self._busy_timeout)
        if self._conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=STATEMENT_CACHE,
            )
            conn.row_factory = sqlite3.Row
            # On a new, empty file, before the first table exists: the pages of pruned rows can
            # then be handed back to the filesystem (reclaim_space) instead of only reused inside
            # the file. An existing file is left as it is (setting it there writes the header,
            # which fails on a read-only file; see README for converting an old one).
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            # NORMAL in WAL mode: a commit survives a process crash; only an OS crash may lose
            # the last transactions, never corrupt the file.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            # A burst of writes grows the WAL; after a checkpoint it is cut back to this size
            # rather than kept at its high-water mark (checkpoint() truncates it to zero).
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._conn = conn
        return self._conn

    def _call(self, fn: Callable[[*Args], T], *args: *Args) -> T:
        if self._worker is None:
            return fn(*args)
        return self._worker.call(fn, *args)

    async def _run(self, operation: str, fn: Callable[[*Args], T], *args: *Args) -> T:
        try:
            if self._worker is None:
                return fn(*args)
            return await self._worker.run(fn, *args)
        except (ScheduleExistsError, StoreError):
            raise
        except sqlite3.Error as exc:
            raise StoreError(operation, exc) from exc

    async def _write(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A write that may share its transaction with others queued at the same time (group
        commit: group_commit.py); it fails, or commits, as it would on its own."""
        if self._group is None:
            return await self._run(operation, self._tx, fn)
        try:
            return await self._group.run(fn)
        except (ScheduleExistsError, StoreError):
            raise
        except sqlite3.Error as exc:
            raise StoreError(operation, exc) from exc

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn inside BEGIN IMMEDIATE ... COMMIT; roll back on any error."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            # SQLite has rolled back already after some errors (SQLITE_FULL among them); a
            # second ROLLBACK would fail and hide the error that matters.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _connect_readonly(self, timeout: float) -> sqlite3.Connection:
        """mode=ro writes nothing, but a WAL file's readers need its -shm file, which SQLite
        creates if missing: in a read-only directory that fails, and immutable=1 reads the main
        file without it (safe here: whoever could write the file could also have made the -shm)."""
        if not os.path.exists(self.path):
            raise StoreError("open", FileNotFoundError(f"no such database: {self.path}"))
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path))
        try:
            try:
                conn = self._probe(f"{uri}?mode=ro", timeout)
            except sqlite3.OperationalError:
                conn = self._probe(f"{uri}?immutable=1", timeout)
        except sqlite3.Error as exc:
            raise StoreError("open", exc) from exc
        conn.row_factory = sqlite3.Row
        return conn

    @staticmethod
    def _probe(uri: str, timeout: float) -> sqlite3.Connection:
        """A connection on `uri` that has read the file (opening alone reads nothing)."""
        conn = sqlite3.connect(
            uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_readable(self) -> None:
        try:
            check_readable(self._connect(), self.prefix, self.path, MIGRATIONS)
        except sqlite3.Error as exc:
            raise StoreError("open", exc) from exc

    def _migrate(self) -> None:
        self._tx(lambda conn: migrate(conn, self.prefix, self.path, MIGRATIONS))
        # WAL once the file is known to be ours: the mode is written into the file's header,
        # and a file whose tables belong to another program is refused untouched.
        self._connect().execute("PRAGMA journal_mode=WAL")

    async def schema_version(self) -> int:
        return await self._run(
            "schema_version", lambda: schema_version(self._connect(), self.prefix)
        )

    def execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[sqlite3.Row]:
        """Run one statement on the store's own connection, outside any flow, and return its
        rows: for tools that look into the file (the simulator's checks, a PRAGMA on a scratch
        file). Synchronous, on the store's thread; the lease algorithm never goes through here."""
        return self._call(lambda: self._connect().execute(sql, params).fetchall())

    def aligned_clock(self, local: Clock) -> Clock:
        """`local`: the file has no clock of its own, every replica runs on its host's."""
        return local

    # -- wake-ups --------------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def notify(self) -> None:
        """Wake every scheduler of this process that listens on this store."""
        for callback in list(self._listeners):
            callback()

    async def close(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._call(conn.close)
        if self._worker is not None:
            self._worker.shutdown()

    # -- schedules -------------------------------------------------------------------------------

    @staticmethod
    @contextlib.contextmanager
    def _unique_name(name: str) -> Iterator[None]:
        """A name taken by another row: the UNIQUE violation as ScheduleExistsError."""
        try:
            yield
        except sqlite3.IntegrityError as exc:
            if "name" in str(exc):
                raise ScheduleExistsError(name) from exc
            raise

    async def _transaction(self, operation: str, flow: writes.Flow[T], name: str = "") -> T:
        """A manager write (manager_writes.py): the flow as one transaction on the worker."""
        write = self._flow(flow)

        def op(conn: sqlite3.Connection) -> T:
            if not name:
                return write(conn)
            with self._unique_name(name):
                return write(conn)

        return await self._run(operation, self._tx, op)

    def _get(self, conn: sqlite3.Connection, column: str, value: str) -> Schedule | None:
        row = conn.execute(
            f"SELECT * FROM {self.schedules_table} WHERE {column} = ?", (value,)
        ).fetchone()
        return to_schedule(row, strict=False) if row else None

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return await self._run(
            "get_schedule", lambda: self._get(self._connect(), "id", schedule_id)
        )

    async def get_schedule_by_name(self, name: str) -> Schedule | None:
        return await self._run(
            "get_schedule_by_name", lambda: self._get(self._connect(), "name", name)
        )

    async def list_schedules(
        self,
        enabled: bool | None = None,
        *,
        user_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        name_contains: str | None = None,
    ) -> list[Schedule]:
        def op() -> list[Schedule]:
            where, args = self._filter(enabled, user_id, name_contains)
            args.update(limit=-1 if limit is None else limit, offset=offset)
            sql = f"SELECT * FROM {self.schedules_table}{where} ORDER BY name"
            rows = self._connect().execute(sql + " LIMIT :limit OFFSET :offset", args).fetchall()
            return [to_schedule(r, strict=False) for r in rows]

        return await self._run("list_schedules", op)

    @staticmethod
    def _filter(
        enabled: bool | None, user_id: str | None, name_contains: str | None
    ) -> tuple[str, dict[str, Any]]:
        # instr, not LIKE: the needle's % and _ are plain characters. SQLite's lower() folds
        # A-Z only; other letters match in their own case.
        contains = "instr(lower(name), lower({needle})) > 0"
        return schedule_filter(enabled, user_id, lambda n: f":{n}", name_contains, contains)

    async def count_schedules(
        self,
        enabled: bool | None = None,
        *,
        user_id: str | None = None,
        name_contains: str | None = None,
    ) -> int:
        def op() -> int:
            where, args = self._filter(enabled, user_id, name_contains)
            sql = f"SELECT count(*) FROM {self.schedules_table}{where}"
            count: int = self._connect().execute(sql, args).fetchone()[0]
            return count

        return await self._run("count_schedules", op)

    async def list_runs(
        self, schedule_id: str | None, limit: int = 20, offset: int = 0
    ) -> list[ScheduleRun]:
        def op() -> list[ScheduleRun]:
            where, args = ("WHERE schedule_id = ?", (schedule_id,)) if schedule_id else ("", ())
            rows = (
                self._connect()
                .execute(
                    f"SELECT * FROM {self.runs_table} {where} "
                    f"ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                    (*args, limit, offset),
                )
                .fetchall()
            )
            return [to_run(r) for r in rows]

        return await self._run("list_runs", op)

    async def count_runs(self, schedule_id: str | None) -> int:
        def op() -> int:
            where, args = ("WHERE schedule_id = ?", (schedule_id,)) if schedule_id else ("", ())
            sql = f"SELECT count(*) FROM {self.runs_table} {where}"
            count: int = self._connect().execute(sql, args).fetchone()[0]
            return count

        return await self._run("count_runs", op)

    async def get_run(self, run_row_id: str) -> ScheduleRun | None:
        def op() -> ScheduleRun | None:
            row = (
                self._connect()
                .execute(f"SELECT * FROM {self.runs_table} WHERE id = ?", (run_row_id,))
                .fetchone()
            )
            return to_run(row) if row else None

        return await self._run("get_run", op)

    # -- the lease algorithm -----------------------------------------------------------------------

    async def next_due(self) -> float | None:
        """The idle poll. It runs on the calling thread over a read-only connection: in WAL mode
        a read neither waits for nor blocks a writer, and the probe takes microseconds, so the
        hop to the worker thread (~30 µs) would cost more than the query. Should SQLite answer
        busy all the same (a WAL recovery), the worker asks instead."""
        if self._worker is not None and self.path != ":memory:":
            try:
                due: float | None = self._reader().execute(self._sql["next_due"]).fetchone()[0]
                return due
            except sqlite3.OperationalError:
                pass
        return await self._run(
            "next_due", lambda: self._connect().execute(self._sql["next_due"]).fetchone()[0]
        )

    def _reader(self) -> sqlite3.Connection:
        if self._read_conn is None and self.readonly:
            self._read_conn = self._connect_readonly(0)
        if self._read_conn is None:
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA query_only = ON")
            self._read_conn = conn
        return self._read_conn

    async def claim(
        self, replica: str, now: float, lease_seconds: float, limit: int
    ) -> list[Claim]:
        """Lease up to `limit` due rows, with their runs (writes.claim)."""
        flow = writes.claim(replica, now, lease_seconds, limit)
        return await self._run("claim", self._tx, self._flow(flow))

    def _answer(self, conn: sqlite3.Connection, step: writes.Command) -> Any:
        """One statement of a shared write flow (kernel/writes.py). Lock and Notify need nothing
        here: BEGIN IMMEDIATE holds the file's write lock, and other processes poll."""
        if isinstance(step, writes.Count):
            return conn.execute(self._sql[step.name], step.params).rowcount
        if isinstance(step, writes.One):
            return conn.execute(self._sql[step.name], step.params).fetchone()
        if isinstance(step, writes.All):
            arrays = {k: json_dump(v) for k, v in step.params.items() if isinstance(v, list)}
            return conn.execute(self._sql[step.name], {**step.params, **arrays}).fetchall()
        if isinstance(step, writes.Many):
            conn.executemany(self._sql[step.name], step.params)
        if isinstance(step, writes.Update):
            sets = ", ".join(f"{column} = :{column}" for column in step.columns)
            return conn.execute(self._sql[step.name].format(sets=sets), step.params).rowcount
        if isinstance(step, writes.Insert):
            columns, values = ", ".join(step.params), ", ".join(f":{c}" for c in step.params)
            sql = self._sql[step.name].format(columns=columns, values=values)
            return conn.execute(sql, step.params).rowcount
        return None

    def _flow(self, flow: writes.Flow[T]) -> Callable[[sqlite3.Connection], T]:
        def drive(conn: sqlite3.Connection) -> T:
            def answer(step: writes.Command) -> Any:
                return self._answer(conn, step)

            return writes.run(flow, answer, lambda steps: self._rounds.run(conn, steps, answer))

        return drive

    async def start(
        self, replica: str, now: float, lease_seconds: float, plans: list[StartPlan]
    ) -> list[set[str] | None]:
        """writes.start, in one BEGIN IMMEDIATE transaction."""
        return await self._run("start", self._tx, self._flow(writes.start(replica, now, plans)))

    async def heartbeat(
        self, replica: str, now: float, lease_seconds: float, leases: list[tuple[str, int]]
    ) -> set[str]:
        """writes.heartbeat, in one transaction."""
        flow = writes.heartbeat(replica, now, lease_seconds, leases)
        return await self._run("heartbeat", self._tx, self._flow(flow))

    async def finish(self, replica: str, now: float, plans: list[FinishPlan]) -> list[bool]:
        """writes.finish, in one transaction."""
        flow = writes.finish(replica, now, plans)
        results = await self._run("finish", self._tx, self._flow(flow))
        if any(plan.retry is not None or plan.release for plan in plans):
            self.notify()
        return results

    async def reread_held(self, replica: str, leases: list[tuple[str, int]]) -> list[Claim]:
        """Rows this replica keeps leased, still held and enabled (writes.reread_held)."""
        flow = writes.reread_held(replica, leases)
        return await self._run("reread_held", self._tx, self._flow(flow))

    async def leases_of(self, replica: str, now: float) -> list[tuple[str, int]]:
        """The leases_of statement."""

        def op() -> list[tuple[str, int]]:
            rows = self._connect().execute(self._sql["leases_of"], {"replica": replica, "now": now})
            return [(row["id"], row["lease_version"]) for row in rows]

        return await self._run("leases_of", op)

    async def holds(self, replica: str, schedule_id: str, version: int) -> bool:
        """The held_row statement, answered as whether it found the row."""
        return await self._run(
            "holds",
            lambda: (
                self._connect()
                .execute(
                    self._sql["held_row"],
                    {"id": schedule_id, "replica": replica, "version": version},
                )
                .fetchone()
                is not None
            ),
        )

    async def expire_leases(self, replica: str, now: float, leases: list[tuple[str, int]]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            for schedule_id, version in leases:
                conn.execute(
                    self._sql["expire_lease"],
                    {"id": schedule_id, "replica": replica, "version": version, "now": now},
                )

        await self._run("expire_leases", self._tx, op)
        self.notify()

    async def set_run_ids(
        self, replica: str, run_row_id: str, run_id: str | None, session_id: str | None
    ) -> None:
        params = {"id": run_row_id, "replica": replica, "run_id": run_id, "session_id": session_id}

        def op(conn: sqlite3.Connection) -> None:
            # Returns None, not the cursor: see save_spans in kernel/workflow/sqlite.py.
            conn.execute(self._sql["set_run_ids"], params)

        await self._write("set_run_ids", op)

    async def prune_runs(self, before: float, limit: int | None = None) -> int:
        """Delete final run rows created before `before`, at most `limit` (None: all) in this
        transaction; returns how many. The pages they held stay in the file, free for new rows,
        until reclaim_space() hands them back."""
        params = {"before": before, "limit": -1 if limit is None else limit}
        return await self._run(
            "prune_runs",
            self._tx,
            lambda conn: conn.execute(self._sql["prune_runs"], params).rowcount,
        )

    async def reclaim_space(self, max_pages: int = 1000) -> int:
        """Give up to `max_pages` free pages back to the filesystem (incremental vacuum: free
        pages move to the end of the file, which the next checkpoint truncates); returns how
        many. 0 on a file created without auto_vacuum=INCREMENTAL (see README: VACUUM once)."""

        def op() -> int:
            conn = self._connect()
            before: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if before == 0:
                return 0
            # executescript steps the pragma to completion: execute() would free one page only.
            conn.executescript(f"PRAGMA incremental_vacuum({int(max_pages)})")
            after: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
            return before - after

        return await self._run("reclaim_space", op)

    async def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate the WAL to zero bytes, without
        waiting: a reader or writer in the way makes it a partial checkpoint (False), retried
        at the next call. This is also when a file that reclaim_space() emptied shrinks."""

        def op() -> bool:
            conn = self._connect()
            conn.execute("PRAGMA busy_timeout=0")
            busy: int  # 1 if a reader or writer kept the checkpoint from completing
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            return busy == 0

        return await self._run("checkpoint", op)
