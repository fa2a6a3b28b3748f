"""Group commit on a real SQLite file (kernel/sqlite/group_commit.py): saves queued while the
store's worker is busy go in one transaction; one that fails fails alone; a batch whose
transaction is lost is run again write by write; a caller cancelled before its batch ran writes
nothing."""

from __future__ import annotations

import asyncio
import threading

import pytest

from leasecron.kernel import SqliteStore, StoreError, ValidationError, WorkflowRunOutput
from support import T0


def run(run_id: str, session_id: str = "s") -> WorkflowRunOutput:
    return WorkflowRunOutput(
        run_id=run_id, workflow_id="w", workflow_name="w", session_id=session_id, started_at=T0
    )


class Held:
    """The store's worker thread held busy until released, so writes queue up behind it."""

    def __init__(self, store: SqliteStore):
        self.gate = threading.Event()
        self.done = store._worker.submit(self.gate.wait)

    async def release(self) -> None:
        self.gate.set()
        await asyncio.wrap_future(self.done)


def commits(store: SqliteStore) -> list[str]:
    seen: list[str] = []
    store._call(lambda: store._connect().set_trace_callback(seen.append))
    return seen


async def settle_queue() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_saves_queued_together_share_one_commit_and_a_refused_one_fails_alone(tmp_path):
    store = SqliteStore(str(tmp_path / "g.db"))
    try:
        await store.save_run(run("taken"), create=True)
        trace = commits(store)
        held = Held(store)
        saves = [asyncio.ensure_future(store.save_run(run(f"r{i}"))) for i in range(20)]
        saves.append(asyncio.ensure_future(store.save_run(run("taken"), create=True)))
        saves.append(asyncio.ensure_future(store.set_run_ids("nobody", "no-row", "r0", "s")))
        await settle_queue()
        await held.release()
        results = await asyncio.gather(*saves, return_exceptions=True)
        assert [type(r) for r in results[:20]] == [type(None)] * 20
        assert isinstance(results[20], ValidationError) and results[20].field == "run_id"
        assert results[21] is None
        assert [s for s in trace if s.strip().upper() == "COMMIT"] == ["COMMIT"]
        for i in range(20):
            assert (await store.get_workflow_run(f"r{i}")).run_id == f"r{i}"
        assert len((await store.get_session("s")).runs) == 21
    finally:
        await store.close()


async def test_a_batch_whose_transaction_is_lost_is_run_again_write_by_write(tmp_path):
    store = SqliteStore(str(tmp_path / "g.db"))

    def lose_it(conn):  # as SQLite does itself on SQLITE_FULL: the whole transaction is gone
        conn.execute("ROLLBACK")
        raise StoreError("lose", RuntimeError("transaction rolled back"))

    try:
        held = Held(store)
        before = asyncio.ensure_future(store.save_run(run("before")))
        lost = asyncio.ensure_future(store._write("lose", lose_it))
        after = asyncio.ensure_future(store.save_run(run("after")))
        await settle_queue()
        await held.release()
        await before
        await after
        with pytest.raises(StoreError, match="transaction rolled back"):
            await lost
        assert (await store.get_workflow_run("before")).run_id == "before"
        assert (await store.get_workflow_run("after")).run_id == "after"
    finally:
        await store.close()


async def test_a_caller_cancelled_before_its_batch_ran_writes_nothing(tmp_path):
    store = SqliteStore(str(tmp_path / "g.db"))
    try:
        held = Held(store)
        kept = asyncio.ensure_future(store.save_run(run("kept")))
        dropped = asyncio.ensure_future(store.save_run(run("dropped")))
        await settle_queue()
        dropped.cancel()
        await settle_queue()
        await held.release()
        await kept
        with pytest.raises(asyncio.CancelledError):
            await dropped
        assert await store.get_workflow_run("kept") is not None
        assert await store.get_workflow_run("dropped") is None
    finally:
        await store.close()


async def test_a_write_after_close_fails_and_leaves_no_batch_behind(tmp_path):
    store = SqliteStore(str(tmp_path / "g.db"))
    await store.close()
    for _ in range(2):  # the second must fail as the first did, not wait on a lost batch
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(store.save_run(run("late")), timeout=60)
