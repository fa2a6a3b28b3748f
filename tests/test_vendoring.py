"""The kernel vendors as one folder: a copy under another package name, with workflow/ and sim/
deleted, still imports and fires a schedule on a SQLite file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import leasecron.kernel

KERNEL = Path(leasecron.kernel.__file__).parent

SCRIPT = """
import asyncio, json, sys

import httpx

from vendored_sched import (
    HttpDispatcher, ScheduleManager, Scheduler, SimClock, SqliteStore, __all__ as exported,
)

T0 = 1_780_000_000.0
seen = []


async def target(scope, receive, send):  # a bare ASGI app: the fire goes through real HTTP
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    seen.append([scope["method"], scope["path"], headers[b"idempotency-key"].decode()])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def main(path):
    clock = SimClock(start=T0)
    store = SqliteStore(path, inline=True)
    manager = ScheduleManager(store, clock=clock)
    schedule = await manager.create("tick", interval_seconds=60, endpoint="/hooks/tick")
    dispatcher = HttpDispatcher("http://vendor.test", transport=httpx.ASGITransport(app=target))
    scheduler = Scheduler(store, dispatcher, clock=clock, replica_id="r1", poll_interval=1.0)
    await scheduler.start()
    await clock.advance(150)
    await scheduler.stop()
    runs = await manager.store.list_runs(schedule.id, 10)
    print(json.dumps({
        "store": type(store).__name__,
        "leasecron_modules": sorted(m for m in sys.modules if m.startswith("leasecron")),
        "workflow_exported": "Workflow" in exported,
        "seen": seen,
        "runs": sorted([r.status, r.scheduled_for] for r in runs),
    }))
    await store.close()


asyncio.run(main(sys.argv[1]))
"""


def vendor(tmp_path: Path) -> None:
    """The kernel copied as `vendored_sched` under tmp_path, without workflow/ and sim/."""
    vendored = tmp_path / "vendored_sched"
    shutil.copytree(KERNEL, vendored, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(vendored / "workflow")
    shutil.rmtree(vendored / "sim")


def run_in(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_copy_without_workflow_and_sim_still_fires_a_schedule(tmp_path):
    vendor(tmp_path)
    done = run_in(tmp_path, "-c", SCRIPT, str(tmp_path / "v.db"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["leasecron_modules"] == []  # the copy imports only itself
    assert report["store"] == "SqliteLeaseStore"
    assert report["workflow_exported"] is False
    t0 = 1_780_000_000.0
    assert [(m, p) for m, p, _ in report["seen"]] == [("POST", "/hooks/tick")] * 2
    assert len({key for _, _, key in report["seen"]}) == 2
    assert report["runs"] == [["success", t0 + 60], ["success", t0 + 120]]


def test_the_command_line_of_a_copy_without_workflow_and_sim(tmp_path):
    vendor(tmp_path)
    cli = ("-m", "vendored_sched.cli")
    helped = run_in(tmp_path, *cli, "--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("run", "add", "list", "status", "sim", "serve"):
        assert command in helped.stdout
    add = ("add", "tick", "--interval", "60", "--endpoint", "/hooks/tick", "--db", "v.db")
    added = run_in(tmp_path, *cli, *add)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("created: tick")
    listed = run_in(tmp_path, *cli, "list", "--db", "v.db")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "ID", "KIND"]
    assert [line.split()[0] for line in lines[2:]] == ["tick"]  # after the rule under the header
    # sim/ is gone: the command says so (exit 1), whatever flags it is given
    simulated = run_in(tmp_path, *cli, "sim", "--seed", "3")
    assert simulated.returncode == 1
    assert simulated.stdout == ""
    assert "no sim/ folder" in simulated.stderr
