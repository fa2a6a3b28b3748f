"""The command line as a person uses it: a replica's log lines (store errors rate-limited on the
replica's clock, failed attempts with their reason), the token kept out of `ps`, read-only
commands on missing and read-only files, errors that name the flag typed, the runs listing,
a closed pipe and Ctrl-C, foreign tables under our prefix, and the demo's closing table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from leasecron.kernel import HttpDispatcher, ScheduleManager, Scheduler, SimClock, StoreError
from leasecron.kernel.cli import main
from leasecron.kernel.observe.eventlog import ReplicaLog
from leasecron.kernel.sqlite import SqliteStore
from support import T0, Cluster, HookedStore, Target

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
CLI = "import sys; from leasecron.kernel.cli import main; sys.exit(main(sys.argv[1:]))"


class Records(logging.Handler):
    """Every record of one logger, kept as (level name, message)."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []
        self.logger = logging.getLogger(name)
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        self.logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, record.getMessage()))

    def close(self) -> None:
        self.logger.removeHandler(self)
        super().close()


@pytest.fixture
def records():
    rec = Records("test.replica")
    yield rec
    rec.close()


def cli_run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def make_db(path: Path, *specs: tuple[str, dict]) -> None:
    """A SQLite file holding these schedules (name, fields), made at T0 on a SimClock."""

    async def go():
        store = SqliteStore(str(path), inline=True)
        manager = ScheduleManager(store, clock=SimClock(start=T0))
        for name, fields in specs:
            await manager.create(name, **{"endpoint": f"/hooks/{name}", **fields})
        await store.close()

    asyncio.run(go())


@contextlib.contextmanager
def immutable(*paths: Path):
    """chattr +i: even root cannot write, create or delete there (root ignores chmod bits)."""
    done = []
    try:
        for p in paths:
            result = subprocess.run(["chattr", "+i", str(p)], capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"chattr +i unsupported here: {result.stderr.strip()}")
            done.append(p)
        yield
    finally:
        for p in reversed(done):
            subprocess.run(["chattr", "-i", str(p)], check=True)


# -- the replica's log lines ---------------------------------------------------------------------


async def test_store_errors_are_rate_limited_on_the_replica_clock(tmp_path, records):
    """Every claim fails (the file is opened read-only): one line per operation per minute, on
    the injected clock, with the count of the lines held back; the rest at stop."""
    db = tmp_path / "ro.db"
    clock = SimClock(start=T0)
    store = SqliteStore(str(db), inline=True)
    await ScheduleManager(store, clock=clock).create("tick", endpoint="/t", interval_seconds=1)
    await store.close()
    readonly = SqliteStore(str(db), inline=True, readonly=True)
    target = Target(clock)
    dispatcher = HttpDispatcher("http://target", transport=target.transport(), clock=clock)
    log = ReplicaLog(clock, logger=records.logger)
    sched = Scheduler(
        readonly, dispatcher, clock=clock, replica_id="r1", poll_interval=1.0, on_event=log
    )
    await sched.start()
    await clock.advance(150)
    await sched.stop(timeout=0)
    log.flush()
    await dispatcher.aclose()
    await readonly.close()
    assert target.requests == []
    # (the replica's housekeeping fails on the read-only file too: its own lines, not counted)
    lines = [msg for level, msg in records.lines if level == "ERROR" and "store.claim" in msg]
    assert all("store.claim failed: attempt to write a readonly database" in m for m in lines)
    # at T0+1 (the first claim), then the first failure 60 s later, and again; then the rest
    assert len(lines) == 4, lines
    assert "more since" not in lines[0]
    held_back = [int(re.search(r"\((\d+) more since (" + ISO + r")", m)[1]) for m in lines[1:]]
    assert all(n > 10 for n in held_back)  # the loop retried far more often than it logged
    assert lines[-1].endswith("; this was the last)")
    assert {level for level, _ in records.lines} == {"ERROR"}


async def test_failed_attempts_are_warnings_with_their_reason(tmp_path, records):
    clock = SimClock(start=T0)
    store = SqliteStore(str(tmp_path / "f.db"), inline=True)
    manager = ScheduleManager(store, clock=clock)
    await manager.create(
        "flaky", endpoint="/hooks/flaky", interval_seconds=600, max_retries=1, retry_delay_seconds=5
    )
    target = Target(clock, codes={"/hooks/flaky": [503, 500, 200]})
    dispatcher = HttpDispatcher("http://target", transport=target.transport(), clock=clock)
    sched = Scheduler(
        store,
        dispatcher,
        clock=clock,
        replica_id="r1",
        on_event=ReplicaLog(clock, logger=records.logger),
    )
    await sched.start()
    await clock.advance(700)
    await sched.stop(timeout=0)
    await dispatcher.aclose()
    await store.close()
    assert len(target.requests) == 2
    first, second = records.lines
    assert first[0] == second[0] == "WARNING"
    assert re.fullmatch(
        r"flaky: attempt 1 failed \(HTTP 503: HTTP 503 Service Unavailable: .*\); retry at "
        + ISO
        + r"; run [0-9a-f]{8}",
        first[1],
    ), first
    assert re.fullmatch(r"flaky: attempt 2 failed \(HTTP 500: .*\); no retry; run \w{8}", second[1])


async def test_a_lost_lease_is_a_warning_naming_the_schedule(tmp_path, records):
    """r0's heartbeat fails (its disk is gone), so its lease lapses and r1 re-delivers."""
    c = Cluster(tmp_path / "lost.db", n=2, lease_seconds=30)
    c.target.durations["slow"] = 100.0
    hooked = HookedStore(c.stores[0])
    c.replicas[0].store = hooked

    def fail_heartbeat(*_):
        raise StoreError("heartbeat", RuntimeError("disk unavailable"))

    hooked.before["heartbeat"] = fail_heartbeat
    c.replicas[0].on_event = ReplicaLog(c.clock, logger=records.logger)
    s = await c.manager.create("slow", interval_seconds=1000, endpoint="/agents/slow/runs")
    await c.replicas[0].start()
    await c.clock.advance(1000)
    await c.replicas[1].start()
    await c.clock.advance(300)
    await c.stop()
    lost = [msg for level, msg in records.lines if "lease lost" in msg]
    assert lost == [f"lease lost on schedule slow ({s.id[:8]}): lease not renewed in time"]
    assert ("WARNING", lost[0]) in records.lines
    beats = [msg for level, msg in records.lines if level == "ERROR"]
    assert beats == ["store.heartbeat failed: disk unavailable"]  # renewals kept failing: 1 line


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: connecting is refused


class Lines:
    """A pipe read line by line on a thread, so the test can wait for a line to appear."""

    def __init__(self, pipe):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, seconds: float = 15.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return True
            time.sleep(0.02)
        return False

    def join(self) -> list[str]:
        self._thread.join(timeout=10)
        return self.lines


def start_run(db: Path, base_url: str, *extra: str, env: dict | None = None):
    argv = ["run", "--db", str(db), "--base-url", base_url, "--poll-interval", "0.2", *extra]
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    return proc, Lines(proc.stdout), Lines(proc.stderr)


def stop_run(proc, sig=signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=20)


def test_run_logs_each_failed_fire_on_stderr_and_quiet_silences_it(tmp_path):
    db = tmp_path / "dead.db"
    make_db(db, ("tick", {"interval_seconds": 0.5}))
    base_url = f"http://127.0.0.1:{_dead_port()}"
    proc, out, err = start_run(db, base_url)
    try:
        assert err.wait_for("WARNING tick: attempt 1 failed"), err.lines
    finally:
        assert stop_run(proc) == 0
    errs, outs = err.join(), out.join()
    assert outs[0].startswith("leasecron replica ")
    assert outs[1:] == ["stopping: waiting for attempts in flight...", outs[-1]]
    assert outs[-1].startswith("stopped; ")
    assert errs, "a replica whose every fire fails must say so"
    for line in errs:
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING tick: attempt 1 failed "
            r"\(ConnectError: .*Connect call failed.*\); no retry; run [0-9a-f]{8}",
            line,
        ), line

    proc, out, err = start_run(db, base_url, "--quiet", "--log-fires")
    try:
        assert out.wait_for("  finish  tick  status=failed"), out.lines
    finally:
        assert stop_run(proc) == 0
    assert err.join() == []  # --quiet: no warnings; --log-fires still prints each fire
    assert any("  fire    tick  " in line for line in out.join())


def test_run_on_a_read_only_file_says_every_claim_fails_once_a_minute(tmp_path):
    db = tmp_path / "ro.db"
    make_db(db, ("tick", {"interval_seconds": 0.5}))
    with immutable(db):
        proc, out, err = start_run(db, f"http://127.0.0.1:{_dead_port()}", "--quiet")
        try:
            assert err.wait_for("ERROR store.claim failed"), (err.lines, out.lines)
        finally:
            assert stop_run(proc) == 0
    errs = err.join()
    claims = [line for line in errs if "store.claim failed" in line]
    assert re.search(r"ERROR store\.claim failed: attempt to write a readonly database$", claims[0])
    # within one minute: the first line, then at most the count of the rest at stop
    assert len(claims) <= 2
    if len(claims) == 2:
        assert re.search(r"\(\d+ more since " + ISO + r"; this was the last\)$", claims[1])


# -- the token, out of `ps` ------------------------------------------------------------------------


class AuthRecorder:
    """A loopback HTTP server that answers 200 and keeps each request's Authorization."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append(self.headers.get("Authorization"))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("how", ["file", "env"])
def test_run_reads_the_token_from_a_file_or_the_environment(tmp_path, how):
    db = tmp_path / "tok.db"
    make_db(db, ("tick", {"interval_seconds": 0.5}))
    target = AuthRecorder()
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-from-file\n")
    argv, env = (["--token-file", str(token_file)], {}) if how == "file" else ([], {})
    if how == "env":
        env = {"LEASECRON_TOKEN": "s3cret-from-env"}
    try:
        proc, _, err = start_run(db, target.url, *argv, env=env)
        try:
            deadline = time.monotonic() + 15
            while not target.seen and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            assert stop_run(proc) == 0, err.join()
        # the secret is not on the command line, so not in `ps`
        assert "s3cret" not in " ".join(proc.args)
    finally:
        target.close()
    want = "Bearer s3cret-from-file" if how == "file" else "Bearer s3cret-from-env"
    assert target.seen and set(target.seen) == {want}  # the file's newline is not part of it


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"cannot read .*/token: No such file or directory"),
        ("", r".*/token is empty"),
        ("\n", r".*/token is empty"),
        ("two\nlines\n", r"the token must be one line"),
    ],
)
def test_a_bad_token_file_is_an_error_naming_the_flag(tmp_path, capsys, content, message):
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    code, out, err = cli_run(
        capsys,
        "run",
        "--db",
        str(tmp_path / "never.db"),
        "--base-url",
        "http://127.0.0.1:9",
        "--token-file",
        str(token_file),
    )
    assert (code, out) == (2, "")
    assert re.fullmatch(r"leasecron: error: --token-file: " + message + "\n", err), err
    assert not (tmp_path / "never.db").exists()  # refused before anything was opened


# -- read-only commands --------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["list"], ["show", "tick"], ["runs"], ["show", "--run", "abcd"]])
def test_reading_a_missing_file_is_an_error_and_creates_nothing(tmp_path, capsys, argv):
    db = tmp_path / "typo.db"
    code, out, err = cli_run(capsys, *argv, "--db", str(db))
    assert (code, out, err) == (1, "", f"leasecron: error: no such database: {db}\n")
    assert list(tmp_path.iterdir()) == []


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_read_only_commands_work_in_a_read_only_directory_on_a_read_only_file(tmp_path, capsys):
    home = tmp_path / "ro"
    home.mkdir()
    db = home / "jobs.db"
    make_db(db, ("tick", {"interval_seconds": 60}), ("nightly", {"cron": "0 3 * * *"}))
    assert main(["trigger", "tick", "--db", str(db)]) == 0
    capsys.readouterr()
    before = _snapshot(home)
    assert list(before) == ["jobs.db"]  # the last connection closed: no -wal, no -shm
    # chmod alone does not stop root (tests run as root), so the directory and the file are
    # also made immutable: then nothing, not even root, can create the -shm or write the file.
    os.chmod(db, 0o444)
    os.chmod(home, 0o555)
    try:
        with immutable(db, home):
            code, out, err = cli_run(capsys, "list", "--db", str(db))
            assert (code, err) == (0, "")
            assert [line.split()[0] for line in out.splitlines()[2:]] == ["nightly", "tick"]
            code, out, err = cli_run(capsys, "show", "tick", "--db", str(db))
            assert (code, err) == (0, "")
            assert "every 60s" in out and "manual" in out
            code, out, err = cli_run(capsys, "runs", "--db", str(db))
            assert (code, err) == (0, "")
            assert "pending" in out
            # a write is refused with a clear line, not a traceback
            code, out, err = cli_run(capsys, "pause", "tick", "--db", str(db))
            assert code == 1 and out == ""
            assert re.fullmatch(r"leasecron: error: db: .*(readonly|unable to open).*\n", err)
            assert _snapshot(home) == before
    finally:
        os.chmod(home, 0o755)
        os.chmod(db, 0o644)


def test_read_only_commands_write_nothing_even_when_they_could(tmp_path, capsys, monkeypatch):
    """An older file is read as it is (not migrated by a `list`); a file that is not
    leasecron's is refused."""
    import leasecron.kernel.sqlite.store as sqlite_mod

    db = tmp_path / "v1.db"
    with monkeypatch.context() as m:
        m.setattr(sqlite_mod, "MIGRATIONS", sqlite_mod.MIGRATIONS[:1])
        make_db(db, ("tick", {"interval_seconds": 60}))
    code, out, err = cli_run(capsys, "list", "--db", str(db))
    assert (code, err) == (0, "")
    assert "tick" in out
    with sqlite3.connect(db) as conn:
        (version,) = conn.execute("SELECT value FROM agno_leasecron_meta").fetchone()
        assert version == "1"
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE name = 'agno_sessions'").fetchone()
            is None
        )
    conn.close()

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    conn.close()
    code, out, err = cli_run(capsys, "list", "--db", str(other))
    assert code == 1
    assert err == (
        f"leasecron: error: db: store.open failed: {other}: not a leasecron database "
        "(no agno_leasecron_meta table)\n"
    )


def test_db_help_names_files_and_urls(capsys):
    assert main(["list", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "a SQLite file, or a store URL such as postgresql://" in out


# -- errors name the flag, times are ISO 8601 ------------------------------------------------------


def test_a_past_run_at_names_the_flag_and_prints_iso_times(tmp_path, capsys):
    db = str(tmp_path / "x.db")
    code, out, err = cli_run(
        capsys, "add", "once", "--endpoint", "/x", "--run-at", "2020-01-01T00:00:00Z", "--db", db
    )
    assert (code, out) == (2, "")
    assert re.fullmatch(
        r"leasecron: error: --run-at: 2020-01-01T00:00:00Z is in the past \(now " + ISO + r"\)\n",
        err,
    ), err


# -- runs, show --run, --payload @file -------------------------------------------------------------


def test_runs_read_like_a_log_with_the_slot_and_the_whole_error(tmp_path, capsys):
    db = tmp_path / "r.db"
    make_db(db, ("tick", {"interval_seconds": 60}))
    long_error = "HTTP 502 Bad Gateway: " + "upstream said no; " * 20 + "THE END"
    with sqlite3.connect(db) as conn:
        (sid,) = conn.execute("SELECT id FROM agno_schedules").fetchone()
        for i in range(3):
            conn.execute(
                "INSERT INTO agno_schedule_runs (id, schedule_id, attempt, scheduled_for, trigger,"
                " status, idempotency_key, status_code, error, triggered_at, created_at, output)"
                " VALUES (?, ?, 1, ?, 'schedule', ?, ?, ?, ?, ?, ?, ?)",
                (
                    f"run{i}abcdef",
                    sid,
                    T0 + 60 * (i + 1),
                    "failed" if i == 2 else "success",
                    f"k{i}",
                    502 if i == 2 else 200,
                    long_error if i == 2 else None,
                    T0 + 60 * (i + 1) + 0.25,
                    T0 + 60 * (i + 1),
                    '{"content": "line one\\nline two"}' if i == 1 else None,
                ),
            )
    conn.close()
    code, out, err = cli_run(capsys, "runs", "--limit", "2", "--db", str(db))
    assert (code, err) == (0, "")
    header, _, *lines = out.splitlines()
    assert header.split()[:3] == ["TIME", "SCHEDULE", "SLOT"]
    # the newest two, oldest first
    assert [line.split()[2] for line in lines] == [
        "2026-05-28T20:28:40.000Z",
        "2026-05-28T20:29:40.000Z",
    ]
    assert [line.split()[0] for line in lines] == [
        "2026-05-28T20:28:40.250Z",
        "2026-05-28T20:29:40.250Z",
    ]
    assert lines[1].endswith(long_error.rstrip())  # whole, the last column
    assert "run2abc" in lines[1]

    code, out, err = cli_run(capsys, "show", "--run", "run2abc", "--db", str(db))
    assert (code, err) == (0, "")
    shown = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())
    assert shown["schedule"] == "tick"
    assert shown["id"] == "run2abcdef"
    assert shown["error"] == long_error
    assert shown["scheduled_for"] == f"2026-05-28T20:29:40.000Z  [{T0 + 180:.3f}]"
    assert shown["status_code"] == "502"
    assert set(shown) >= {"attempt", "trigger", "status", "idempotency_key", "output", "replica"}
    code, out, _ = cli_run(capsys, "show", "--run", "run1abcdef", "--db", str(db))
    assert '"content": "line one\\nline two"' in out  # the output in full
    code, out, err = cli_run(capsys, "show", "--run", "nope", "--db", str(db))
    assert (code, err) == (2, "leasecron: error: --run: no run with id 'nope'\n")


def test_payload_from_a_file(tmp_path, capsys):
    db = str(tmp_path / "p.db")
    good = tmp_path / "payload.json"
    good.write_text('{"message": "from a file"}')
    assert (
        cli_run(capsys, "add", "a", "--endpoint", "/x", "--payload", f"@{good}", "--db", db)[0] == 0
    )
    code, out, _ = cli_run(capsys, "show", "a", "--db", db)
    assert '{"message": "from a file"}' in out
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    for arg, message in (
        (f"@{bad}", f"--payload: {bad}: not valid JSON: "),
        (f"@{tmp_path}/missing.json", f"--payload: cannot read {tmp_path}/missing.json: No such"),
    ):
        code, out, err = cli_run(
            capsys, "add", "b", "--endpoint", "/x", "--payload", arg, "--db", db
        )
        assert (code, out) == (2, "")
        assert err.startswith(f"leasecron: error: {message}"), err


# -- a closed pipe, Ctrl-C -------------------------------------------------------------------------


def test_a_closed_pipe_ends_quietly(tmp_path):
    db = tmp_path / "pipe.db"
    make_db(db, *[(f"s{i:03d}", {"interval_seconds": 60}) for i in range(300)])
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "list", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # like `| head` that has read all it wanted
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=20) == 128 + signal.SIGPIPE
    assert err == ""


def test_ctrl_c_stops_run_and_exits_130_without_a_traceback(tmp_path):
    db = tmp_path / "c.db"
    make_db(db, ("tick", {"interval_seconds": 0.5}))
    target = AuthRecorder()
    try:
        proc, out, err = start_run(db, target.url)
        assert out.wait_for("running on"), err.lines
        assert stop_run(proc, signal.SIGINT) == 130
    finally:
        target.close()
    assert out.join()[-1].startswith("stopped; ")
    assert not any("Traceback" in line for line in err.join())


def test_ctrl_c_stops_the_demo_and_exits_130(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "demo", "--seconds", "60", "--db", str(tmp_path / "d.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    assert out.wait_for(r"^\d\d:\d\d:\d\d\.\d{3}  r\d"), err.lines  # a replica's attempt ended
    assert stop_run(proc, signal.SIGINT) == 130
    assert not any("Traceback" in line for line in err.join())
    assert any("every slot fired exactly once" in line for line in out.join())


# -- the demo's closing table --------------------------------------------------------------------


def test_demo_table_says_how_each_slot_ended_and_leaves_no_temp_files(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the demo makes its file
    code = main(["demo", "--seconds", "1.5", "--seed", "3"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert list(tmp_path.iterdir()) == []  # the temporary database and its directory are gone
    assert re.search(r"db: \S+/leasecron-demo-\w+/demo\.db \(temporary\)", out)
    report = out[out.index("SCHEDULE     SLOTS") :]
    header = report.splitlines()[0].split()
    assert header[:7] == [
        "SCHEDULE",
        "SLOTS",
        "SUCCEEDED",
        "FAILED",
        "PENDING",
        "SKIPPED",
        "ATTEMPTS",
    ]
    assert "FAILED     slots that failed after all their attempts (no retry left)" in report
    assert "PENDING    slots still in flight or waiting for a retry when the demo ended" in report
    table = {line.split()[0]: line.split() for line in report.splitlines()[2:7]}
    for name, row in table.items():
        slots, succeeded, failed, pending = map(int, row[1:5])
        assert succeeded + failed + pending == slots, (name, row)  # every slot is accounted for
    cron = table["cron-minute"]
    if cron[1] == "0":  # 1.5 s rarely crosses a minute: the table says why nothing came due
        assert re.search(
            r"cron-minute: no slot came due in the window: its first slot, "
            + ISO
            + r", came after the demo ended at "
            + ISO,
            report,
        ), report


# -- tables another program made under our prefix -------------------------------------------------

AGNO_SESSIONS = """CREATE TABLE agno_sessions (
    session_id VARCHAR PRIMARY KEY, session_type VARCHAR NOT NULL, agent_id VARCHAR,
    team_id VARCHAR, workflow_id VARCHAR, user_id VARCHAR, session_data JSON, agent_data JSON,
    team_data JSON, workflow_data JSON, metadata JSON, runs JSON, summary JSON,
    created_at BIGINT NOT NULL, updated_at BIGINT)"""
FOREIGN_SCHEDULES = "CREATE TABLE agno_schedules (id TEXT PRIMARY KEY, spec JSON, owner TEXT)"


@pytest.mark.parametrize(
    ("ddl", "tables"),
    [([AGNO_SESSIONS], "agno_sessions"), ([FOREIGN_SCHEDULES, AGNO_SESSIONS], "agno_schedules")],
)
def test_an_agentos_database_is_refused_naming_prefix(tmp_path, capsys, ddl, tables):
    db = tmp_path / "agentos.db"
    with sqlite3.connect(db) as conn:
        for statement in ddl:
            conn.execute(statement)
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StoreError) as caught:
        SqliteStore(str(db), inline=True)
    message = str(caught.value)
    assert caught.value.operation == "open"
    assert f"{db}: table(s) {tables}" in message
    assert "not made by leasecron (no agno_leasecron_meta records them" in message
    assert 'choose another prefix= (e.g. prefix="leasecron_")' in message
    assert db.read_bytes() == before  # refused in the migration's transaction: nothing written
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert "agno_leasecron_meta" not in names

    for argv in (["add", "x", "--endpoint", "/x"], ["list"]):
        code, out, err = cli_run(capsys, *argv, "--db", str(db))
        assert (code, out) == (1, "")
        assert err.startswith(f"leasecron: error: db: store.open failed: {db}: table(s) {tables}")
        assert "choose another prefix=" in err

    async def beside_it():
        store = SqliteStore(str(db), inline=True, prefix="leasecron_")  # our own tables, beside
        await ScheduleManager(store).create("tick", endpoint="/t", interval_seconds=60)
        names = [s.name for s in await store.list_schedules()]
        await store.close()
        return names

    assert asyncio.run(beside_it()) == ["tick"]


def test_a_table_of_a_later_version_made_by_someone_else_is_refused_too(tmp_path):
    """leasecron tables of version 1 (no sessions table yet) beside an AgentOS's agno_sessions:
    the upgrade must not adopt theirs."""
    import leasecron.kernel.sqlite.store as sqlite_mod

    db = tmp_path / "shared.db"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sqlite_mod, "MIGRATIONS", sqlite_mod.MIGRATIONS[:1])
        make_db(db, ("tick", {"interval_seconds": 60}))
    with sqlite3.connect(db) as conn:
        conn.execute(AGNO_SESSIONS)
    conn.close()
    with pytest.raises(StoreError, match=r"table\(s\) agno_sessions exist but were not made"):
        SqliteStore(str(db), inline=True)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM agno_leasecron_meta").fetchone() == ("1",)
    conn.close()


def test_run_log_format_json_writes_one_object_per_line(tmp_path):
    db = tmp_path / "json.db"
    make_db(db, ("tick", {"interval_seconds": 0.5}))
    base_url = f"http://127.0.0.1:{_dead_port()}"
    proc, out, err = start_run(db, base_url, "--log-fires", "--log-format", "json")
    try:
        assert out.wait_for('"event": "finish"'), out.lines
        assert err.wait_for('"level": "WARNING"'), err.lines
    finally:
        assert stop_run(proc) == 0
    outs = [json.loads(line) for line in out.join()]  # every line is one JSON object
    errs = [json.loads(line) for line in err.join()]
    assert outs[0]["event"] == "started" and outs[0]["db"] == str(db)
    assert outs[-1]["event"] == "stopped" and outs[-1]["attempts_sent"] >= 1
    fire = next(o for o in outs if o["event"] == "fire")
    finish = next(o for o in outs if o["event"] == "finish" and o["run"] == fire["run"])
    assert fire["schedule"] == "tick" and fire["attempt"] == 1 and fire["replica"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fire["slot"])
    assert (finish["status"], finish["status_code"], finish["slot"]) == (
        "failed",
        None,
        fire["slot"],
    )
    assert "ConnectError" in finish["error"] and finish["duration_ms"] >= 0
    assert errs[0]["level"] == "WARNING" and "tick: attempt 1 failed" in errs[0]["message"]
