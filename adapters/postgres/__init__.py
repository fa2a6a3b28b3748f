"""`PostgresStore` (`store.py`: psycopg 3, a pool, the database's clock, the lease algorithm) with
every lease statement in `sql.py` (the race each closes is said on the SQLite statement of the
same name, kernel/sqlite/sql.py; `sql.py` says how Postgres differs); a lease round sent as one
set-based statement per kind in one round trip (`rounds.py`); its tables' migrations
(`migrate.py`, the tables themselves shared with SQLite in kernel/tables.py); its schedule and
run-history operations (`schedules.py`); LISTEN/NOTIFY wake-ups (`listen.py`); the workflow
sessions, runs and traces (`sessions.py`, `sessions_sql.py`).
Needs the `postgres` extra; imports the kernel, never the FastAPI adapter.
"""

from .store import PostgresStore

__all__ = ["PostgresStore"]
