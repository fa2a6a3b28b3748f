"""Scenario tests: several replicas on one SQLite file under one simulated clock, firing into a
recording in-process HTTP target."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from leasecron.kernel import (
    HttpDispatcher,
    Outcome,
    ScheduleNotFoundError,
    StoreError,
    ValidationError,
)
from leasecron.kernel.policy import MAX_RECLAIMS
from support import T0, Cluster, HookedStore, form


def one_each(target) -> None:
    dup = [k for k, n in target.keys().items() if n > 1]
    assert dup == [], f"delivered twice: {dup[:5]}"


async def test_interval_and_cron_fire_every_slot_once_across_replicas(tmp_path):
    c = Cluster(tmp_path / "s.db", n=3, token="s3cret")
    a = await c.manager.create(
        "every30", interval_seconds=30, endpoint="/hooks/a", payload={"x": 1}
    )
    b = await c.manager.create("five-min", cron="*/5 * * * *", endpoint="/hooks/b")
    await c.start()
    await c.clock.advance(3600)
    await c.stop()
    assert c.target.slots("/hooks/a") == [T0 + 30 * k for k in range(1, 121)]
    first_b = (int(T0) // 300 + 1) * 300
    assert c.target.slots("/hooks/b") == [first_b + 300 * k for k in range(12)]
    one_each(c.target)
    # every request went out at its slot time, exactly (the loop sleeps until due)
    assert all(float(r.scheduled_for) == r.at for r in c.target.requests)
    assert {r.authorization for r in c.target.requests} == {"Bearer s3cret"}
    runs = await c.runs(a.id)
    assert [r.status for r in runs] == ["success"] * 120
    assert all(r.attempt == 1 and r.trigger == "schedule" for r in runs)
    assert (await c.manager.get(b.id)).last_status == "success"


async def test_claim_race_10000_due_at_once_none_twice_none_lost(tmp_path):
    c = Cluster(tmp_path / "race.db", n=4, max_concurrent=250)
    store = c.stores[-1]
    # Bulk-create through the manager would take seconds; the rows are what matters here.
    for i in range(10_000):
        await c.manager.create(f"s{i:05d}", interval_seconds=3600, endpoint=f"/hooks/{i % 7}")
    await c.start()
    await c.clock.advance(3600 + 1)
    await c.stop()
    assert len(c.target.requests) == 10_000
    one_each(c.target)
    assert len({r.schedule_id for r in c.target.requests}) == 10_000
    fired_by = Counter(e[1]["replica"] for e in c.events if e[0] == "fire")
    assert sum(fired_by.values()) == 10_000
    assert len(fired_by) == 4, f"every replica should take a share: {fired_by}"
    assert await store.next_due() == T0 + 7200


async def test_lease_renewed_by_heartbeat_keeps_a_long_run_single(tmp_path):
    c = Cluster(tmp_path / "hb.db", n=3, lease_seconds=30)
    c.target.durations["slow"] = 100.0
    s = await c.manager.create("slow", interval_seconds=1000, endpoint="/agents/slow/runs")
    await c.start()
    await c.clock.advance(1000 + 150)
    await c.stop()
    assert len(c.target.requests) == 1
    (run,) = await c.runs(s.id)
    assert run.status == "success"
    assert run.run_id == "run-0" and run.session_id == "sess-0"
    assert run.duration_ms == pytest.approx(100_000, abs=1500)
    assert not [e for e in c.events if e[0] == "lease_lost"]


class HangingHeartbeat:
    """A store whose heartbeat never answers (a server gone mid-query, a pool with no
    connection to give): the watchdog must not wait for it."""

    def __init__(self, store):
        self._store = store
        self.calls = self.active = self.most_active = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def heartbeat(self, *args):
        self.calls += 1
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.Event().wait()
        finally:
            self.active -= 1


@pytest.mark.parametrize("heartbeat", ["fails", "hangs"])
async def test_lease_expiry_without_heartbeat_is_reclaimed_and_redelivered(tmp_path, heartbeat):
    c = Cluster(tmp_path / "nohb.db", n=2, lease_seconds=30)
    c.target.durations["slow"] = 100.0
    if heartbeat == "hangs":
        c.replicas[0].store = hanging = HangingHeartbeat(c.stores[0])
    else:
        hooked = HookedStore(c.stores[0])
        c.replicas[0].store = hooked

        def fail_heartbeat(*_):
            raise StoreError("heartbeat", RuntimeError("disk unavailable"))

        hooked.before["heartbeat"] = fail_heartbeat
    s = await c.manager.create("slow", interval_seconds=1000, endpoint="/agents/slow/runs")
    await c.replicas[0].start()
    await c.clock.advance(1000)
    assert len(c.target.requests) == 1  # r0 holds it
    await c.replicas[1].start()
    await c.clock.advance(300)
    await c.stop()
    lost = [e for e in c.events if e[0] == "lease_lost"]
    assert [e[1]["replica"] for e in lost] == ["r0"]
    # r0 cannot renew: it stops sending at lease/2, the lease expires at lease, and r1 reclaims
    # and re-delivers the same attempt: r0's run is still going, so r1 attaches to it (polls
    # it) instead of starting a second one.
    assert [(r.at - T0, r.key, r.attempt) for r in c.target.requests] == [
        (1000, f"{s.id}@{T0 + 1000:.3f}", 1),
    ]
    runs = await c.runs(s.id)
    assert [(r.status, r.replica, r.reclaim, r.run_id) for r in runs] == [
        ("lease_lost", "r0", 0, "run-0"),
        ("success", "r1", 1, "run-0"),
    ]
    assert c.target.cancels == []
    if heartbeat == "hangs":
        # a stuck renewal is abandoned for a fresh one, never piled up; none outlives stop()
        assert hanging.calls >= 1 and hanging.most_active == 1 and hanging.active == 0


@pytest.mark.parametrize(
    "step", ["after_claim", "after_request", "before_run_ids", "after_reply", "after_finish"]
)
async def test_crash_at_every_step(tmp_path, step):
    c = Cluster(tmp_path / f"crash-{step}.db", n=2, lease_seconds=30)
    c.target.durations["job"] = 5.0
    hooked = HookedStore(c.stores[0])
    r0 = c.replicas[0]
    r0.store = hooked

    def crash(*_):
        if r0._tasks:
            r0.kill()
            raise asyncio.CancelledError

    if step == "after_claim":
        hooked.after["claim"] = crash
    elif step == "after_request":
        c.target.on_request = lambda req: r0.kill() if r0._tasks else None
    elif step == "before_run_ids":
        hooked.before["set_run_ids"] = crash
    elif step == "after_reply":
        hooked.before["finish"] = crash
    else:
        hooked.after["finish"] = lambda _: r0.kill()
    s = await c.manager.create("job", interval_seconds=600, endpoint="/agents/job/runs")
    await r0.start()
    await c.clock.advance(600 + 10)
    await c.replicas[1].start()
    await c.clock.advance(100)
    await c.stop()
    runs = await c.runs(s.id)
    statuses = [(r.status, r.replica) for r in runs]
    keys = {r.key for r in c.target.requests}
    assert keys == {f"{s.id}@{T0 + 600:.3f}"}
    if step == "after_claim":
        # nothing was started: r1 takes the row when the lease expires and fires the slot once
        assert len(c.target.requests) == 1
        assert c.target.requests[0].at == T0 + 630
        assert statuses == [("success", "r1")]
    elif step == "after_finish":
        assert len(c.target.requests) == 1
        assert statuses == [("success", "r0")]
    elif step == "before_run_ids":
        # the run started but its id was never recorded: all r1 can do is re-deliver, with the
        # same key and attempt
        assert [r.attempt for r in c.target.requests] == [1, 1]
        assert statuses == [("lease_lost", "r0"), ("success", "r1")]
        assert [r.run_id for r in runs] == [None, "run-1"]
    else:
        # the run started and its id was recorded: r1 re-delivers the attempt by attaching to
        # that run, so the target starts it once
        assert [r.attempt for r in c.target.requests] == [1]
        assert statuses == [("lease_lost", "r0"), ("success", "r1")]
        assert [r.run_id for r in runs] == ["run-0", "run-0"]
    assert (await c.manager.get(s.id)).next_run_at == T0 + 1200


@pytest.mark.parametrize("hand_back_fails_first", [False, True])
async def test_a_claim_whose_reply_was_lost_hands_the_unknown_leases_back(
    tmp_path, hand_back_fails_first
):
    # The claim committed but its reply never came (a connection cut after the commit): the
    # replica holds rows it does not know of. It finds and hands them back (again after a
    # back-off if the store is still failing), so the slot fires now rather than after the
    # 30 s lease.
    c = Cluster(tmp_path / "lost-claim.db", n=1, lease_seconds=30)
    hooked = HookedStore(c.stores[0])
    c.replicas[0].store = hooked
    lost, listed = [], []

    def lose_reply(claims):
        if claims and not lost:
            lost.append([cl.schedule.id for cl in claims])
            raise StoreError("claim", RuntimeError("connection lost after commit"))

    def list_leases(*_):
        listed.append(c.clock.now())
        if hand_back_fails_first and len(listed) == 1:
            raise StoreError("leases_of", RuntimeError("still down"))

    hooked.after["claim"] = lose_reply
    hooked.before["leases_of"] = list_leases
    s = await c.manager.create("job", interval_seconds=600, endpoint="/agents/job/runs")
    await c.replicas[0].start()
    await c.clock.advance(700)
    await c.stop()
    assert lost == [[s.id]]
    assert len(listed) == (2 if hand_back_fails_first else 1)  # and not once per poll after
    (request,) = c.target.requests
    assert request.key == f"{s.id}@{T0 + 600:.3f}" and request.at - T0 < 601
    assert [(r.status, r.reclaim) for r in await c.runs(s.id)] == [("success", 0)]


async def test_hand_back_spares_a_lease_whose_outcome_is_still_being_written(tmp_path):
    # An attempt leaves the replica's held set before its outcome is written. While that write
    # keeps failing, a lost claim reply makes the replica hand back leases it does not track:
    # the finishing one must not be among them, or its run row (still `running`) would be taken
    # for an orphan and re-delivered. (No claim is made while outcome writes fail, so the lost
    # claim comes first and its hand-back is held up until the outcome write is failing.)
    c = Cluster(tmp_path / "handback.db", n=2, lease_seconds=30)
    c.target.durations["a"] = 1.0
    hooked = HookedStore(c.stores[0])
    c.replicas[0].store = hooked
    failed_finishes, lost_claims, handed_back = [], [], []

    def fail_finish(*_):
        if len(failed_finishes) < 4:
            failed_finishes.append(c.clock.now())
            raise StoreError("finish", RuntimeError("disk unavailable"))

    def lose_claim_reply(claims):
        if any(cl.schedule.name == "b" for cl in claims) and not lost_claims:
            lost_claims.append(c.clock.now())
            raise StoreError("claim", RuntimeError("connection lost after commit"))

    def hand_back_after_finishes_fail(*_):
        if not failed_finishes:
            raise StoreError("leases_of", RuntimeError("still down"))
        handed_back.append(c.clock.now())

    hooked.before["finish"] = fail_finish
    hooked.after["claim"] = lose_claim_reply
    hooked.before["leases_of"] = hand_back_after_finishes_fail
    a = await c.manager.create("a", interval_seconds=600, endpoint="/agents/a/runs")
    await c.manager.create("b", run_at=T0 + 600.02, endpoint="/hooks/b")
    await c.replicas[0].start()
    await c.clock.advance(600.01)
    await c.replicas[1].start()
    await c.clock.advance(60)
    await c.stop()
    # the race was staged: the hand-back ran while a's outcome was still failing to be written
    assert len(failed_finishes) == 4 and lost_claims
    assert handed_back and failed_finishes[0] <= handed_back[0] < failed_finishes[-1]
    assert Counter(r.path for r in c.target.requests) == {"/agents/a/runs": 1, "/hooks/b": 1}
    assert [r.status for r in await c.runs(a.id)] == ["success"]


@pytest.mark.parametrize("committed", [False, True])
async def test_a_failed_start_hands_its_leases_back_at_once(tmp_path, committed):
    # The start's error may come before the write or after it committed; either way nothing is
    # sent, and the claimed row is free again at once, not after the 30 s lease.
    c = Cluster(tmp_path / f"start-{committed}.db", n=1, lease_seconds=30)
    hooked = HookedStore(c.stores[0])
    c.replicas[0].store = hooked
    failures = []

    def fail_once(*_):
        if not failures:
            failures.append(c.clock.now())
            raise StoreError("start", RuntimeError("disk unavailable"))

    (hooked.after if committed else hooked.before)["start"] = fail_once
    s = await c.manager.create("job", interval_seconds=600, endpoint="/agents/job/runs")
    await c.replicas[0].start()
    await c.clock.advance(700)
    await c.stop()
    assert failures == [T0 + 600]
    assert [(r.at - T0, r.key, r.attempt) for r in c.target.requests] == [
        (600, f"{s.id}@{T0 + 600:.3f}", 1)
    ]
    runs = await c.runs(s.id)
    if committed:  # the committed attempt was never sent: taken over and sent once
        assert [(r.status, r.reclaim) for r in runs] == [("lease_lost", 0), ("success", 1)]
    else:
        assert [(r.status, r.reclaim) for r in runs] == [("success", 0)]


async def test_misfire_fire_once_fires_latest_missed_slot_once(tmp_path):
    c = Cluster(tmp_path / "mf1.db", n=2)
    s = await c.manager.create("m", interval_seconds=60, endpoint="/hooks/m")
    await c.clock.advance(630)  # cluster down: slots 60..600 missed
    await c.start()
    await c.clock.advance(200)
    await c.stop()
    assert c.target.slots("/hooks/m") == [T0 + 600, T0 + 660, T0 + 720, T0 + 780]
    assert c.target.requests[0].at == T0 + 630
    runs = await c.runs(s.id)
    skipped = [r.scheduled_for for r in runs if r.status == "skipped"]
    assert skipped == [T0 + 60 * k for k in range(1, 10)]
    fired = [(r.scheduled_for, r.trigger) for r in runs if r.status == "success"]
    # slot 600 is 30 s late, inside the grace: it counts as on time
    assert fired[0] == (T0 + 600, "schedule")


async def test_misfire_skip_resumes_at_next_future_slot(tmp_path):
    c = Cluster(tmp_path / "mf2.db", n=2)
    s = await c.manager.create("m", interval_seconds=60, endpoint="/hooks/m", misfire="skip")
    await c.clock.advance(630)
    await c.start()
    await c.clock.advance(100)
    await c.stop()
    assert c.target.slots("/hooks/m") == [T0 + 660, T0 + 720]
    runs = await c.runs(s.id)
    assert [r.scheduled_for for r in runs if r.status == "skipped"] == [
        T0 + 60 * k for k in range(1, 11)
    ]


async def test_misfire_within_grace_is_not_a_misfire(tmp_path):
    c = Cluster(tmp_path / "grace.db", n=1)
    await c.manager.create("m", interval_seconds=600, endpoint="/hooks/m", misfire="skip")
    await c.clock.advance(650)  # 50 s late, grace is 60
    await c.start()
    await c.clock.advance(1)
    await c.stop()
    assert c.target.slots("/hooks/m") == [T0 + 600]


async def test_misfire_catch_up_fires_each_missed_slot_in_order_with_bounds(tmp_path):
    c = Cluster(tmp_path / "mf3.db", n=2)
    every = await c.manager.create(
        "all", interval_seconds=60, endpoint="/hooks/all", misfire="catch_up"
    )
    capped = await c.manager.create(
        "capped", interval_seconds=60, endpoint="/hooks/capped", misfire="catch_up", max_catchup=3
    )
    windowed = await c.manager.create(
        "win",
        interval_seconds=60,
        endpoint="/hooks/win",
        misfire="catch_up",
        catchup_window_seconds=300,
    )
    await c.clock.advance(630)
    await c.start()
    await c.clock.advance(40)
    await c.stop()
    assert c.target.slots("/hooks/all") == [T0 + 60 * k for k in range(1, 12)]
    assert c.target.slots("/hooks/capped") == [T0 + 480, T0 + 540, T0 + 600, T0 + 660]
    assert c.target.slots("/hooks/win") == [
        T0 + 360,
        T0 + 420,
        T0 + 480,
        T0 + 540,
        T0 + 600,
        T0 + 660,
    ]
    # the ten missed slots went out right at restart, one after another
    assert all(r.at == T0 + 630 for r in c.target.requests if float(r.scheduled_for) <= T0 + 600)
    triggers = [r.trigger for r in await c.runs(every.id) if r.status == "success"]
    # slot 600 is within the grace at restart (630): on time, not a catch-up
    assert triggers == ["catch_up"] * 9 + ["schedule"] * 2
    skipped = [r.scheduled_for for r in await c.runs(capped.id) if r.status == "skipped"]
    assert skipped == [T0 + 60 * k for k in range(1, 8)]
    skipped = [r.scheduled_for for r in await c.runs(windowed.id) if r.status == "skipped"]
    assert skipped == [T0 + 60 * k for k in range(1, 6)]


async def test_catch_up_burst_is_spread_by_jitter(tmp_path):
    c = Cluster(tmp_path / "jit.db", n=1, seed=7)
    await c.manager.create(
        "j", interval_seconds=60, endpoint="/hooks/j", misfire="catch_up", jitter_seconds=20
    )
    await c.clock.advance(630)
    await c.start()
    await c.clock.advance(400)
    await c.stop()
    late = [r for r in c.target.requests if float(r.scheduled_for) <= T0 + 600]
    assert [float(r.scheduled_for) for r in late] == [T0 + 60 * k for k in range(1, 11)]
    delays = [r.at - T0 - 630 for r in late]
    assert all(0 < d <= 20 * 10 for d in delays)
    assert len(set(delays)) == 10  # spread, not a burst


async def test_overlap_skip_records_skipped_slots_cluster_wide(tmp_path):
    c = Cluster(tmp_path / "ov1.db", n=3)
    c.target.durations["slow"] = 150.0
    s = await c.manager.create("slow", interval_seconds=60, endpoint="/agents/slow/runs")
    await c.start()
    await c.clock.advance(500)
    await c.stop()
    assert c.target.slots("/agents/slow/runs") == [T0 + 60, T0 + 240, T0 + 420]
    runs = await c.runs(s.id)
    assert [(r.scheduled_for - T0, r.status) for r in runs if r.status == "skipped"] == [
        (120, "skipped"),
        (180, "skipped"),
        (300, "skipped"),
        (360, "skipped"),
    ]


async def test_overlap_buffer_one_fires_latest_right_after(tmp_path):
    c = Cluster(tmp_path / "ov2.db", n=3)
    c.target.durations["slow"] = 150.0
    s = await c.manager.create(
        "slow", interval_seconds=60, endpoint="/agents/slow/runs", overlap="buffer_one"
    )
    await c.start()
    await c.clock.advance(500)
    await c.stop()
    # 60 runs 60..210; 120 skipped, 180 buffered and fired at 210 (runs to 360); 240 and 300
    # skipped, 360 is due as that run ends and fires on time.
    assert [(float(r.scheduled_for) - T0, r.at - T0) for r in c.target.requests] == [
        (60, 60),
        (180, 210),
        (360, 360),
    ]
    runs = await c.runs(s.id)
    assert [r.scheduled_for - T0 for r in runs if r.status == "skipped"] == [120, 240, 300]


async def test_overlap_allow_runs_concurrently(tmp_path):
    c = Cluster(tmp_path / "ov3.db", n=3)
    c.target.durations["slow"] = 150.0
    s = await c.manager.create(
        "slow", interval_seconds=60, endpoint="/agents/slow/runs", overlap="allow"
    )
    await c.start()
    await c.clock.advance(600)
    await c.stop()
    assert [r.at - T0 for r in c.target.requests] == [
        60,
        120,
        180,
        240,
        300,
        360,
        420,
        480,
        540,
        600,
    ]
    one_each(c.target)
    runs = await c.runs(s.id)
    assert not [r for r in runs if r.status == "skipped"]
    assert sum(r.status == "success" for r in runs) == 7  # the ones done by 600


async def test_retries_back_off_exponentially_and_keep_the_key(tmp_path):
    c = Cluster(tmp_path / "retry.db", n=2)
    c.target.codes["/hooks/flaky"] = [500, 503, 200]
    s = await c.manager.create(
        "flaky",
        interval_seconds=3600,
        endpoint="/hooks/flaky",
        max_retries=2,
        retry_delay_seconds=10,
    )
    await c.start()
    await c.clock.advance(3600 + 100)
    await c.stop()
    r1, r2, r3 = c.target.requests
    assert r1.key == r2.key == r3.key
    assert [r.attempt for r in (r1, r2, r3)] == [1, 2, 3]
    assert 9 <= r2.at - r1.at <= 11
    assert 18 <= r3.at - r2.at <= 22
    runs = await c.runs(s.id)
    assert [(r.attempt, r.trigger, r.status, r.status_code) for r in runs] == [
        (1, "schedule", "failed", 500),
        (2, "retry", "failed", 503),
        (3, "retry", "success", 200),
    ]
    assert (await c.manager.get(s.id)).consecutive_failures == 0


async def test_retries_stop_at_max_and_never_on_client_errors(tmp_path):
    c = Cluster(tmp_path / "retry2.db", n=1)
    c.target.codes["/hooks/down"] = [500]
    c.target.codes["/hooks/bad"] = [404]
    down = await c.manager.create(
        "down", interval_seconds=3600, endpoint="/hooks/down", max_retries=2, retry_delay_seconds=1
    )
    bad = await c.manager.create(
        "bad", interval_seconds=3600, endpoint="/hooks/bad", max_retries=5, retry_delay_seconds=1
    )
    await c.start()
    await c.clock.advance(3600 + 60)
    await c.stop()
    assert [r.attempt for r in c.target.requests if r.path == "/hooks/down"] == [1, 2, 3]
    assert [r.attempt for r in c.target.requests if r.path == "/hooks/bad"] == [1]
    assert (await c.manager.get(down.id)).consecutive_failures == 3
    assert [r.status for r in await c.runs(bad.id)] == ["failed"]


async def test_retry_after_is_honoured(tmp_path):
    c = Cluster(tmp_path / "ra.db", n=1)
    c.target.codes["/hooks/busy"] = [429, 200]
    s = await c.manager.create(
        "busy",
        interval_seconds=3600,
        endpoint="/hooks/busy",
        max_retries=1,
        retry_delay_seconds=1,
    )
    scripted = c.target.handler

    def with_retry_after(request):
        response = scripted(request)
        if response.status_code == 429:
            response.headers["Retry-After"] = "120"
        return response

    c.dispatcher = HttpDispatcher(
        "http://target", transport=httpx.MockTransport(with_retry_after), clock=c.clock
    )
    for replica in c.replicas:
        replica.dispatcher = c.dispatcher
    await c.start()
    await c.clock.advance(3600 + 200)
    await c.stop()
    first, second = c.target.requests
    assert 120 <= second.at - first.at < 121
    assert [r.status_code for r in await c.runs(s.id)] == [429, 200]


async def test_agent_run_error_is_retried_cancelled_is_not(tmp_path):
    c = Cluster(tmp_path / "agent.db", n=1)
    c.target.finals["err"] = ["ERROR", "COMPLETED"]
    c.target.finals["cxl"] = ["CANCELLED"]
    e = await c.manager.create(
        "err",
        interval_seconds=3600,
        endpoint="/agents/err/runs",
        max_retries=3,
        retry_delay_seconds=5,
        payload={"message": "hi"},
    )
    x = await c.manager.create(
        "cxl",
        interval_seconds=3600,
        endpoint="/agents/cxl/runs",
        max_retries=3,
        retry_delay_seconds=5,
    )
    await c.start()
    await c.clock.advance(3600 + 60)
    await c.stop()
    assert [r.status for r in await c.runs(e.id)] == ["failed", "success"]
    assert [r.status for r in await c.runs(x.id)] == ["cancelled"]
    body = form(c.target.requests[0].body)
    assert body == {"message": "hi", "stream": "false", "background": "true"}


async def test_pending_retry_survives_a_crash_and_is_taken_by_another_replica(tmp_path):
    c = Cluster(tmp_path / "rsurv.db", n=2)
    c.target.codes["/hooks/f"] = [500, 200]
    s = await c.manager.create(
        "f", interval_seconds=3600, endpoint="/hooks/f", max_retries=1, retry_delay_seconds=30
    )
    r0, r1 = c.replicas
    await r0.start()
    await c.clock.advance(3600 + 1)
    r0.kill()  # the retry is only in the database now; no lease is held while waiting
    await r1.start()
    await c.clock.advance(60)
    await c.stop()
    runs = await c.runs(s.id)
    assert [(r.attempt, r.status, r.replica) for r in runs] == [
        (1, "failed", "r0"),
        (2, "success", "r1"),
    ]


async def test_manual_trigger_fires_at_once_and_waits_for_a_run_in_flight(tmp_path):
    c = Cluster(tmp_path / "trig.db", n=2, poll_interval=15)
    c.target.durations["slow"] = 50.0
    s = await c.manager.create("slow", interval_seconds=3600, endpoint="/agents/slow/runs")
    od = await c.manager.create("ondemand", cron="", endpoint="/hooks/od")
    await c.start()
    await c.clock.advance(7)
    t1 = await c.manager.trigger(od.id)
    await c.clock.settle()
    assert [r.at for r in c.target.requests] == [T0 + 7]  # same instant, not next poll
    await c.clock.advance(3600 - 7 + 10)  # slow's slot fired at 3600, running until 3650
    t2 = await c.manager.trigger(s.id)
    await c.clock.advance(100)
    await c.stop()
    slow = [r for r in c.target.requests if r.path == "/agents/slow/runs"]
    assert [r.at - T0 for r in slow] == [3600, 3650]
    assert slow[1].key == f"{s.id}@manual:{t2}"
    runs = {r.id: r for r in await c.runs(s.id)}
    assert runs[t2].trigger == "manual" and runs[t2].status == "success"
    assert (await c.manager.get_run(t1)).status == "success"
    assert (await c.manager.get(od.id)).next_run_at is None


async def test_trigger_on_disabled_or_missing_schedule_is_an_error(tmp_path):
    c = Cluster(tmp_path / "trig2.db", n=1)
    s = await c.manager.create("x", interval_seconds=60, endpoint="/hooks/x")
    await c.manager.disable(s.id)
    with pytest.raises(ValidationError) as err:
        await c.manager.trigger(s.id)
    assert err.value.field == "enabled"
    with pytest.raises(ScheduleNotFoundError):
        await c.manager.trigger("nope")
    await c.stop()


async def test_disable_mid_run_finishes_records_and_fires_nothing_more(tmp_path):
    c = Cluster(tmp_path / "dis.db", n=2)
    c.target.durations["slow"] = 50.0
    c.target.finals["slow"] = ["ERROR"]
    s = await c.manager.create(
        "slow",
        interval_seconds=60,
        endpoint="/agents/slow/runs",
        max_retries=3,
        retry_delay_seconds=1,
    )
    await c.start()
    await c.clock.advance(70)
    t = await c.manager.trigger(s.id)  # queued behind the running attempt
    await c.manager.disable(s.id)
    await c.clock.advance(600)
    await c.stop()
    assert len(c.target.requests) == 1
    runs = {r.id: r for r in await c.runs(s.id)}
    assert runs[t].status == "cancelled"
    assert [r.status for r in runs.values() if r.trigger == "schedule"] == ["failed"]
    after = await c.manager.get(s.id)
    assert after.enabled is False and after.locked_by is None


async def test_delete_mid_run_records_the_run_and_fires_nothing_more(tmp_path):
    c = Cluster(tmp_path / "del.db", n=2)
    c.target.durations["slow"] = 50.0
    s = await c.manager.create("slow", interval_seconds=60, endpoint="/agents/slow/runs")
    await c.start()
    await c.clock.advance(70)
    assert await c.manager.delete(s.id) is True
    await c.clock.advance(600)
    await c.stop()
    assert len(c.target.requests) == 1
    (run,) = await c.stores[-1].list_runs(s.id)
    assert run.status == "success"
    assert await c.manager.get(s.id) is None


async def test_update_mid_run_is_not_undone_by_the_release(tmp_path):
    c = Cluster(tmp_path / "upd.db", n=2)
    c.target.durations["slow"] = 50.0
    s = await c.manager.create("slow", interval_seconds=60, endpoint="/agents/slow/runs")
    await c.start()
    await c.clock.advance(70)  # first run 60..110
    await c.manager.update(s.id, interval_seconds=None, cron="0 * * * *")
    await c.clock.advance(7200)
    await c.stop()
    hours = [r.at for r in c.target.requests][1:]
    assert hours and all(t % 3600 == 0 for t in hours)
    assert len(c.target.requests) == 3


async def test_one_off_fires_once_then_disables(tmp_path):
    c = Cluster(tmp_path / "once.db", n=2)
    c.target.codes["/hooks/once"] = [500, 200]
    s = await c.manager.create(
        "once", run_at=T0 + 100, endpoint="/hooks/once", max_retries=1, retry_delay_seconds=5
    )
    await c.start()
    await c.clock.advance(1000)
    await c.stop()
    assert [r.attempt for r in c.target.requests] == [1, 2]
    after = await c.manager.get(s.id)
    assert after.enabled is False and after.next_run_at is None


async def test_firing_latency_does_not_depend_on_poll_interval(tmp_path):
    c = Cluster(tmp_path / "lat.db", n=2, poll_interval=15)
    await c.start()
    await c.clock.advance(3.0)
    await c.manager.create("soon", run_at=T0 + 7.25, endpoint="/hooks/soon")
    await c.clock.advance(10)
    await c.stop()
    assert [r.at for r in c.target.requests] == [T0 + 7.25]


async def test_dst_daily_job_fires_once_per_local_day_through_the_scheduler(tmp_path):
    ny = ZoneInfo("America/New_York")
    start = datetime(2026, 10, 31, 12, 0, tzinfo=ny).timestamp()
    c = Cluster(tmp_path / "dst.db", n=2, poll_interval=600)
    c.clock.set(start)
    await c.manager.create("d", cron="30 1 * * *", endpoint="/hooks/d", timezone="America/New_York")
    await c.manager.create("h", cron="0 * * * *", endpoint="/hooks/h", timezone="America/New_York")
    await c.start()
    await c.clock.advance(3 * 86400)
    await c.stop()
    expect = [
        datetime(2026, 11, 1, 1, 30, tzinfo=ny, fold=0).timestamp(),
        datetime(2026, 11, 2, 1, 30, tzinfo=ny).timestamp(),
        datetime(2026, 11, 3, 1, 30, tzinfo=ny).timestamp(),
    ]
    assert c.target.slots("/hooks/d") == expect
    nov1 = [
        t
        for t in c.target.slots("/hooks/h")
        if datetime.fromtimestamp(t, ny).date().isoformat() == "2026-11-01"
    ]
    assert len(nov1) == 25


# -- regressions found by review -----------------------------------------------------------------


async def test_allow_attempts_ending_together_release_the_lease(tmp_path):
    # Three catch-up attempts run 200..230 and end at the same instant: exactly one of them must
    # see itself last and release, or the row stays leased forever and never fires again.
    c = Cluster(tmp_path / "allow-rel.db", n=2)
    c.target.durations["job"] = 30.0
    s = await c.manager.create(
        "job", interval_seconds=60, endpoint="/agents/job/runs", overlap="allow", misfire="catch_up"
    )
    await c.clock.advance(200)
    await c.start()
    await c.clock.advance(35)
    row = await c.manager.get(s.id)
    assert row.locked_by is None and row.next_run_at == T0 + 240
    await c.clock.advance(300)
    await c.stop()
    assert c.target.slots("/agents/job/runs") == [T0 + 60 * k for k in range(1, 9)]
    one_each(c.target)


async def test_allow_update_mid_run_sends_no_slot_twice_and_does_not_spin(tmp_path):
    c = Cluster(tmp_path / "allow-upd.db", n=2)
    c.target.durations["slow"] = 150.0
    s = await c.manager.create(
        "slow", interval_seconds=60, endpoint="/agents/slow/runs", overlap="allow"
    )
    await c.start()
    await c.clock.advance(130)
    await c.manager.update(s.id, description="edited")  # not a timing change
    await c.clock.advance(50)
    await c.manager.update(s.id, interval_seconds=90)  # a timing change: series restarts
    ids_before = int(c.new_id()[2:])
    await c.clock.advance(600)
    await c.stop()
    one_each(c.target)
    assert int(c.new_id()[2:]) - ids_before < 200  # no hot loop generating rows
    sent = [float(r.scheduled_for) - T0 for r in c.target.requests]
    assert sent[:3] == [60, 120, 180]
    assert all(b > a for a, b in itertools.pairwise(sent))


async def test_allow_holder_fires_a_trigger_while_runs_overlap(tmp_path):
    c = Cluster(tmp_path / "allow-pend.db", n=2)
    c.target.durations["slow"] = 150.0
    s = await c.manager.create(
        "slow", interval_seconds=60, endpoint="/agents/slow/runs", overlap="allow"
    )
    await c.start()
    await c.clock.advance(70)
    t = await c.manager.trigger(s.id)
    await c.clock.settle()
    manual = [r for r in c.target.requests if "manual" in r.key]
    assert [r.at - T0 for r in manual] == [70]  # at once, alongside the running slot
    await c.clock.advance(300)
    await c.stop()
    assert (await c.manager.get_run(t)).status == "success"


async def test_a_row_that_cannot_be_planned_is_disabled_not_fatal(tmp_path):
    c = Cluster(tmp_path / "poison.db", n=2)
    bad = await c.manager.create("bad", cron="*/5 * * * *", endpoint="/hooks/bad")
    await c.manager.create("good", interval_seconds=10, endpoint="/hooks/good")
    conn = sqlite3.connect(c.path)
    conn.execute("UPDATE agno_schedules SET cron_expr = '*/30 * * * * *' WHERE id = ?", (bad.id,))
    conn.commit()
    conn.close()
    await c.start()
    await c.clock.advance(600)
    assert all(not t.done() for r in c.replicas for t in r._tasks)
    await c.stop()
    assert c.target.slots("/hooks/good")[-1] == T0 + 600
    assert not c.target.slots("/hooks/bad")
    row = await c.manager.get(bad.id)
    (run,) = await c.runs(bad.id)
    assert row.enabled is False and row.locked_by is None
    assert run.status == "failed" and "cannot plan it" in run.error and "6" in run.error
    assert row.disabled_reason == run.error
    said = [e for e in c.events if e[0] == "store_error" and e[1]["operation"] == "quarantine"]
    assert [e[1]["schedule_id"] for e in said] == [bad.id]
    # repaired and enabled again, it fires, and the reason is gone
    await c.manager.update(bad.id, cron="*/5 * * * *")
    row = await c.manager.enable(bad.id)
    assert row.enabled and row.disabled_reason is None


@pytest.mark.parametrize("payload", ["{not json", "[" * 5000 + "]" * 5000])
async def test_a_row_that_cannot_be_decoded_is_quarantined_and_the_rest_fire(tmp_path, payload):
    """One row whose payload another tool wrote (unparseable, or nested ~5,000 deep) made every
    claim raise: the replica fired nothing at all. Now that row is quarantined, said once, and
    every other schedule fires."""
    c = Cluster(tmp_path / "undecodable.db", n=2)
    bad = await c.manager.create("bad", interval_seconds=10, endpoint="/hooks/bad")
    for i in range(5):
        await c.manager.create(f"good{i}", interval_seconds=10, endpoint=f"/hooks/good{i}")
    conn = sqlite3.connect(c.path)
    conn.execute("UPDATE agno_schedules SET payload = ? WHERE id = ?", (payload, bad.id))
    conn.commit()
    conn.close()
    await c.start()
    await c.clock.advance(100)
    await c.stop()
    for i in range(5):
        assert c.target.slots(f"/hooks/good{i}") == [T0 + 10 * k for k in range(1, 11)]
    assert not c.target.slots("/hooks/bad")
    row = await c.manager.get(bad.id)
    assert not row.enabled and "payload is not valid JSON" in row.disabled_reason
    said = [e[1] for e in c.events if e[0] == "store_error" and e[1]["operation"] == "quarantine"]
    assert [(e["schedule_id"], e["error"]) for e in said] == [(bad.id, row.disabled_reason)]
    (run,) = await c.runs(bad.id)
    assert (run.status, run.error) == ("failed", row.disabled_reason)
    listed = {s.name: s for s in await c.manager.list()}  # reads still work, for repairs
    assert listed["bad"].payload is None and listed["bad"].disabled_reason == row.disabled_reason


async def test_an_output_json_cannot_hold_is_recorded_readably(tmp_path):
    c = Cluster(tmp_path / "out.db", n=1)
    circular: dict = {}
    circular["self"] = circular

    class Circular:
        async def dispatch(self, fire, on_started=None):
            return Outcome(status="success", status_code=200, output=circular)

        async def aclose(self):
            pass

    c.replicas[0].dispatcher = Circular()
    s = await c.manager.create("x", interval_seconds=10, endpoint="/hooks/x")
    await c.start()
    await c.clock.advance(35)
    await c.stop()
    runs = await c.runs(s.id)
    assert [r.status for r in runs] == ["success"] * 3
    assert runs[0].output == "{'self': {...}}"


async def test_jittered_recovery_fire_is_not_sent_after_disable(tmp_path):
    c = Cluster(tmp_path / "jit-dis.db", n=1, seed=3)
    s = await c.manager.create(
        "j", interval_seconds=60, endpoint="/hooks/j", misfire="catch_up", jitter_seconds=20
    )
    await c.clock.advance(630)
    await c.start()
    await c.clock.advance(0.001)  # claimed; the first catch-up attempt sleeps out its jitter
    await c.manager.disable(s.id)
    await c.clock.advance(600)
    await c.stop()
    assert c.target.requests == []
    statuses = Counter(r.status for r in await c.runs(s.id))
    assert statuses == {"cancelled": 1}


async def test_description_edit_mid_run_keeps_overlap_skip(tmp_path):
    c = Cluster(tmp_path / "ov-edit.db", n=2)
    c.target.durations["slow"] = 150.0
    s = await c.manager.create("slow", interval_seconds=60, endpoint="/agents/slow/runs")
    await c.start()
    await c.clock.advance(100)
    await c.manager.update(s.id, description="edited mid-run", payload={"v": 2})
    await c.clock.advance(200)
    await c.stop()
    assert c.target.slots("/agents/slow/runs") == [T0 + 60, T0 + 240]
    skipped = [r.scheduled_for - T0 for r in await c.runs(s.id) if r.status == "skipped"]
    assert skipped == [120, 180]


async def test_trigger_during_a_one_offs_last_run_fires_then_disables(tmp_path):
    c = Cluster(tmp_path / "once-trig.db", n=2)
    c.target.durations["once"] = 30.0
    s = await c.manager.create("once", run_at=T0 + 100, endpoint="/agents/once/runs")
    await c.start()
    await c.clock.advance(110)
    t = await c.manager.trigger(s.id)
    await c.clock.advance(200)
    await c.stop()
    assert [r.at - T0 for r in c.target.requests] == [100, 130]
    assert (await c.manager.get_run(t)).status == "success"
    row = await c.manager.get(s.id)
    assert row.enabled is False and row.due_at is None
    edited = await c.manager.update(s.id, description="done")  # a finished one-off stays editable
    assert edited.description == "done"


async def test_one_off_whose_redeliveries_are_used_up_is_disabled(tmp_path):
    c = Cluster(tmp_path / "once-lost.db", n=1, lease_seconds=30)
    c.target.durations["once"] = 1000.0
    s = await c.manager.create("once", run_at=T0 + 100, endpoint="/agents/once/runs")
    r0 = c.replicas[0]
    for _ in range(MAX_RECLAIMS + 1):
        await r0.start()
        await c.clock.advance(110 if not c.target.requests else 40)
        r0.kill()
    await r0.start()
    await c.clock.advance(40)
    await c.stop()
    runs = await c.runs(s.id)
    assert [r.status for r in runs] == ["lease_lost"] * (MAX_RECLAIMS + 1)
    assert "gave up" in runs[-1].error
    row = await c.manager.get(s.id)
    assert row.enabled is False and row.locked_by is None


async def test_heartbeat_keeps_leases_through_a_backward_clock_step(tmp_path):
    # Found by the simulator (seed 48): the heartbeat slept until a wall-clock deadline, which a
    # step back of one hour pushed an hour away; the lease lapsed under a live holder.
    c = Cluster(tmp_path / "step.db", n=2, lease_seconds=30)
    c.target.durations["slow"] = 200.0
    s = await c.manager.create(
        "slow", interval_seconds=5000, endpoint="/agents/slow/runs", timeout_seconds=7200
    )
    await c.start()
    await c.clock.advance(5010)
    c.clock.step(-3600)  # the target's run ends at a wall time an hour further away now
    await c.clock.advance(3900)
    await c.stop()
    assert len(c.target.requests) == 1
    assert not [e for e in c.events if e[0] == "lease_lost"]
    assert [r.status for r in await c.runs(s.id)] == ["success"]


class Gated:
    """A store whose chosen operation waits at a gate: after committing (a slow reply), or before
    (a slow round trip: cancelled there, nothing is written); `log` records the calls."""

    def __init__(self, store, operation, *, commit_first=True):
        self._store = store
        self.operation = operation
        self.commit_first = commit_first
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.log = []

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if name not in (self.operation, "heartbeat"):
            return attr

        async def call(*args):
            self.log.append(name)
            if name == self.operation and not self.commit_first:
                self.entered.set()
                await self.gate.wait()
            result = await attr(*args)
            if name == self.operation and self.commit_first:
                self.entered.set()
                await self.gate.wait()
            return result

        return call


async def test_stop_waits_for_the_outcome_being_written(tmp_path):
    # stop(timeout=0) comes while the flusher is writing an outcome: it lets the write land
    # (cancelling it mid-write would leave the delivered attempt `running` until its lease ends,
    # then re-deliver it).
    c = Cluster(tmp_path / "stop-flush.db", n=1, lease_seconds=30)
    r0 = c.replicas[0]
    r0.store = gated = Gated(c.stores[0], "finish", commit_first=False)
    s = await c.manager.create("job", interval_seconds=10, endpoint="/hooks/job")
    await r0.start()
    await c.clock.advance(10)
    await gated.entered.wait()  # the outcome is on its way to the store
    stopping = asyncio.create_task(r0.stop(timeout=0))
    await c.clock.settle()
    gated.gate.set()
    await stopping
    assert [(r.status, r.replica) for r in await c.runs(s.id)] == [("success", "r0")]
    assert (await c.manager.get(s.id)).locked_by is None


async def test_stop_hands_leases_back_after_the_heartbeat_is_gone(tmp_path):
    # A renewal landing after stop's hand-back would undo it (the row then waits out a lease).
    c = Cluster(tmp_path / "stop-hb.db", n=1, lease_seconds=30)
    c.target.durations["slow"] = 1000.0
    r0 = c.replicas[0]
    r0.store = gated = Gated(c.stores[0], "expire_leases")
    s = await c.manager.create("slow", endpoint="/agents/slow/runs")
    await c.manager.trigger(s.id)
    await r0.start()
    await c.clock.advance(20)  # in flight, renewed every 7.5 s
    assert len(c.target.requests) == 1 and "heartbeat" in gated.log
    stopping = asyncio.create_task(r0.stop(timeout=0))
    await gated.entered.wait()
    stopped_at = c.clock.now()
    await c.clock.advance(20)  # heartbeat ticks would come due while the reply is slow
    gated.gate.set()
    await stopping
    assert gated.log[-1] == "expire_leases"  # no renewal after the hand-back
    row = await c.manager.get(s.id)
    assert row.lease_expires_at is not None and row.lease_expires_at <= stopped_at


async def test_allow_holder_never_hands_back_a_lease_whose_outcome_is_queued(tmp_path):
    # overlap=allow: the holder re-reads its row (slowly) to fire the next slot while the last
    # attempt ends and its outcome write keeps failing; then the start fails. The lease guards a
    # `running` row whose outcome is unwritten: handed back (or planned as an orphan), that
    # attempt would be re-sent.
    c = Cluster(tmp_path / "allow-hb.db", n=2, lease_seconds=30)
    c.target.durations["slow"] = 10.3
    r0 = c.replicas[0]
    hooked = HookedStore(c.stores[0])
    r0.store = hooked
    state = {"armed": False, "finish_failures": 0}
    real_reread_held = c.stores[0].reread_held

    async def slow_reread_held(*args):
        claims = await real_reread_held(*args)
        if state["armed"]:
            state["finish_failures"] = 5
            await c.clock.sleep(1.5)  # the reply is slow; the running attempt ends meanwhile
        return claims

    def fail_start(*args):
        if state["armed"] and args[3] and c.clock.now() > T0 + 21:
            state["armed"] = False
            raise StoreError("start", RuntimeError("connection cut"))

    def fail_finish(*_):
        if state["finish_failures"]:
            state["finish_failures"] -= 1
            raise StoreError("finish", RuntimeError("connection cut"))

    hooked.reread_held = slow_reread_held
    hooked.before["start"] = fail_start
    hooked.before["finish"] = fail_finish
    s = await c.manager.create(
        "slow", interval_seconds=10, endpoint="/agents/slow/runs", overlap="allow"
    )
    await r0.start()
    await c.clock.advance(12)  # r0 fires the T0+10 slot; it runs until T0+20.3
    await c.replicas[1].start()
    await c.clock.advance(7.9)
    state["armed"] = True
    await c.clock.advance(20)
    await c.stop()
    sent = Counter((r.key, r.attempt) for r in c.target.requests)
    assert [k for k, n in sent.items() if n > 1] == []
    assert state["finish_failures"] == 0 and not state["armed"]  # the race was staged
    assert "success" in {r.status for r in await c.runs(s.id)}


async def test_a_crashed_replicas_attempts_are_redelivered_within_two_leases_under_overload(
    tmp_path,
):
    """After a crash under sustained overload, orphaned leases were starved: live rows with older
    due times always sorted first, and the crashed replica's rows stayed `running` long past
    their lease. Orphans get a share of every claim, so they are re-delivered in about a lease
    even while the cluster stays behind."""
    lease = 30.0
    c = Cluster(tmp_path / "overload.db", n=2, lease_seconds=lease, max_concurrent=4)
    c.target.durations["slow"] = 5.0
    for i in range(200):  # 20 runs a second are due; two replicas finish under two
        await c.manager.create(f"s{i:03d}", interval_seconds=10, endpoint="/agents/slow/runs")
    await c.start()
    await c.clock.advance(60)
    crashed_at = c.clock.now()
    held = set(c.replicas[0]._held)
    assert len(held) == 4  # it dies holding a full batch
    c.replicas[0].kill()
    await c.clock.advance(3 * lease)
    backlog = await c.stores[-1].next_due()
    assert backlog is not None and backlog < crashed_at  # the cluster is still far behind
    await c.stop()
    redelivered = {
        d["schedule_id"]: d["at"]
        for e, d in c.events
        if e == "fire"
        and d["replica"] == "r1"
        and d["schedule_id"] in held
        and d["at"] > crashed_at
    }
    assert set(redelivered) == held
    assert max(redelivered.values()) <= crashed_at + 2 * lease
