"""Run-history retention and store housekeeping, shared by ScheduleManager.prune_runs (and so
`leasecron prune`) and every Scheduler's own low-frequency housekeeping task.

Pruning deletes final run rows in small batches, one transaction each, yielding to the event loop
between them: claims and outcome writes of this replica and others get the write lock in between,
so a large backlog never stalls firing. Then the store gives the freed space back where it can
(SQLite: incremental vacuum, then a checkpoint shrinks the file; Postgres has neither: autovacuum
reclaims the dead rows, and its store answers both trivially).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import LeaseStore, ScheduleStore

PRUNE_BATCH = 500  # run rows deleted per transaction
RECLAIM_PAGES = 1000  # free pages handed back per step (4 MB at the default page size)


async def prune_history(
    store: LeaseStore | ScheduleStore,
    before: float,
    *,
    batch: int = PRUNE_BATCH,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Delete every final run row created before `before`, `batch` rows per transaction, then
    return the space where the store allows it. Returns how many rows were deleted. Safe to run
    on several replicas at once: each batch deletes rows nobody else has deleted yet.
    `on_progress(rows deleted so far)` is called after each batch."""
    deleted = 0
    while True:
        count = await store.prune_runs(before, batch)
        deleted += count
        if on_progress is not None:
            on_progress(deleted)
        if count < batch:
            break
        await asyncio.sleep(0)
    if deleted:
        await reclaim_space(store)
    return deleted


async def reclaim_space(store: LeaseStore | ScheduleStore) -> int:
    """Hand the store's free pages back to the filesystem, a step at a time, then checkpoint so
    the file actually shrinks. Returns the pages given back (0 for a store without the notion)."""
    pages = 0
    while step := await store.reclaim_space(RECLAIM_PAGES):
        pages += step
        await asyncio.sleep(0)
    await checkpoint(store)
    return pages


async def checkpoint(store: LeaseStore | ScheduleStore) -> bool:
    """Bound the store's write-ahead log (SQLite: copy it into the file and truncate it); True if
    it completed or the store has no such log."""
    return await store.checkpoint()
