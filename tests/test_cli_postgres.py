"""The command line on a Postgres URL (the `leasecron.stores` entry point): manage schedules,
then a `leasecron run` process fires a waiting trigger into a real loopback server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pgserver import fresh_database, require_server

require_server()

import psycopg  # noqa: E402

from leasecron.kernel.cli import main  # noqa: E402


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
