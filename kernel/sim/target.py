"""The simulator's recording target: a Dispatcher that logs every request it is sent (schedule,
slot, attempt, idempotency key, replica, virtual time, outcome) and answers as each schedule's
behaviour and the injected target faults say, on the replica's own clock.

The log (a `Trace`) lives in a scratch SQLite file, not in memory: a request is held only while
it is in flight, then written in batches, so a run of any length keeps the same footprint and the
checker reads the log back in pages."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..model import Fire, Outcome

if TYPE_CHECKING:  # the owner and its clock, imported for names only
    from .faults import ReplicaClock
    from .simulation import Simulation


@dataclass
class Request:
    """One request the target received."""

    seq: int
    at: float  # wall clock (jumps when it steps)
    mono: float  # monotonic clock
    replica: str  # the replica's id (name.generation)
    schedule_id: str
    slot: float | None
    attempt: int
    key: str
    run_row_id: str
    trigger: str
    end_at: float | None = None
    end_mono: float | None = None
    end_seq: int | None = None  # event order: wall times jump when the clock steps
    status: str | None = None
    cancelled: bool = False
    retry_after: float | None = None  # what the target asked for (429)


# The columns of a logged request, in Request's field order (rows are built as tuples: cheaper
# than dataclasses.astuple, which deep-copies).
REQUEST_COLUMNS = (
    "seq", "at", "mono", "replica", "schedule_id", "slot", "attempt", "key", "run_row_id",
    "trigger", "end_at", "end_mono", "end_seq", "status", "cancelled", "retry_after",
)  # fmt: skip

_SCHEMA = """
CREATE TABLE requests (
    seq INTEGER PRIMARY KEY, at REAL, mono REAL, replica TEXT, schedule_id TEXT, slot REAL,
    attempt INTEGER, key TEXT, run_row_id TEXT, trigger TEXT, end_at REAL, end_mono REAL,
    end_seq INTEGER, status TEXT, cancelled INTEGER, retry_after REAL
);
CREATE TABLE started (run_row_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


def request_row(r: Request) -> tuple:
    return (
        r.seq, r.at, r.mono, r.replica, r.schedule_id, r.slot, r.attempt, r.key, r.run_row_id,
        r.trigger, r.end_at, r.end_mono, r.end_seq, r.status, int(r.cancelled), r.retry_after,
    )  # fmt: skip


class Trace:
    """The target's request log and the event number at which each run row started, in a
    scratch SQLite file (no journal, no fsync: it lives as long as the run). Requests in flight
    stay in memory until they end (or until `close`, for those that never do)."""

    BATCH = 2000

    def __init__(self, path: str):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript(_SCHEMA)
        self.in_flight: dict[int, Request] = {}
        self.sent = 0
        self._ended: list[tuple] = []
        self._started: list[tuple[str, int]] = []

    def sending(self, rec: Request) -> None:
        self.in_flight[rec.seq] = rec
        self.sent += 1

    def ended(self, rec: Request) -> None:
        """The request has its final fields (reply, or cancellation): log it."""
        self.in_flight.pop(rec.seq, None)
        self._ended.append(request_row(rec))
        if len(self._ended) >= self.BATCH:
            self.flush()

    def started(self, run_row_id: str, seq: int) -> None:
        self._started.append((run_row_id, seq))
        if len(self._started) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        db = self.db
        db.execute("BEGIN")
        db.executemany(
            f"INSERT INTO requests VALUES ({','.join('?' * len(REQUEST_COLUMNS))})", self._ended
        )
        # the last start of a run row wins, as a dict would keep it
        db.executemany("INSERT OR REPLACE INTO started VALUES (?, ?)", self._started)
        db.execute("COMMIT")
        self._ended.clear()
        self._started.clear()

    def close(self) -> None:
        """Log what is still in flight (never answered: its sender died mid-call) and flush."""
        for rec in sorted(self.in_flight.values(), key=lambda r: r.seq):
            self._ended.append(request_row(rec))
        self.in_flight.clear()
        self.flush()


@dataclass
class Behaviour:
    """How the target answers one schedule."""

    fail_rate: float = 0.0
    duration: tuple[float, float] = (0.0, 0.5)
    agent: bool = False


class TargetDispatcher:
    """The recording target, as seen by one replica."""

    def __init__(self, sim: Simulation, replica: str, replica_id: str, clock: ReplicaClock):
        self.sim = sim
        self.replica = replica
        self.replica_id = replica_id
        self.clock = clock

    async def dispatch(self, fire: Fire, on_started=None) -> Outcome:
        sim = self.sim
        behaviour = sim.behaviours.get(fire.schedule_id, Behaviour())
        rng = sim.target_rng
        rec = sim.record(self.replica_id, fire)
        sim.maybe_crash(self.replica, "after_request")
        try:
            if behaviour.agent and on_started is not None:
                await on_started(f"run-{rec.seq}", f"sess-{rec.seq}")
            duration = rng.uniform(*behaviour.duration)
            fault = sim.target_fault()
            if fault == "timeout":
                duration = fire.timeout_seconds + 1.0
            if duration >= fire.timeout_seconds:
                await self.clock.sleep(fire.timeout_seconds)
                outcome = Outcome(status="timeout", retryable=True, error="timed out")
            else:
                if duration > 0:
                    await self.clock.sleep(duration)
                if fault == "reset":
                    outcome = Outcome(status="failed", retryable=True, error="connection reset")
                elif fault == "429":
                    outcome = Outcome(
                        status="failed",
                        status_code=429,
                        retryable=True,
                        retry_after=rng.choice((5.0, 30.0, 90.0)),
                        error="HTTP 429",
                    )
                elif fault == "5xx" or rng.random() < behaviour.fail_rate:
                    outcome = Outcome(
                        status="failed", status_code=503, retryable=True, error="HTTP 503"
                    )
                else:
                    outcome = Outcome(status="success", status_code=200)
        except BaseException:
            rec.end_at, rec.end_mono, rec.end_seq = _ended(sim)
            rec.cancelled = True
            sim.trace.ended(rec)
            raise
        rec.end_at, rec.end_mono, rec.end_seq = _ended(sim)
        rec.status = outcome.status
        rec.retry_after = outcome.retry_after
        sim.trace.ended(rec)
        sim.maybe_crash(self.replica, "after_reply")
        return outcome

    async def aclose(self) -> None:
        pass


def _ended(sim: Any) -> tuple[float, float, int]:
    """When a request ended: wall time, monotonic time, event number."""
    return sim.clock.now(), sim.clock.monotonic(), sim.tick()
