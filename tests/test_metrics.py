"""Metrics (kernel/observe/metrics.py): the on_event hook's counts agree with what the runs table
and the target's own request log say after replicas fire real schedules, and the exposition
text is well formed Prometheus."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

from leasecron.kernel.observe.eventlog import chain
from leasecron.kernel.observe.metrics import Metrics, failure_class
from support import Cluster

SERIES = re.compile(r'^([a-z_]+)(\{([a-z_]+="[^"]*")(,[a-z_]+="[^"]*")*\})? (-?[0-9.e+]+|\+Inf)$')


def parse(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ .+$", line), line
            continue
        m = SERIES.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_counts_match_the_runs_table_and_the_targets_log(tmp_path):
    cluster = Cluster(tmp_path / "m.db", n=2)
    metrics = Metrics()
    cluster.target.codes["/flaky"] = [500]
    cluster.target.durations["slow"] = 25.0  # runs longer than its 10 s interval: slots skipped

    async def main():
        ok = await cluster.manager.create("ok", endpoint="/ok", interval_seconds=10)
        bad = await cluster.manager.create(
            "flaky", endpoint="/flaky", interval_seconds=10, max_retries=1, retry_delay_seconds=1
        )
        slow = await cluster.manager.create(
            "slow",
            endpoint="/agents/slow/runs",
            payload={"message": "hi"},
            interval_seconds=10,
            overlap="skip",
        )
        await cluster.start()
        await cluster.clock.advance(95)
        runs = {s.name: await cluster.runs(s.id) for s in (ok, bad, slow)}
        await cluster.stop()
        return runs

    runs = asyncio.run(main())
    for event, data in cluster.events:
        metrics(event, data)

    rows = [r for rs in runs.values() for r in rs]
    statuses = Counter(r.status for r in rows if r.status not in ("pending", "running"))
    finished = {
        s: metrics.value("leasecron_finishes_total", status=s) for s in ("success", "failed")
    }
    assert finished["success"] == statuses["success"] > 0
    assert finished["failed"] == statuses["failed"] > 0
    assert metrics.value("leasecron_failures_total", **{"class": "http_5xx"}) == statuses["failed"]
    assert metrics.value("leasecron_skipped_slots_total") == statuses["skipped"] > 0
    retried = sum(1 for r in runs["flaky"] if r.trigger == "retry")
    assert metrics.value("leasecron_fires_total", trigger="retry") == retried > 0
    assert metrics.value("leasecron_retries_scheduled_total") >= retried
    # Every request the target saw was one fire (polls and cancels are not requests).
    assert metrics.value("leasecron_fires_total") == len(cluster.target.requests)
    by_replica = {r.replica_id: metrics.value("leasecron_fires_total", replica=r.replica_id)
                  for r in cluster.replicas}  # fmt: skip
    assert sum(by_replica.values()) == len(cluster.target.requests)

    samples = parse(metrics.render())
    for name in ("leasecron_fire_lag_seconds", "leasecron_attempt_duration_seconds"):
        for replica in by_replica:
            if not by_replica[replica]:
                continue
            buckets = [
                v for k, v in samples.items()
                if k.startswith(f'{name}_bucket{{replica="{replica}"')
            ]  # fmt: skip
            assert buckets == sorted(buckets)  # cumulative
            assert buckets[-1] == samples[f'{name}_count{{replica="{replica}"}}']
    assert all(v == 0 for k, v in samples.items() if k.startswith("leasecron_in_flight"))
    for replica in by_replica:  # every look at the store counted and timed
        polls = metrics.value("leasecron_polls_total", replica=replica)
        assert polls > 0
        assert samples[f'leasecron_poll_seconds_count{{replica="{replica}"}}'] == polls
    polled = [d for e, d in cluster.events if e == "poll"]
    assert metrics.value("leasecron_claimed_total") == sum(d["claimed"] for d in polled) > 0


def test_store_errors_lease_losses_and_in_flight():
    metrics = Metrics(replica="r9")
    metrics("store_error", {"operation": "claim", "error": "disk I/O error"})
    metrics("store_error", {"operation": "claim", "error": "disk I/O error"})
    metrics("lease_lost", {"replica": "r1", "schedule_id": "s", "reason": "taken over"})
    metrics("fire", {"replica": "r1", "run_row_id": "a", "trigger": "manual", "at": 10.0,
                     "scheduled_for": None})  # fmt: skip
    samples = parse(metrics.render())
    assert samples['leasecron_store_errors_total{replica="r9",operation="claim"}'] == 2
    assert samples['leasecron_lease_losses_total{replica="r1"}'] == 1
    assert samples['leasecron_in_flight{replica="r1"}'] == 1
    assert samples['leasecron_in_flight{replica="r9"}'] == 0
    end = {"status_code": None, "retry_at": None, "recorded": False, "at": 12.5}
    metrics("finish", {"replica": "r1", "run_row_id": "a", "status": "timeout", **end})
    samples = parse(metrics.render())
    assert samples['leasecron_in_flight{replica="r1"}'] == 0
    assert samples['leasecron_failures_total{replica="r1",class="timeout"}'] == 1
    assert samples['leasecron_unrecorded_outcomes_total{replica="r1"}'] == 1
    assert samples['leasecron_attempt_duration_seconds_sum{replica="r1"}'] == 2.5
    assert samples['leasecron_attempt_duration_seconds_bucket{replica="r1",le="2.5"}'] == 1
    assert samples['leasecron_attempt_duration_seconds_bucket{replica="r1",le="1"}'] == 0


def test_failure_classes_and_label_escaping():
    cases = [("timeout", None), ("failed", None), ("failed", 404), ("failed", 503), ("failed", 302)]
    classes = ["timeout", "no_reply", "http_4xx", "http_5xx", "other"]
    assert [failure_class(*case) for case in cases] == classes
    metrics = Metrics()
    metrics("store_error", {"replica": 'a"b\\c\nd', "operation": "start", "error": "x"})
    (line,) = [ln for ln in metrics.render().splitlines() if ln.startswith("leasecron_store")]
    assert line == 'leasecron_store_errors_total{replica="a\\"b\\\\c\\nd",operation="start"} 1'


def test_chain_calls_every_hook_in_order():
    seen = []
    hook = chain(None, lambda e, d: seen.append(("a", e)), None, lambda e, d: seen.append(("b", e)))
    hook("fire", {})
    assert seen == [("a", "fire"), ("b", "fire")]
    assert chain(None, None) is None
