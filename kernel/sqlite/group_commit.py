"""Group commit: the writes that queue up on a SQLite store's worker thread while it is busy go
in one transaction, so a burst of small saves (runs starting and ending, their spans, the run
ids a fire links) costs one commit instead of one each.

Each write is a function of the connection, run in a savepoint of its own: one that raises is
rolled back alone and raises to its caller only; the others are committed. If the transaction
itself is lost (SQLite rolls it back whole on some errors, SQLITE_FULL among them) or the commit
fails, every write of the batch is run again on its own, in its own transaction, as without
group commit. A write waits for its batch's commit, so once it returns it is durable as before.
This module owns the queue and the batch's transaction; the statements are the store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from ..offload import Worker, tracked

Write = Callable[[sqlite3.Connection], Any]
T = TypeVar("T")


class _Lost(Exception):
    """The batch's transaction is gone: run its writes one by one."""


class GroupCommit:
    """Writes for one connection, committed in batches on its worker thread."""

    def __init__(
        self,
        worker: Worker,
        connect: Callable[[], sqlite3.Connection],
        alone: Callable[[Write], Any],
    ):
        self._worker = worker
        self._connect = connect
        self._alone = alone  # one write in a transaction of its own (the store's _tx)
        self._lock = threading.Lock()
        self._pending: list[tuple[Write, Future[Any]]] = []

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in the next batch and return its result (or raise its error)."""
        future: Future[T] = Future()
        with self._lock:
            self._pending.append((fn, future))
            lead = len(self._pending) == 1
        if lead:  # the first write of a batch queues the batch; later ones join it until it runs
            try:
                self._worker.submit(self._commit)
            except BaseException as exc:  # the worker is shut down (the store closed)
                with self._lock:
                    batch, self._pending = self._pending, []
                for _, waiting in batch:
                    if waiting is not future:
                        waiting.set_exception(exc)
                raise
        with tracked():
            return await asyncio.wrap_future(future)

    # -- on the worker thread ------------------------------------------------------------------

    def _commit(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        # A caller cancelled before its batch ran: its write is not made (as with a plain call).
        batch = [(fn, f) for fn, f in batch if f.set_running_or_notify_cancel()]
        if len(batch) == 1:
            self._one(*batch[0])
            return
        if not batch:
            return
        try:
            results = self._together(batch)
        except Exception:
            for fn, future in batch:
                self._one(fn, future)
            return
        for (_, future), (ok, value) in zip(batch, results, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _together(self, batch: list[tuple[Write, Future[Any]]]) -> list[tuple[bool, Any]]:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        results: list[tuple[bool, Any]] = []
        try:
            for fn, _ in batch:
                conn.execute("SAVEPOINT one_write")
                try:
                    value = fn(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        raise _Lost from exc
                    conn.execute("ROLLBACK TO one_write")
                    conn.execute("RELEASE one_write")
                    results.append((False, exc))
                else:
                    conn.execute("RELEASE one_write")
                    results.append((True, value))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return results

    def _one(self, fn: Write, future: Future[Any]) -> None:
        try:
            future.set_result(self._alone(fn))
        except BaseException as exc:
            future.set_exception(exc)
