"""Workflows: `Workflow` (`engine.py`: a run, its ids, status and hand-off to a store), the step
types (`steps.py`: Step, Steps, Parallel; `flow.py`: Loop, Router, Condition; what they share in
`nodes.py`, `calls.py` and `branch_state.py`), the values they
pass (`types.py`), CEL decisions (`cel.py`), spans (`trace.py`), sessions, runs and traces as
stored (`sessions.py`) and the SQLite store's statements and methods for them (`sqlite.py`,
`sqlite_sql.py`).
Imports the lease core (clock, errors, offload, rows) only; the scheduler, sqlite/ and the rest
of the kernel never need this folder, so a copy of the kernel without it still schedules.
"""
