"""The simulator's recording target: a Dispatcher that logs every request it is sent (schedule,
slot, attempt, idempotency key, replica, virtual time, outcome) and answers as each schedule's
behaviour and the injected target faults say, on the replica's own clock."""

from __future__ import annotations

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
            raise
        rec.end_at, rec.end_mono, rec.end_seq = _ended(sim)
        rec.status = outcome.status
        rec.retry_after = outcome.retry_after
        sim.maybe_crash(self.replica, "after_reply")
        return outcome

    async def aclose(self) -> None:
        pass


def _ended(sim: Any) -> tuple[float, float, int]:
    """When a request ended: wall time, monotonic time, event number."""
    return sim.clock.now(), sim.clock.monotonic(), sim.tick()
