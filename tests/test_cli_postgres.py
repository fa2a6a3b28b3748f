"""The command line on a Postgres URL (the `leasecron.stores` entry point): manage schedules,
then a `leasecron run` process fires a waiting trigger into a real loopback server; a wrong
database name fails at once in one line; tables another program made under our prefix are
refused."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pgserver import database_url, fresh_database, require_server

require_server()

import psycopg  # noqa: E402

from leasecron.adapters.postgres import PostgresStore  # noqa: E402
from leasecron.kernel import ScheduleManager, StoreError  # noqa: E402
from leasecron.kernel.cli import main  # noqa: E402

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url():
    with fresh_database("leasecron_cli") as dsn:
        yield dsn


def test_cli_manages_and_runs_schedules_on_postgres(db_url, capsys):
    hits: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hits.append(self.headers["Idempotency-Key"])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert main(["add", "hook", "--endpoint", "/hooks/h", "--db", db_url]) == 0
        assert main(["add", "hook", "--endpoint", "/hooks/h", "--db", db_url]) == 2  # exists
        assert main(["list", "--db", db_url]) == 0
        assert "hook" in capsys.readouterr().out
        assert main(["trigger", "hook", "--db", db_url]) == 0  # durable: waits for a replica
        run_id = capsys.readouterr().out.strip()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "leasecron.kernel.cli",
                "run",
                "--db",
                db_url,
                "--base-url",
                base,
                "--poll-interval",
                "15",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while not hits and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert len(hits) == 1 and hits[0].endswith(f"@manual:{run_id}")
        assert main(["runs", "hook", "--db", db_url]) == 0
        assert "success" in capsys.readouterr().out
        # on the server itself, not in a file named like the URL
        with psycopg.connect(db_url) as conn:
            rows = conn.execute("SELECT status FROM agno_schedule_runs").fetchall()
        assert rows == [("success",)]
        assert not os.path.exists(db_url)
    finally:
        server.shutdown()
        server.server_close()


def test_sim_runs_on_postgres_and_checks_clean(db_url, capsys):
    # the simulator on the real server: every fault class on, zero violations, exit status 0
    assert main(["sim", "--store", db_url, "--seed", "5", "--hours", "0.5"]) == 0
    out = capsys.readouterr().out
    schema = out.split("schema ", 1)[1].split()[0]
    assert "violations                0" in out and "fires (requests sent)" in out
    with psycopg.connect(db_url) as conn:  # the run's rows are on the server, in its schema
        (runs,) = conn.execute(f'SELECT count(*) FROM "{schema}".agno_schedule_runs').fetchone()
    assert runs > 0


async def test_a_wrong_database_name_fails_at_once_in_one_line(caplog):
    url = database_url("leasecron_nosuchdb_for_sure")
    # With a connect_timeout this long, only an immediate failure lets the test end at all.
    store = PostgresStore(url, connect_timeout=600)
    with caplog.at_level(logging.WARNING), pytest.raises(StoreError) as caught:
        await store.open()
    await store.close()
    assert caught.value.operation == "open"
    assert 'database "leasecron_nosuchdb_for_sure" does not exist' in str(caught.value)
    assert [r for r in caplog.records if r.name.startswith("psycopg")] == []  # no pool retries


def test_cli_on_a_wrong_database_name_prints_one_line(capsys, caplog):
    url = database_url("leasecron_nosuchdb_for_sure")
    with caplog.at_level(logging.WARNING):
        assert main(["list", "--db", url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"leasecron: error: db: {url}: store.")
    assert 'database "leasecron_nosuchdb_for_sure" does not exist' in err
    assert [r for r in caplog.records if r.name.startswith("psycopg")] == []


AGNO_SESSIONS = """CREATE TABLE agno_sessions (
    session_id VARCHAR PRIMARY KEY, session_type VARCHAR NOT NULL, agent_id VARCHAR,
    team_id VARCHAR, workflow_id VARCHAR, user_id VARCHAR, session_data JSONB,
    agent_data JSONB, team_data JSONB, workflow_data JSONB, metadata JSONB, runs JSONB,
    summary JSONB, created_at BIGINT NOT NULL, updated_at BIGINT)"""


async def test_an_agentos_database_is_refused_naming_prefix(db_url, capsys):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(AGNO_SESSIONS)
    store = PostgresStore(db_url)
    with pytest.raises(StoreError) as caught:
        await store.open()
    await store.close()
    message = str(caught.value)
    assert caught.value.operation == "open"
    assert "public: table(s) agno_sessions exist but were not made by leasecron" in message
    assert 'choose another prefix= (e.g. prefix="leasecron_")' in message
    with psycopg.connect(db_url) as conn:  # refused inside the migration: nothing was made
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert tables == {"agno_sessions"}

    code = await asyncio.to_thread(main, ["list", "--db", db_url])
    assert code == 1
    assert "choose another prefix=" in capsys.readouterr().err

    mine = PostgresStore(db_url, prefix="leasecron_")
    await ScheduleManager(mine).create("tick", endpoint="/t", interval_seconds=60)
    assert [s.name for s in await mine.list_schedules()] == ["tick"]
    await mine.close()
