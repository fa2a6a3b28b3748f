"""The runs this process saved, as the store gives them back: a poll of a run this process ran
(in flight, or ended lately) is answered from memory instead of a store read.

`SavedRuns` keeps, per run id, the copy of the run its last successful save wrote, decoded as a
store read decodes it (its row's values through JSON and back), so an answer from here is the
answer a store read gives. It is bounded: the oldest entries go first, and a run not here is
read from the store, as before. `RecordingStore` is the store a run saves through: the app's
store, with every successful `save_run` / `save_end` noted in the cache. Only this process
writes the rows of the runs it ran (their ids are its own), so the last save it made is what the
store holds.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from leasecron.kernel import WorkflowRunOutput
from leasecron.kernel.rows import json_load
from leasecron.kernel.workflow.sessions import run_from_row, run_params

# Enough for every run in flight plus the recent ones a scheduler still polls; a run pushed out
# is read from the store.
LIMIT = 10_000


def as_stored(run: WorkflowRunOutput) -> WorkflowRunOutput:
    """The run as a store read returns it after saving it now (the same encoding and decoding;
    spans left out)."""
    return run_from_row(run_params(run), json_load)


class SavedRuns:
    """Run id -> the run as last saved by this process, the newest `limit` of them."""

    def __init__(self, limit: int = LIMIT):
        self.limit = limit
        # A run as saved: its row (decoded on first read: most start saves are never read) or
        # the run decoded from it.
        self._runs: OrderedDict[str, WorkflowRunOutput | dict[str, Any]] = OrderedDict()
        # Runs submitted here whose first save has not returned: the store holds no row of them.
        self._unsaved: set[str] = set()
        self.on_saved: Callable[[str], None] | None = None  # told each run id as it is saved

    def submitted(self, run_id: str) -> None:
        self._unsaved.add(run_id)

    def ended(self, run_id: str) -> None:
        """The run's task is over: whatever it saved (or not) is in the store now."""
        self._unsaved.discard(run_id)

    def unsaved(self, run_id: str) -> bool:
        """The run is this process's and nothing of it is stored yet."""
        return run_id in self._unsaved

    def put(self, run: WorkflowRunOutput | dict[str, Any]) -> None:
        """Keep a run as saved: the run as a store read gives it, or its row (run_params)."""
        run_id = run["run_id"] if isinstance(run, dict) else run.run_id
        self._unsaved.discard(run_id)
        self._runs[run_id] = run
        self._runs.move_to_end(run_id)
        while len(self._runs) > self.limit:
            self._runs.popitem(last=False)
        if self.on_saved is not None:
            self.on_saved(run_id)

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._runs

    def get(self, run_id: str) -> WorkflowRunOutput | None:
        found = self._runs.get(run_id)
        if isinstance(found, dict):
            found = self._runs[run_id] = run_from_row(found, json_load)
        return found

    def forget(self, run_id: str) -> None:
        self._unsaved.discard(run_id)
        self._runs.pop(run_id, None)

    def __len__(self) -> int:
        return len(self._runs)


class RecordingStore:
    """The app's store as a workflow saves through it: every other attribute is the store's own,
    and `save_run` / `save_end` (when the store has them) note what they saved in `saved`."""

    def __init__(self, store: Any, saved: SavedRuns):
        self.store = store
        self.saved = saved

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.store, name)
        if name not in ("save_run", "save_end"):
            return found
        saved = self.saved

        # wraps: the engine reads the store method's signature for the options it takes.
        @functools.wraps(found)
        async def recorded(run: WorkflowRunOutput, *args: Any, **options: Any) -> None:
            # Copied now: the run goes on changing while the save is in flight.
            try:
                copy = run_params(run)  # the row the store writes; decoded when read
            except Exception:  # the store says what is wrong with it (or keeps it its own way)
                copy = None
            try:
                await found(run, *args, **options)
            except BaseException:
                if copy is None:  # did it write? only the store can say now
                    saved.forget(run.run_id)
                raise
            if copy is None:
                saved.forget(run.run_id)  # the store read decides
            else:
                saved.put(copy)

        setattr(self, name, recorded)  # built once per name
        return recorded
