"""GET /metrics on the AgentOS app: the app's own scheduler's counts, in Prometheus text."""

from __future__ import annotations

import asyncio

from test_agentos_tools import AUTH, TOKEN, Echo, started

from leasecron.adapters.fastapi import AgentOS
from leasecron.kernel import SimClock


def app_on(tmp_path, clock: SimClock) -> AgentOS:
    """An app whose scheduler runs on `clock`, polling every 30 simulated seconds."""
    return AgentOS(
        db=str(tmp_path / "os.db"),
        agents=[Echo()],
        token=TOKEN,
        clock=clock,
        scheduler_poll_interval=30,
    )


def test_metrics_route_counts_the_apps_own_fires(tmp_path):
    clock = SimClock()
    agent_os = app_on(tmp_path, clock)

    async def main():
        async with started(agent_os) as client:
            assert (await client.get("/metrics")).status_code == 401
            made = await agent_os.ctx.manager.create(
                "tick", endpoint="/agents/echo/runs", payload={"message": "t"}, interval_seconds=10
            )
            await agent_os.ctx.manager.create(
                "off", endpoint="/agents/echo/runs", payload={"message": "t"}, cron="0 9 * * *"
            )
            await agent_os.ctx.manager.disable((await agent_os.ctx.manager.get_by_name("off")).id)
            await clock.advance(35)
            runs = await agent_os.ctx.manager.runs(made.id, limit=100)
            reply = await client.get("/metrics", headers=AUTH)
            return runs, reply

    runs, reply = asyncio.run(main())
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    replica = agent_os.metrics.replica
    successes = sum(1 for r in runs if r.status == "success")
    assert successes >= 3
    text = reply.text
    assert f'leasecron_finishes_total{{replica="{replica}",status="success"}} {successes}' in text
    assert 'leasecron_schedules{state="enabled"} 1' in text
    assert 'leasecron_schedules{state="disabled"} 1' in text


def test_status_route_shows_the_apps_replica_and_its_fires(tmp_path):
    clock = SimClock()
    agent_os = app_on(tmp_path, clock)

    async def main():
        async with started(agent_os) as client:
            assert (await client.get("/status")).status_code == 401
            await agent_os.ctx.manager.create(
                "tick", endpoint="/agents/echo/runs", payload={"message": "t"}, interval_seconds=10
            )
            await clock.advance(35)
            bad = await client.get("/status", params={"window_minutes": 0}, headers=AUTH)
            return (await client.get("/status", headers=AUTH)).json(), bad

    data, bad = asyncio.run(main())
    assert bad.status_code == 422
    (replica,) = data["replicas"]
    assert replica["replica"] == agent_os.metrics.replica and replica["fires"] >= 3
    assert data["schedules"]["total"] == 1 and data["overdue"] == []
    assert data["runs"]["total"] == replica["fires"] and data["schema_version"] == 4
