"""The embedded store on one SQLite file.

Owns the SQLite statements (`sql.py`: every lease statement, each with the race it closes), the
tables and their migrations (`schema.py`, workflow tables included: the file's layout does not
depend on which folders a copy of the kernel carries), the store (`store.py`: `SqliteLeaseStore`,
the statements run on one worker thread), a lease round as one set-based statement per kind
(`rounds.py`) and group commit on that thread (`group_commit.py`).
Imports the lease core only; never the scheduler, cli/, http/ or adapters. `SqliteStore` is the
lease store with the workflow part (workflow/sqlite.py) when workflow/ is there, the lease store
alone in a copy without it.
"""

from typing import TYPE_CHECKING

from ..parts import WORKFLOW
from .store import SqliteLeaseStore

# mypy checks the whole kernel, workflow/ included: the store with its workflow part.
if TYPE_CHECKING or WORKFLOW:
    from ..workflow.sqlite import SqliteStore
else:
    SqliteStore = SqliteLeaseStore

__all__ = ["SqliteLeaseStore", "SqliteStore"]
