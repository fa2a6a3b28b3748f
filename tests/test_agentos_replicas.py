"""Two `leasecron serve` processes on one database, each firing over real HTTP at the other
(`scheduler_base_url` is the peer's address): every slot succeeds exactly once, both replicas
take part, and each fire's run was served by the other process. On PostgreSQL, and on one
SQLite file."""

from __future__ import annotations

import asyncio
import signal
import textwrap
import time
from collections import Counter, defaultdict

import pytest

from leasecron.kernel import ScheduleManager
from leasecron.kernel.open_store import open_store
from served import DEADLINE, Served, free_port

pytestmark = pytest.mark.slow

TOKEN = "replica-token"
INTERVAL = 0.5
SCHEDULES = 10

APP = """
import os

from leasecron.adapters.fastapi import AgentOS


class Echo:
    id = "echo"

    async def arun(self, message, *, session_id=None, user_id=None, **kwargs):
        return f"echo from {os.getpid()}: {message}"


agent_os = AgentOS(
    agents=[Echo()], scheduler_base_url=os.environ["PEER_URL"], scheduler_poll_interval=0.2
)
"""


async def create_schedules(db: str) -> list:
    store = open_store(db)
    try:
        manager = ScheduleManager(store)
        return [
            await manager.create(
                f"echo-{i:02d}",
                interval_seconds=INTERVAL,
                endpoint="/agents/echo/runs",
                payload={"message": f"slot of {i}"},
            )
            for i in range(SCHEDULES)
        ]
    finally:
        await store.close()


async def all_runs(db: str) -> list:
    store = open_store(db)
    try:
        return await store.list_runs(None, 100_000)
    finally:
        await store.close()


def pid_of(replica: str) -> int:
    return int(replica.rsplit("-", 2)[1])  # default replica ids are host-pid-random


def two_replicas_fire_every_slot_once(db: str, tmp_path) -> None:
    (tmp_path / "replica_app.py").write_text(textwrap.dedent(APP))
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    common = ("--app", "replica_app.py:agent_os", "--db", db)
    env = {"LEASECRON_TOKEN": TOKEN}
    procs: list[Served] = []
    try:
        for me, peer in ((0, 1), (1, 0)):
            procs.append(
                Served(*common, cwd=tmp_path, port=ports[me], env={**env, "PEER_URL": urls[peer]})
            )
        pids = {p.proc.pid for p in procs}
        # Created once both listen: a fire at a peer still starting would fail (no retries).
        schedules = asyncio.run(create_schedules(db))
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:  # until both replicas have fired plenty
            done = [r for r in asyncio.run(all_runs(db)) if r.status == "success"]
            if len(done) >= 80 and {pid_of(r.replica) for r in done} == pids:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"not enough fires within {DEADLINE}s")
        stopping = time.time()
        codes = [p.stop(signal.SIGTERM) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [code for code, _ in codes] == [0, 0], [err for _, err in codes]

    rows = asyncio.run(all_runs(db))
    success = Counter((r.schedule_id, r.scheduled_for) for r in rows if r.status == "success")
    assert max(success.values()) == 1, "a slot succeeded twice"
    by_schedule: dict[str, list] = defaultdict(list)
    for r in rows:
        by_schedule[r.schedule_id].append(r)
    for s in schedules:
        mine = by_schedule[s.id]
        # Every slot from the first to the last settled before the stop: one success each. A
        # slot skipped by the overlap policy (a slow fire on a loaded box) is recorded as such;
        # it must never also have succeeded.
        settled = {
            r.scheduled_for: r.status
            for r in mine
            if r.scheduled_for is not None and r.scheduled_for < stopping - 3.0
        }
        slots = sorted(settled)
        assert slots, f"{s.name} never fired"
        expected = [slots[0] + k * INTERVAL for k in range(len(slots))]
        assert slots == pytest.approx(expected, abs=1e-6), f"{s.name}: a slot is missing"
        assert set(settled.values()) <= {"success", "skipped"}, settled
        skipped = [t for t, st in settled.items() if st == "skipped"]
        assert len(skipped) <= len(slots) // 4, f"{s.name}: {len(skipped)} slots skipped"
    # Each fire went over HTTP to the peer: its run was served by the other process.
    for r in rows:
        if r.status == "success":
            assert r.output["content"].startswith("echo from "), r.output
            served_by = int(r.output["content"].split()[2].rstrip(":"))
            assert served_by != pid_of(r.replica) and served_by in pids


@pytest.mark.postgres
def test_two_servers_on_postgres_fire_every_slot_once_over_http(tmp_path):
    import pgserver

    pgserver.require_server()
    with pgserver.fresh_database("leasecron_replicas") as url:
        two_replicas_fire_every_slot_once(url, tmp_path)


def test_two_servers_on_one_sqlite_file_fire_every_slot_once_over_http(tmp_path):
    two_replicas_fire_every_slot_once(str(tmp_path / "replicas.db"), tmp_path)
