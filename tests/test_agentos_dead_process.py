"""Runs of a server process that died (adapters/fastapi/server_stamp.py): a run left RUNNING by
a `leasecron serve` process killed with SIGKILL reads ERROR from the next server on the same
SQLite file, and the schedule's re-delivered attempt starts a new run that succeeds. Also which
stamps count as gone: a pid that exited, a pid reused by another process; never this process,
another host's, or a stamp that is not one."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import httpx
import pytest

from leasecron.adapters.fastapi.server_stamp import KEY, process_gone, this_process
from leasecron.kernel import RunStatus, ScheduleManager
from leasecron.kernel.open_store import open_store
from served import Served, until

TOKEN = "dead-process-token"
APP = """
import asyncio
import os

from leasecron.adapters.fastapi import AgentOS


class Slow:
    id = "slow"

    async def arun(self, message, **kwargs):
        if os.path.exists(os.environ["HANG_FILE"]):
            await asyncio.Event().wait()  # until the process is killed
        return f"done: {message}"


agent_os = AgentOS(agents=[Slow()], scheduler_poll_interval=0.1)
"""


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_which_stamps_name_a_process_that_is_gone():
    me = this_process()
    assert me["pid"] == os.getpid() and me["host"]
    assert not process_gone(me, me)  # this process
    assert process_gone({**me, "pid": exited_pid()}, me)
    # This pid, alive, but stamped with another start time: a process that used the pid before.
    if me["started"] is not None:
        assert process_gone({**me, "started": me["started"] - 1}, me)
    assert not process_gone({**me, "host": "elsewhere", "pid": exited_pid()}, me)
    for bad in (None, "x", {}, {"host": me["host"]}, {"host": me["host"], "pid": True}):
        assert not process_gone(bad, me)


async def schedule_and_trigger(db: str):
    store = open_store(db)
    try:
        manager = ScheduleManager(store)
        s = await manager.create(
            "slow", cron="", endpoint="/agents/slow/runs", payload={"message": "go"}
        )
        await manager.trigger(s.id)
        return s
    finally:
        await store.close()


async def schedule_runs(db: str, schedule_id: str) -> list:
    store = open_store(db)
    try:
        return await store.list_runs(schedule_id, 100)
    finally:
        await store.close()


async def workflow_run(db: str, run_id: str):
    store = open_store(db)
    try:
        return await store.get_workflow_run(run_id)
    finally:
        await store.close()


@pytest.mark.slow
def test_a_run_of_a_killed_server_reads_error_and_its_redelivery_succeeds(tmp_path):
    (tmp_path / "dead_app.py").write_text(textwrap.dedent(APP))
    hang = tmp_path / "hang"
    hang.touch()
    db = str(tmp_path / "dead.db")
    args = ("--app", "dead_app.py:agent_os", "--db", db)
    env = {"LEASECRON_TOKEN": TOKEN, "HANG_FILE": str(hang)}
    first = Served(*args, cwd=tmp_path, env=env)
    second = None
    try:
        s = asyncio.run(schedule_and_trigger(db))
        attempt = until(
            "the attempt linked to its run",
            lambda: [r for r in asyncio.run(schedule_runs(db, s.id)) if r.run_id],
        )[0]
        dead_run = attempt.run_id
        # The id is recorded before the run's POST is sent: wait for the run's start save.
        run = until("the run's start saved", lambda: asyncio.run(workflow_run(db, dead_run)))
        assert run.status is RunStatus.RUNNING
        assert run.additional_data[KEY]["pid"] == first.proc.pid

        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        hang.unlink()
        # The killed process's lease would run out in 30 s (the row comes due then too): let it
        # have run out already.
        conn = sqlite3.connect(db)
        conn.execute(
            "UPDATE agno_schedules SET lease_expires_at = 1, due_at = 1 WHERE locked_by IS NOT NULL"
        )
        conn.commit()
        conn.close()

        second = Served(*args, cwd=tmp_path, env=env)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=second.url, headers=headers) as client:
            polled = client.get(
                f"/agents/slow/runs/{dead_run}", params={"session_id": run.session_id}
            ).json()
            assert polled["status"] == "ERROR"
            assert polled["error"] == "the server process running it ended"
            assert KEY not in polled.get("additional_data", {})
            cancel = client.post(f"/agents/slow/runs/{dead_run}/cancel")
            assert cancel.status_code == 200  # over already: nothing to cancel
        assert asyncio.run(workflow_run(db, dead_run)).status is RunStatus.ERROR

        done = until(
            "the re-delivered attempt succeeded",
            lambda: [r for r in asyncio.run(schedule_runs(db, s.id)) if r.status == "success"],
        )
        assert len(done) == 1 and done[0].run_id != dead_run
        assert done[0].output["content"] == "done: go"
        new_run = asyncio.run(workflow_run(db, done[0].run_id))
        assert new_run.additional_data[KEY]["pid"] == second.proc.pid
        code, err = second.stop(signal.SIGTERM)
        assert code == 0, err
    finally:
        first.kill()
        if second is not None:
            second.kill()
