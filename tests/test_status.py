"""The cluster status view (kernel/observe/status.py, `leasecron status`): what it says agrees with
the runs table after replicas fire real schedules on a SQLite file, under a simulated clock."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from leasecron.kernel.cli import main
from leasecron.kernel.observe.status import cluster_status, render_status
from support import Cluster


def test_status_counts_agree_with_the_runs_table(tmp_path):
    cluster = Cluster(tmp_path / "s.db", n=2)
    cluster.target.codes["/bad"] = [503]

    async def scenario():
        await cluster.manager.create("ok", endpoint="/ok", interval_seconds=10)
        await cluster.manager.create("bad", endpoint="/bad", interval_seconds=30)
        await cluster.start()
        await cluster.clock.advance(120)
        live = await cluster_status(cluster.manager, cluster.clock.now(), window=600)
        for replica in cluster.replicas:  # the cluster goes away; its schedules come due
            await replica.stop(timeout=0)
        await cluster.clock.advance(300)
        late = await cluster_status(cluster.manager, cluster.clock.now(), window=60)
        rows = await cluster.manager.store.list_runs(None, 10_000)
        await cluster.stop()
        return live, late, rows

    live, late, rows = asyncio.run(scenario())
    fired = Counter(r.replica for r in rows if r.replica)
    assert {r.replica: r.fires for r in live.replicas} == dict(fired)
    assert len(live.replicas) == 2 and all(r.fires > 0 for r in live.replicas)
    failed = [r for r in rows if r.status == "failed"]
    assert len(live.failures) == len(failed) > 0
    assert {r.status_code for r in live.failures} == {503}
    assert live.runs_total == len(rows) and not live.truncated
    assert live.overdue == [] and live.lag_p50 is not None and live.lag_p99 >= live.lag_p50
    # Five minutes with no replica: both schedules overdue, none seen, no failures lately.
    assert sorted(s.name for s in late.overdue) == ["bad", "ok"]
    assert late.replicas == [] and late.failures == []
    text = render_status(late)
    assert "overdue: 2" in text and "replicas: none seen in the last 1 min" in text
    assert "  ok: due " in text and "history: " in text
    shown = render_status(live)
    assert "REPLICA" in shown and "latest failures" in shown and "HTTP 503" in shown


def test_status_command_reads_only_and_speaks_json(tmp_path, capsys):
    db = tmp_path / "cli.db"
    assert main(["add", "tick", "--db", str(db), "--endpoint", "/x", "--interval", "60"]) == 0
    capsys.readouterr()
    before = db.stat().st_mtime_ns
    assert main(["status", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("leasecron status at ") and "(schema v4)" in out
    assert "schedules: 1 (1 enabled, 0 quarantined)" in out
    assert main(["status", "--db", str(db), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schedules"]["total"] == 1 and data["schema_version"] == 4
    assert db.stat().st_mtime_ns == before  # read-only
    assert main(["status", "--db", str(tmp_path / "missing.db")]) == 1  # as list, show, runs
