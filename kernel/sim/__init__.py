"""The deterministic simulator (`simulation.py`; its `config.py`, `result.py` and the run rows'
`readback.py`): replicas on one real store under one SimClock, with faults (`faults.py`) and a
recording target (`target.py`); and the checker of the lease algorithm's invariants over what
happened (`check.py` and its `check_*.py`).
Imports the kernel; nothing in the kernel imports this folder except the CLI's `sim` command.
"""
