"""One slot, one AgentOS run: replicas on SQLite and Postgres under a SimClock, firing at an
AgentOS-protocol target (tests/support.py) that ignores Idempotency-Key as the real one does.
A run that times out is cancelled before its retry, a retry or a re-delivery attaches to the run
already started, and a replica that stops hands its runs over without cancelling them."""

from __future__ import annotations

import itertools
import random

from leasecron.kernel import HttpDispatcher, ScheduleManager, Scheduler, SimClock
from store_builders import closes_stores
from support import T0, Target

ENDPOINT = "/workflows/wf/runs"


class Replicas:
    """`n` replicas, each with its own store of the param's kind on one database, a manager on
    another, one dispatcher, one SimClock."""

    def __init__(self, open_store, n: int = 1, *, clock: SimClock | None = None):
        self.clock = clock or SimClock(start=T0)
        self.target = Target(self.clock)
        ids = itertools.count()
        new_id = lambda: f"id{next(ids):08d}"  # noqa: E731
        self.stores = [open_store() for _ in range(n + 1)]
        self.manager = ScheduleManager(self.stores[-1], clock=self.clock, new_id=new_id)
        self.dispatcher = HttpDispatcher(
            "http://target",
            token="tok",
            transport=self.target.transport(),
            clock=self.clock,
            poll_initial=1.0,
            poll_max=1.0,
        )
        self.replicas = [
            Scheduler(
                self.stores[i],
                self.dispatcher,
                clock=self.clock,
                replica_id=f"r{i}",
                lease_seconds=30.0,
                poll_interval=1.0,
                rng=random.Random(i),
                new_id=new_id,
            )
            for i in range(n)
        ]
        for replica in self.replicas:
            self.stores[-1].add_listener(replica.wake)

    async def stop(self) -> None:
        for replica in self.replicas:
            await replica.stop(timeout=0)
        await self.dispatcher.aclose()

    async def runs(self, schedule_id: str):
        return list(reversed(await self.manager.runs(schedule_id, limit=100)))


@closes_stores
async def test_a_timed_out_run_is_cancelled_and_its_retry_takes_its_result(open_store):
    # The case seen against a real AgentOS: a 2 s workflow, timeout_seconds=1, max_retries=1 used
    # to give two COMPLETED runs for one slot. The cancel is accepted but, being cooperative, the
    # run finishes anyway: the retry attaches to it and takes its result, starting nothing.
    c = Replicas(open_store)
    c.target.durations["wf"] = 2.0
    c.target.cancel_delay = None  # accepted, not honoured in time
    s = await c.manager.create(
        "wf",
        cron="",
        endpoint=ENDPOINT,
        timeout_seconds=1,
        max_retries=1,
        retry_delay_seconds=5,
        payload={"message": "go"},
    )
    await c.replicas[0].start()
    row_id = await c.manager.trigger(s.id)
    await c.clock.advance(30)
    await c.stop()
    assert [(r.path, r.attempt, r.at - T0) for r in c.target.requests] == [(ENDPOINT, 1, 0)]
    assert c.target.cancels == [(T0 + 1, "run-0", "sess-0")]  # at the deadline, before the retry
    timed_out, retry = await c.runs(s.id)
    assert timed_out.id == row_id
    assert (timed_out.status, timed_out.run_id, timed_out.session_id) == (
        "timeout",
        "run-0",
        "sess-0",
    )
    assert timed_out.error == "run did not finish within 1s; cancel accepted"
    assert (retry.trigger, retry.attempt, retry.status, retry.run_id, retry.session_id) == (
        "retry",
        2,
        "success",
        "run-0",
        "sess-0",
    )
    assert retry.output == {"content": "COMPLETED content", "content_type": "str"}


@closes_stores
async def test_a_retry_starts_a_new_run_only_once_the_timed_out_one_is_cancelled(open_store):
    c = Replicas(open_store)
    c.target.durations["wf"] = 100.0
    c.target.cancel_delay = 3.0  # it stops at its next step boundary, 3 s after the cancel

    def second_run_is_quick(request):
        if len(c.target.posts(ENDPOINT)) == 2:
            c.target.durations["wf"] = 2.0

    c.target.on_request = second_run_is_quick
    s = await c.manager.create(
        "wf", cron="", endpoint=ENDPOINT, timeout_seconds=10, max_retries=1, retry_delay_seconds=1
    )
    await c.replicas[0].start()
    await c.manager.trigger(s.id)
    await c.clock.advance(200)
    await c.stop()
    first, second = c.target.posts(ENDPOINT)
    assert c.target.cancels == [(T0 + 10, "run-0", "sess-0")]
    # The retry came due about 1 s after the timeout and attached to run-0, still RUNNING; it
    # started run-1 only once a poll saw run-0 CANCELLED (from 13 s on).
    assert first.at == T0 and T0 + 13 <= second.at < T0 + 15
    timed_out, retry = await c.runs(s.id)
    assert (timed_out.status, timed_out.run_id) == ("timeout", "run-0")
    assert timed_out.error == "run did not finish within 10s; cancel accepted"
    assert (retry.status, retry.attempt, retry.run_id, retry.session_id) == (
        "success",
        2,
        "run-1",
        "sess-1",
    )
    assert c.target.cancels == [(T0 + 10, "run-0", "sess-0")]  # the retry cancelled nothing


@closes_stores
async def test_stop_hands_a_run_over_uncancelled_and_the_next_holder_attaches(open_store):
    c = Replicas(open_store, n=2)
    c.target.durations["wf"] = 50.0
    s = await c.manager.create("wf", cron="", endpoint=ENDPOINT, payload={"message": "go"})
    r0, r1 = c.replicas
    await r0.start()
    await c.manager.trigger(s.id)
    await c.clock.advance(10)
    assert [r.path for r in c.target.requests] == [ENDPOINT]
    await r0.stop(timeout=0)  # the run is still going: its lease is handed back at once
    (handed_over,) = await c.runs(s.id)
    assert (handed_over.status, handed_over.run_id) == ("running", "run-0")
    await r1.start()
    await c.clock.advance(20)
    _, replacement = await c.runs(s.id)  # inserted with the run it follows
    assert (replacement.status, replacement.run_id, replacement.session_id) == (
        "running",
        "run-0",
        "sess-0",
    )
    await c.clock.advance(80)
    await c.stop()
    # One POST for the slot, no cancel: r1 re-delivered the attempt by attaching to run-0.
    assert [(r.path, r.attempt) for r in c.target.requests] == [(ENDPOINT, 1)]
    assert c.target.cancels == []
    lost, attached = await c.runs(s.id)
    assert (lost.status, lost.replica, lost.run_id) == ("lease_lost", "r0", "run-0")
    assert (attached.status, attached.replica, attached.reclaim, attached.attempt) == (
        "success",
        "r1",
        1,
        1,
    )
    assert (attached.run_id, attached.session_id) == ("run-0", "sess-0")
    assert attached.completed_at == T0 + 50  # the first poll after the run ended


@closes_stores
async def test_a_redelivery_whose_run_is_gone_or_failed_starts_a_new_one(open_store):
    c = Replicas(open_store, n=2)
    c.target.durations["wf"] = 50.0
    c.target.finals["wf"] = ["ERROR", "COMPLETED"]
    s = await c.manager.create("wf", cron="", endpoint=ENDPOINT)
    r0, r1 = c.replicas
    await r0.start()
    await c.manager.trigger(s.id)
    await c.clock.advance(10)
    await r0.stop(timeout=0)
    await c.clock.advance(45)  # run-0 ends ERROR while nobody holds the slot
    await r1.start()
    await c.clock.advance(100)
    await c.stop()
    first, second = c.target.posts(ENDPOINT)
    assert (first.at, second.at) == (T0, T0 + 55)
    lost, redelivered = await c.runs(s.id)
    assert (lost.status, lost.run_id) == ("lease_lost", "run-0")
    assert (redelivered.status, redelivered.attempt, redelivered.run_id) == ("success", 1, "run-1")
