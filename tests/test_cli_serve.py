"""`leasecron serve`: the demo AgentOS in a real process on a loopback port, its schedules firing
as success runs seen over REST and in the store, Ctrl-C and SIGTERM, a plain ASGI app, and the
errors of a bad --app, a taken port, a vendored kernel without the demo and a failed start."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import httpx
import pytest

from leasecron.kernel import SqliteStore
from leasecron.kernel.cli import main
from leasecron.kernel.cli.serve import listen
from served import DEADLINE, Served, clean_env, until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "agentos_app.py"
TOKEN = "serve-test-token"


def by_name(client: httpx.Client) -> dict[str, dict]:
    page = client.get("/schedules", params={"limit": 100})
    assert page.status_code == 200, page.text
    return {s["name"]: s for s in page.json()["data"]}


def runs_of(client: httpx.Client, schedule_id: str) -> list[dict]:
    page = client.get(f"/schedules/{schedule_id}/runs", params={"limit": 100})
    assert page.status_code == 200, page.text
    return page.json()["data"]


def test_the_demo_app_fires_its_schedules_as_success_runs_and_stops_on_ctrl_c(tmp_path):
    db = tmp_path / "serve.db"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    served = Served("--db", str(db), "--token-file", str(token_file), cwd=tmp_path)
    try:
        assert f"db:         {db}" in served.out()
        assert "token:      required, from --token-file" in served.out()
        assert TOKEN not in served.out()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=served.url, headers=headers, timeout=10) as client:
            until("/health", lambda: client.get("/health").status_code == 200)
            assert httpx.get(f"{served.url}/schedules").status_code == 401
            schedules = by_name(client)
            assert set(schedules) == {"echo-every-2s", "weekday-reminder", "blog-every-minute"}
            assert schedules["weekday-reminder"]["cron_expr"] == "0 9 * * 1-5"
            echo = schedules["echo-every-2s"]

            def two_successes():
                done = [r for r in runs_of(client, echo["id"]) if r["status"] == "success"]
                return done if len(done) >= 2 else None

            done = until("two successful echo fires", two_successes)
            assert {r["output"]["content"] for r in done} == {"echo: tick"}
            assert all(r["run_id"] and r["trigger"] == "schedule" for r in done)

            # The workflow, triggered now rather than at the next minute: its review loop ends
            # when the CEL end condition sees the approval.
            blog = schedules["blog-every-minute"]
            queued = client.post(f"/schedules/{blog['id']}/trigger")
            assert queued.status_code == 202, queued.text

            def blog_run():
                row = client.get(f"/schedules/{blog['id']}/runs/{queued.json()['id']}").json()
                return row if row["status"] not in ("pending", "running") else None

            row = until("the triggered workflow run", blog_run)
            assert row["status"] == "success", row
            assert row["output"]["content"].startswith("APPROVED after 2 revisions")
        served.wait_for(r"finish  echo-every-2s  status=success")
        served.wait_for(r"fire    blog-every-minute  attempt=1 trigger=manual")
        code, err = served.stop(signal.SIGINT)
    finally:
        served.kill()
    assert code == 130, err
    assert served.lines[-1] == "stopped"
    assert "Traceback" not in err, err

    async def slots() -> list:
        store = SqliteStore(str(db), readonly=True)
        try:
            return await store.list_runs(echo["id"], 1000)
        finally:
            await store.close()

    rows = asyncio.run(slots())
    ok = Counter(r.scheduled_for for r in rows if r.status == "success")
    assert len(ok) >= 2 and max(ok.values()) == 1  # each slot succeeded once


def test_no_scheduler_serves_the_routes_and_sigterm_exits_0(tmp_path):
    served = Served("--db", str(tmp_path / "quiet.db"), "--no-scheduler", cwd=tmp_path)
    try:
        assert "scheduler:  off (--no-scheduler)" in served.out()
        assert "token:      none: every request is accepted" in served.out()
        with httpx.Client(base_url=served.url, timeout=10) as client:
            assert client.get("/health").status_code == 200
            assert "echo-every-2s" in by_name(client)  # on_startup ran; nothing fires them
            reply = client.post("/agents/echo/runs", data={"message": "hi", "stream": "false"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["content"] == "echo: hi"
        code, err = served.stop(signal.SIGTERM)
    finally:
        served.kill()
    assert code == 0, err
    assert not any(re.search(r"Z  fire ", line) for line in served.lines), served.out()


def test_a_plain_asgi_app_is_served_by_path(tmp_path):
    (tmp_path / "hello_app.py").write_text(
        textwrap.dedent(
            """
            async def app(scope, receive, send):
                if scope["type"] != "http":
                    return
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"hello"})
            """
        )
    )
    served = Served("--app", "hello_app.py:app", cwd=tmp_path, banner_end=None)
    try:
        assert httpx.get(served.url + "/anything", timeout=10).text == "hello"
        assert "docs:" not in served.out()  # only an AgentOS has the routes named there
        code, err = served.stop(signal.SIGINT)
    finally:
        served.kill()
    assert code == 130, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--app", "no_such_module_here:app"], "--app: no module named 'no_such_module_here'"),
        (["--app", "nothing"], "--app: 'nothing' must be module:attr or path.py:attr"),
        (["--app", "missing.py:app"], "--app: no such file: missing.py"),
        (["--app", f"{EXAMPLE}:nope"], "agentos_app.py has no attribute 'nope'"),
        (["--app", "json:__doc__"], "--app: json:__doc__ is a str, not an AgentOS"),
        (["--app", "json:dumps", "--db", "x.db"], "--db: applies to an AgentOS; json:dumps is"),
        (["--app", "json:dumps", "--no-scheduler"], "--no-scheduler: applies to an AgentOS"),
        (["--port", "70000"], "--port: 70000 must be 0-65535"),
        (["--token-file", "no-such-token"], "--token-file: cannot read no-such-token"),
    ],
)
def test_bad_flags_name_the_flag_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


def test_a_taken_port_is_refused_naming_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--db", str(tmp_path / "p.db"), "--port", str(port)]) == 2
    assert f"--port: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


async def test_accepted_connections_send_without_waiting_for_acks():
    # asyncio sets TCP_NODELAY only on sockets that say they are TCP; with Nagle on, a response
    # written in two parts waited for the client's delayed ACK (~40 ms a request).
    sock = listen("127.0.0.1", 0)
    accepted = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport):
            peer = transport.get_extra_info("socket")
            accepted.set_result(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(accepted, DEADLINE) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_an_app_that_cannot_start_exits_1(tmp_path):
    # The store is a directory: the app's start-up (opening it) fails; uvicorn logs why.
    proc = subprocess.run(
        [sys.executable, "-m", "leasecron.kernel.cli", "serve", "--port", "0", "--db", "."],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert proc.returncode == 1, proc.stderr
    assert "did not start (the reason is logged above)" in proc.stderr
    assert "Application startup failed" in proc.stderr


def test_a_vendored_kernel_without_the_demo_says_where_it_looked(tmp_path):
    shutil.copytree(ROOT / "kernel", tmp_path / "vendored" / "vendored_kernel")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from vendored_kernel.cli import main; sys.exit(main(['serve']))",
        ],
        cwd=tmp_path / "vendored",
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert proc.returncode == 2, proc.stderr
    expected = tmp_path / "vendored" / "examples" / "agentos_app.py"
    assert f"the default app examples/agentos_app.py is not at {expected}" in proc.stderr


EXTRA = "pip install 'leasecron[server]'"


@pytest.mark.parametrize(
    ("missing", "app", "message"),
    [
        # The demo imports FastAPI (through the adapter): the extra is named.
        ("fastapi", None, "needs fastapi, which is not installed: pip install 'leasecron[server]'"),
        (
            "uvicorn",
            "hello_app.py:app",
            "uvicorn is not installed: pip install 'leasecron[server]'",
        ),
    ],
)
def test_without_the_server_extra_the_error_names_it(missing, app, message, tmp_path):
    (tmp_path / "hello_app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    args = ["serve", "--port", "0", *(["--app", app] if app else [])]
    # A None entry in sys.modules makes `import <missing>` fail as if it were not installed.
    code = (
        f"import sys; sys.modules[{missing!r}] = None; "
        f"from leasecron.kernel.cli import main; sys.exit(main({args!r}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_log_format_json_makes_every_line_one_object(tmp_path):
    served = Served(
        "--db", str(tmp_path / "json.db"), "--log-format", "json", cwd=tmp_path, banner_end=None
    )
    try:
        served.wait_for(r'"event": "finish".*"schedule": "echo-every-2s"')
    finally:
        code, err = served.stop(signal.SIGTERM)
    assert code == 0
    records = [json.loads(line) for line in served.lines]  # stdout: one object a line
    assert records[0]["event"] == "serving" and records[0]["url"] == served.url
    assert records[-1]["event"] == "stopped"
    # The demo's other schedules may fire too (the workflow at each minute): follow the echo.
    fire = next(r for r in records if r["event"] == "fire" and r["schedule"] == "echo-every-2s")
    finish = next(r for r in records if r["event"] == "finish" and r["run"] == fire["run"])
    assert (fire["trigger"], fire["attempt"]) == ("schedule", 1)
    assert finish["status"] == "success" and finish["duration_ms"] >= 0
    logged = [json.loads(line) for line in err.splitlines()]  # uvicorn's lines too
    assert any(r["logger"].startswith("uvicorn") for r in logged)
