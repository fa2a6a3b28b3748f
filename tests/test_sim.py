"""The simulator: deterministic replay, a seed sweep with every fault on, and proof that the
checker catches each kind of fault when the kernel is broken on purpose (test-only breakages)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from leasecron.kernel import SqliteStore
from leasecron.kernel.cli import main
from leasecron.kernel.policy import Planner
from leasecron.kernel.sim.simulation import ALL_FAULTS, T0, SimConfig, simulate

SMALL = dict(replicas=3, schedules=10, hours=1.0)


async def test_same_seed_same_run_different_seed_different_run():
    a = await simulate(SimConfig(seed=11, **SMALL))
    b = await simulate(SimConfig(seed=11, **SMALL))
    c = await simulate(SimConfig(seed=12, **SMALL))
    assert a.report(wall=False) == b.report(wall=False)
    assert a.digest() == b.digest() and a.fires > 100
    assert a.digest() != c.digest()
    assert sum(a.faults.values()) > 10  # faults really struck


async def test_progress_reports_each_simulated_hour_and_changes_nothing():
    seen: list[tuple[float, int]] = []
    config = dict(SMALL, hours=2.5)
    watched = await simulate(
        SimConfig(seed=21, on_progress=lambda h, n: seen.append((h, n)), **config)
    )
    plain = await simulate(SimConfig(seed=21, **config))
    assert [h for h, _ in seen] == [1.0, 2.0, 2.5]
    sent = [n for _, n in seen]
    assert sent == sorted(sent) and 0 < sent[-1] <= watched.fires
    assert watched.digest() == plain.digest()  # an hour at a time fires the same timers


async def test_seed_sweep_with_every_fault_has_no_violation():
    total = 0
    for seed in range(100, 130):
        result = await simulate(SimConfig(seed=seed, **SMALL))
        assert result.violations == [], result.report()
        total += result.fires
    assert total > 6_000


def test_cli_sim_prints_the_report_and_exits_0(capsys):
    assert main(["sim", "--seed", "5", "--hours", "0.5", "--schedules", "6"]) == 0
    out = capsys.readouterr().out
    assert "leasecron sim seed=5" in out and "violations                0" in out
    assert re.search(r"max RSS +\d+ MiB", out)
    assert main(["sim", "--faults", "crash,nope"]) == 2


# -- the checker catches a broken kernel -------------------------------------------------------


def broken_sql(**replace: tuple[str, str]):
    """A store factory whose SQL has one statement changed (a test-only breakage)."""

    def factory(path: str) -> SqliteStore:
        store = SqliteStore(path, inline=True)
        for name, (old, new) in replace.items():
            assert old in store._sql[name], f"{name}: {old!r} not found"
            store._sql[name] = store._sql[name].replace(old, new)
        return store

    return factory


async def first_violation(kind: str, faults: set[str], seeds=range(1, 9), **config):
    """Run seeds until one shows a violation of `kind`; the violation and the report."""
    for seed in seeds:
        result = await simulate(
            SimConfig(seed=seed, faults=frozenset(faults), **{**SMALL, "start": T0, **config})
        )
        found = [v for v in result.violations if v.kind == kind]
        if found:
            report = result.report(wall=False)
            assert f"VIOLATION seed={seed}" in report
            return found[0], report
    pytest.fail(f"no {kind} violation in seeds {list(seeds)}")


async def test_crash_fault_catches_orphans_left_behind(monkeypatch):
    original = Planner.plan_claim

    def ignore_orphans(self, claim, now, in_flight=frozenset()):
        return original(self, dataclasses.replace(claim, running=[]), now, in_flight)

    monkeypatch.setattr(Planner, "plan_claim", ignore_orphans)
    violation, _ = await first_violation("orphaned", {"crash"}, fault_rate=5.0)
    assert "never taken over" in violation.detail


async def test_store_error_fault_catches_a_fire_without_a_record():
    class ErrorAsSuccess(SqliteStore):
        """Reports every 10th start as done without writing it: an error taken for success."""

        calls = 0

        async def start(self, replica, now, lease_seconds, plans):
            ErrorAsSuccess.calls += 1
            if ErrorAsSuccess.calls % 10 == 0:
                return [{r.id for r in p.insert_runs if r.status == "running"} for p in plans]
            return await super().start(replica, now, lease_seconds, plans)

    violation, _ = await first_violation(
        "log_mismatch", {"store_errors"}, store_factory=lambda p: ErrorAsSuccess(p, inline=True)
    )
    assert "no matching run row" in violation.detail


def steals_live_leases(path: str) -> SqliteStore:
    """Broken: the claim takes rows whether or not they are due or leased."""
    store = broken_sql(claim=("due_at <= :now ORDER BY", "due_at <= :now + 60 ORDER BY"))(path)
    sql = store._sql["claim"]
    store._sql["claim"] = sql.replace(
        "AND enabled = 1 AND due_at <= :now\n", "AND enabled = 1\n"
    ).replace("(locked_by IS NULL OR lease_expires_at <= :now)", "1")
    return store


async def test_skew_fault_catches_a_claim_that_takes_live_leases():
    violation, _ = await first_violation("concurrent", {"skew"}, store_factory=steals_live_leases)
    assert "in flight" in violation.detail


async def test_the_streaming_checker_carries_a_violation_across_page_boundaries(monkeypatch):
    # With one row per page, every pair the checker compares (two requests of a key in flight
    # at once, a slot series against its rows) lies across a page boundary: it must find what
    # it finds with whole pages.
    from leasecron.kernel.sim import check_rows

    config = dict(
        SMALL, seed=5, start=T0, faults=frozenset({"skew"}), store_factory=steals_live_leases
    )
    whole = await simulate(SimConfig(**config))
    kinds = {v.kind for v in whole.violations}
    assert {"concurrent", "overlap"} <= kinds, whole.report(wall=False)
    monkeypatch.setattr(check_rows, "PAGE", 1)
    paged = await simulate(SimConfig(**config))
    assert paged.digest() == whole.digest()
    assert paged.violations == whole.violations


async def test_stall_fault_catches_an_unfenced_late_outcome():
    factory = broken_sql(
        finish_run=(
            "WHERE id = :id AND status = 'running' AND replica = :replica",
            "WHERE id = :id",
        )
    )
    violation, _ = await first_violation(
        "duplicate", {"stall"}, store_factory=factory, fault_rate=4.0, seeds=range(1, 16)
    )
    assert "two success rows" in violation.detail or "after its success" in violation.detail


async def test_clock_step_fault_catches_slots_counted_from_now(monkeypatch):
    from leasecron.kernel import policy

    original = policy.slot_after

    def from_now_when_late(s, t):
        # Broken: after a late fire, the next slot is computed from "now", not from the slot.
        return original(s, max(t, policy._NOW[0]))

    policy._NOW = [0.0]
    plan = Planner.plan_claim

    def remember_now(self, claim, now, in_flight=frozenset()):
        policy._NOW[0] = now
        return plan(self, claim, now, in_flight)

    monkeypatch.setattr(policy, "slot_after", from_now_when_late)
    monkeypatch.setattr(Planner, "plan_claim", remember_now)
    violation, _ = await first_violation("lost", {"clock_steps"}, fault_rate=4.0)
    assert "neither fired nor recorded skipped" in violation.detail


async def test_target_error_fault_catches_retries_beyond_max(monkeypatch):
    original = Planner.plan_finish

    def retry_forever(self, s, timing, run, outcome, started_at, now, release):
        unlimited = dataclasses.replace(s, max_retries=100)
        return original(self, unlimited, timing, run, outcome, started_at, now, release)

    monkeypatch.setattr(Planner, "plan_finish", retry_forever)
    violation, _ = await first_violation("retries", {"target_errors"})
    assert "attempt" in violation.detail


async def test_mutation_fault_catches_work_fired_after_a_disable():
    # Broken: a disable neither clears due_at nor stops the claim from taking disabled rows.
    def factory(path):
        store = SqliteStore(path, inline=True)
        sql = store._sql
        sql["refresh_due"] = sql["refresh_due"].replace(
            "WHEN enabled = 0 THEN NULL", "WHEN 0 THEN 0"
        )
        sql["next_due"] = sql["next_due"].replace("enabled = 1 AND ", "")
        sql["claim"] = sql["claim"].replace("enabled = 1 AND ", "")
        return store

    violation, _ = await first_violation(
        "after_change", {"mutations"}, store_factory=factory, fault_rate=6.0, seeds=range(1, 13)
    )
    assert "after the disable" in violation.detail or "after the delete" in violation.detail


async def test_downtime_fault_catches_misfired_slots_not_recorded(monkeypatch):
    original = Planner._skipped

    def record_nothing(self, *args, **kwargs):
        return []

    monkeypatch.setattr(Planner, "_skipped", record_nothing)
    violation, _ = await first_violation("lost", {"downtime"}, fault_rate=4.0)
    assert violation.slot is not None
    assert original is not None


async def test_checker_catches_a_wall_clock_job_firing_twice_on_fall_back_day(monkeypatch):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from leasecron.kernel import cron
    from leasecron.kernel.cron import CronExpr

    def as_elapsed(self, after, tz, first, limit):  # broken: fires at both 01:30s
        return self._next_elapsed(after, tz, cron._offset_at(tz, after), first, limit)

    start = datetime(2026, 11, 1, 0, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()
    monkeypatch.setattr(CronExpr, "_next_wall_clock", as_elapsed)
    extra = ({"cron": "30 1 * * *", "timezone": "America/New_York"},)
    violation, _ = await first_violation(
        "dst", set(), start=start, hours=4.0, extra_schedules=extra, seeds=range(1, 2)
    )
    assert "twice" in violation.detail


async def test_crash_fault_catches_a_lease_outliving_its_holder():
    # Broken: every renewal stretches the lease by an hour.
    factory = broken_sql(heartbeat=(":lease_until", "(:lease_until + 3600)"))
    violation, _ = await first_violation(
        "lease_outlived", {"crash"}, store_factory=factory, fault_rate=5.0
    )
    assert "died" in violation.detail


def test_every_fault_class_is_exercised_by_the_sweep_config():
    assert {
        "crash",
        "stall",
        "store_errors",
        "skew",
        "clock_steps",
        "target_errors",
        "mutations",
        "downtime",
    } == set(ALL_FAULTS)


# -- kernel bugs the simulator found, replayed by their seeds ---------------------------------


@pytest.mark.parametrize(
    "seed, bug",
    [
        (48, "a backward clock step stalled the heartbeat: live leases lapsed, slots re-sent"),
        (8, "re-enabling a finished one-off re-fired it; a retimed slot shared an old key"),
        (1, "killed replicas left attempts pending forever"),
    ],
)
async def test_regression_seed_replays_clean(seed, bug):
    result = await simulate(SimConfig(seed=seed))
    assert result.violations == [], f"{bug}\n{result.report(wall=False)}"


async def test_a_stall_is_not_stretched_by_a_backward_clock_step():
    # Found by a long run (seed 2029, 900 h): the frozen replica compared wall times, so a step
    # back of one hour kept it frozen an hour longer, unseen by the checker.
    import asyncio

    from leasecron.kernel.clock import SimClock
    from leasecron.kernel.sim.faults import ReplicaClock

    base = SimClock(start=T0)
    replica = ReplicaClock(base)
    replica.stalled_until = base.monotonic() + 60
    woke: list[float] = []

    async def sleeper():
        await replica.sleep(10)
        woke.append(base.monotonic() - T0)

    task = asyncio.create_task(sleeper())
    await base.advance(5)
    base.step(-3600)
    await base.advance(100)
    await task
    assert woke == [60]


def _retry_pair(ended: tuple[float, float], sent: tuple[float, float]):
    """A run with two attempts of one slot: attempt 1 ended at (wall, monotonic), attempt 2 sent
    at (wall, monotonic); retry_delay_seconds 20 (a 18 s floor with the -10 % jitter)."""
    from types import SimpleNamespace

    from leasecron.kernel.model import Schedule
    from leasecron.kernel.sim.check_keys import retries
    from leasecron.kernel.sim.target import Request

    def request(attempt, at, mono, end=(None, None)):
        return Request(
            seq=attempt, at=at, mono=mono, replica="r0.1", schedule_id="s", slot=T0,
            attempt=attempt, key="s@slot", run_row_id=f"run{attempt}", trigger="schedule",
            end_at=end[0], end_mono=end[1], end_seq=attempt if end[0] is not None else None,
            status="failed" if attempt == 1 else "success",
        )  # fmt: skip

    spec = Schedule(id="s", name="s", endpoint="/s", retry_delay_seconds=20, max_retries=1)
    result = SimpleNamespace(
        requests=[request(1, T0, 0.0, ended), request(2, sent[0], sent[1], (sent[0] + 1, 0))],
        specs={"s": spec},
        max_retries={},
        config=SimConfig(faults=frozenset()),
    )
    return retries(result)


def test_retry_delay_check_holds_across_clock_steps_and_still_catches_early_retries():
    # Long run (seed 2029, 1,500 h): the wall clock stepped back an hour between a reply and its
    # holder recording it, so the retry went out "3,557 s before" the reply on the wall clock,
    # after a real 43 s. A retry is early only if it is early on both clocks.
    assert _retry_pair(ended=(T0 + 5, 5.0), sent=(T0 + 5 - 3557, 48.0)) == []
    assert _retry_pair(ended=(T0 + 5, 5.0), sent=(T0 + 5 + 7200 + 2, 7.0)) == []  # forward step
    (early,) = _retry_pair(ended=(T0 + 5, 5.0), sent=(T0 + 8, 8.0))  # 3 s: too soon on both
    assert early.kind == "retries" and "sooner than 18.0s" in early.detail
