"""What a cluster looks like from outside: its status as the store shows it (`status.py`), the
replicas' events counted for Prometheus (`metrics.py`) and turned into log lines (`eventlog.py`).
Reads through the manager and the scheduler's `on_event` hook only; never writes a store.
"""
