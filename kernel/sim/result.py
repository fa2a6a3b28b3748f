"""What a simulation run leaves for the checker and the report: `SimResult` (the trace, the
faults' records, the rows at the end), its `Summary` counts and the report text."""

from __future__ import annotations

import hashlib
import resource
import sqlite3
import sys
from dataclasses import dataclass, field
from typing import Any

from ..model import Schedule
from .check import Violation
from .config import SimConfig


@dataclass
class Change:
    """A schedule change the workload made (the checker needs when it committed)."""

    at: float
    kind: str  # update | retime | disable | enable | delete | trigger
    schedule_id: str
    seq: int = 0


@dataclass
class Summary:
    """What the report counts, read from the trace and the runs table before they go."""

    fires: int = 0  # requests sent
    redelivered: int = 0  # same key and attempt sent more than once
    retries: int = 0  # retry rows that became attempts
    statuses: dict[str, int] = field(default_factory=dict)  # run rows by status
    digest: str = ""


@dataclass
class SimResult:
    config: SimConfig
    db: sqlite3.Connection | None  # the trace, with a `runs` view: read by the checker
    changes: list[Change]
    schedules: dict[str, Schedule]
    end_faults_at: float
    end_at: float
    faults: dict[str, int]
    crashes: list[tuple[str, float]]  # (replica id, when it died)
    specs: dict[str, Schedule]  # every schedule as created (deleted ones too)
    max_retries: dict[str, int]  # the largest max_retries each schedule ever had
    snapshot: dict[str, Schedule]  # the rows at the end of the drain, replicas still up
    snapshot_at: float
    alive: list[str]  # replica ids up at the snapshot
    open_runs: list[Any]  # run rows still running at the snapshot
    offsets: dict[str, float]  # replica id -> its clock's skew
    steps: list[tuple[int, float]]  # (event number, delta) of wall-clock steps
    crash_seq: dict[str, int]  # replica id -> event number of its death
    stalls: list[tuple[str, float, float]]  # (replica name, from, until), monotonic
    triggers: list[tuple[str, str]]  # (pending run id, schedule id) of every trigger made
    # (replica id, wall time, [(schedule id, lease expiry)], monotonic time) at each death
    deaths: list[tuple[str, float, list[tuple[str, float]], float]]
    step_times: list[tuple[float, float]]  # (monotonic time, delta) of wall-clock steps
    violations: list[Violation] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)
    wall_seconds: float = 0.0
    check_seconds: float = 0.0  # of wall_seconds, the check

    @property
    def fires(self) -> int:
        return self.summary.fires

    def digest(self) -> str:
        return self.summary.digest

    def summarise(self) -> None:
        """Fill `summary` from the trace and the runs table (streamed, in send order)."""
        db = self.db
        h = hashlib.sha256()
        fires = 0
        rows = db.execute(
            "SELECT seq, at, replica, key, attempt, status FROM requests ORDER BY seq"
        )
        for seq, at, replica, key, attempt, status in rows:
            h.update(f"{seq}|{at:.6f}|{replica}|{key}|{attempt}|{status}\n".encode())
            fires += 1
        (redelivered,) = db.execute(
            "SELECT coalesce(sum(n - 1), 0) FROM "
            "(SELECT count(*) AS n FROM requests GROUP BY key, attempt HAVING n > 1)"
        ).fetchone()
        (retries,) = db.execute(
            "SELECT count(*) FROM runs WHERE trigger = 'retry' AND status != 'pending'"
        ).fetchone()
        statuses = dict(db.execute("SELECT status, count(*) FROM runs GROUP BY status"))
        self.summary = Summary(fires, redelivered, retries, statuses, h.hexdigest()[:16])

    def report(self, wall: bool = True) -> str:
        statuses = self.summary.statuses
        retries = self.summary.retries
        redelivered = self.summary.redelivered

        def count(*kinds: str) -> int:
            return sum(v.kind in kinds for v in self.violations)

        lines = [
            f"leasecron sim seed={self.config.seed} replicas={self.config.replicas} "
            f"schedules={self.config.schedules} hours={self.config.hours:g} "
            f"faults={','.join(sorted(self.config.faults)) or 'none'}",
            f"fires (requests sent)     {self.fires}",
            f"re-deliveries (same key and attempt after a lost lease) {redelivered}",
            f"retries                   {retries}",
            f"skipped by policy         {statuses.get('skipped', 0)}",
            "run rows by status        "
            + " ".join(f"{k}={v}" for k, v in sorted(statuses.items())),
            "faults injected           "
            + " ".join(f"{k}={v}" for k, v in sorted(self.faults.items())),
            f"virtual time              {(self.end_at - self.config.start) / 3600:.2f} h",
            f"trace digest              {self.digest()}",
            f"duplicates                {count('duplicate', 'concurrent')}",
            f"lost                      {count('lost')}",
            f"violations                {len(self.violations)}",
        ]
        for v in self.violations[:10]:
            lines.append(f"  VIOLATION seed={self.config.seed} {v}")
        if wall:
            rate = self.fires / self.wall_seconds if self.wall_seconds else 0.0
            lines.append(
                f"wall time                 {self.wall_seconds:.1f} s "
                f"({rate:,.0f} simulated fires per wall second; the check "
                f"{self.check_seconds:.1f} s of it)"
            )
            lines.append(f"max RSS                   {max_rss_mib():.0f} MiB (this process so far)")
        return "\n".join(lines)


def max_rss_mib() -> float:
    """The process's peak resident set size, MiB (getrusage: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
