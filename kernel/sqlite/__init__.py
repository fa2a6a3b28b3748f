"""The embedded store: `SqliteStore` on one SQLite file.

Owns the SQLite statements (`sql.py`: every lease statement, each with the race it closes), the
tables and their migrations (`schema.py`), the store itself (`store.py`: the statements run on
one worker thread) and group commit on that thread (`group_commit.py`).
Imports the lease core only; never the scheduler, the CLI, HTTP or adapters.
"""

from .store import SqliteStore

__all__ = ["SqliteStore"]
