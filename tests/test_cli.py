"""The `leasecron` command line, in-process through `main([...])` against a real SQLite file:
the schedule commands round trip, every error path exits 2 naming the field, `--if-exists`,
the demo's exactly-once report (its checker on made-up evidence, then the real thing end to end),
and `run` as a real process stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leasecron.kernel.cli import main
from leasecron.kernel.cli.demo import Delivery, DemoTarget, demo_report
from leasecron.kernel.manager import ScheduleManager
from leasecron.kernel.model import Schedule, ScheduleRun
from leasecron.kernel.sqlite import SqliteStore


def rows(out: str) -> list[list[str]]:
    """The cells of a printed table (columns are separated by two or more spaces)."""
    lines = out.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.replace(" ", "")) == {"-"})
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start + 1 :]]


def by_name(out: str) -> dict[str, list[str]]:
    return {r[0]: r for r in rows(out)}


def db_state(db: Path, what):
    """Run `what(store)` on a fresh store of `db` and return its result."""

    async def go():
        store = SqliteStore(str(db), inline=True)
        try:
            return await what(store)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture
def cli(tmp_path, capsys):
    db = tmp_path / "cli.db"

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([argv[0], "--db", str(db), *argv[1:]])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run.db = db
    return run


# -- the schedule commands ---------------------------------------------------------------------


def test_add_list_show_round_trip(cli):
    code, out, err = cli(
        "add",
        "nightly",
        "--endpoint",
        "/agents/reporter/runs",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Europe/Paris",
        "--payload",
        '{"message": "summarise"}',
        "--max-retries",
        "2",
        "--retry-delay",
        "5",
        "--overlap",
        "buffer_one",
        "--description",
        "the nightly report",
    )
    assert (code, err) == (0, "")
    assert out.startswith("created: nightly (id ")
    assert "cron 0 3 * * *  ->  POST /agents/reporter/runs" in out
    code, out, err = cli("add", "tick", "--endpoint", "/hooks/tick", "--interval", "90")
    assert (code, err) == (0, "")
    code, out, err = cli("add", "adhoc", "--endpoint", "/hooks/adhoc", "--method", "put")
    assert (code, err) == (0, "")
    assert "on demand  ->  PUT /hooks/adhoc" in out
    code, out, err = cli(
        "add", "once", "--endpoint", "/hooks/once", "--run-at", "2040-01-02T03:04:05Z"
    )
    assert (code, err) == (0, "")

    schedules = {s.name: s for s in db_state(cli.db, lambda st: st.list_schedules())}
    assert sorted(schedules) == ["adhoc", "nightly", "once", "tick"]
    nightly = schedules["nightly"]
    assert (nightly.cron_expr, nightly.timezone, nightly.payload) == (
        "0 3 * * *",
        "Europe/Paris",
        {"message": "summarise"},
    )
    assert (nightly.max_retries, nightly.retry_delay_seconds, nightly.overlap) == (
        2,
        5.0,
        "buffer_one",
    )
    assert nightly.description == "the nightly report"
    assert schedules["tick"].interval_seconds == 90.0
    assert schedules["adhoc"].method == "PUT"
    assert schedules["adhoc"].next_run_at is None
    assert schedules["once"].run_at == 2209086245.0  # 2040-01-02T03:04:05Z

    code, out, err = cli("list")
    assert (code, err) == (0, "")
    table = by_name(out)
    assert list(table) == ["adhoc", "nightly", "once", "tick"]  # ordered by name
    row = table["nightly"]
    assert row[1] == nightly.id[:8]
    assert row[2:5] == ["cron 0 3 * * *", "Europe/Paris", "yes"]
    # The next 03:00 in Paris, shown in UTC and in the zone (+01:00 or +02:00 with DST).
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT0[12]:00:00Z", row[5])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT03:00:00\+0[12]:00", row[6])
    assert row[7:] == ["-", "0"]
    assert table["adhoc"][2:] == ["on demand", "UTC", "yes", "-", "-", "-", "0"]
    assert table["once"][2] == "once at 2040-01-02T03:04:05Z"
    assert table["once"][5:7] == ["2040-01-02T03:04:05Z", "2040-01-02T03:04:05+00:00"]
    assert table["tick"][2] == "every 90s"

    code, out, err = cli("show", "nightly")
    assert (code, err) == (0, "")
    fields = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()[:40] if line}
    assert fields["id"] == nightly.id
    assert fields["payload"] == '{"message": "summarise"}'
    assert fields["timezone"] == "Europe/Paris"
    assert fields["max_retries"] == "2"
    assert fields["overlap"] == "buffer_one"
    assert fields["enabled"] == "True"
    assert "no runs yet" in out
    # By id and by the short id of `list` too.
    assert cli("show", nightly.id)[1] == out
    assert cli("show", nightly.id[:8])[1] == out


def test_pause_resume_trigger_runs_rm(cli):
    assert cli("add", "adhoc", "--endpoint", "/hooks/adhoc")[0] == 0
    assert cli("add", "tick", "--endpoint", "/hooks/tick", "--interval", "60")[0] == 0
    adhoc = db_state(cli.db, lambda st: st.get_schedule_by_name("adhoc"))

    code, out, err = cli("trigger", "adhoc")
    assert (code, err) == (0, "")
    run_id = out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", run_id)
    run = db_state(cli.db, lambda st: st.get_run(run_id))
    assert (run.schedule_id, run.status, run.trigger, run.attempt) == (
        adhoc.id,
        "pending",
        "manual",
        1,
    )

    code, out, err = cli("runs", "adhoc")
    assert (code, err) == (0, "")
    (row,) = rows(out)
    assert row[1:6] == ["adhoc", "-", "1", "manual", "pending"]  # a manual run serves no slot
    code, out, _ = cli("runs")
    assert [r[1] for r in rows(out)] == ["adhoc"]
    code, out, _ = cli("runs", "tick")
    assert (code, out) == (0, "no runs\n")

    code, out, err = cli("pause", "adhoc")
    assert (code, out, err) == (0, f"paused: adhoc (id {adhoc.id})\n", "")
    # Pausing cancels the pending trigger, in the same transaction.
    assert db_state(cli.db, lambda st: st.get_run(run_id)).status == "cancelled"
    assert cli("pause", "adhoc")[1] == f"already paused: adhoc (id {adhoc.id})\n"
    code, out, _ = cli("list", "--disabled")
    assert list(by_name(out)) == ["adhoc"]
    assert by_name(out)["adhoc"][4:7] == ["no", "(disabled)", "(disabled)"]
    code, out, _ = cli("list", "--enabled")
    assert list(by_name(out)) == ["tick"]

    code, out, err = cli("resume", adhoc.id)
    assert (code, err) == (0, "")
    assert out.startswith(f"resumed: adhoc (id {adhoc.id})")
    assert db_state(cli.db, lambda st: st.get_schedule(adhoc.id)).enabled is True

    code, out, _ = cli("show", "adhoc")
    assert "last 5 runs (oldest first):" in out
    assert "cancelled" in out

    code, out, err = cli("rm", "adhoc")
    assert (code, out, err) == (0, f"deleted: adhoc (id {adhoc.id})\n", "")
    assert db_state(cli.db, lambda st: st.get_schedule(adhoc.id)) is None
    code, out, _ = cli("list")
    assert list(by_name(out)) == ["tick"]
    # Run history outlives the schedule: reachable by the old full id.
    code, out, _ = cli("runs", adhoc.id)
    assert code == 0
    assert [r[5] for r in rows(out)] == ["cancelled"]
    assert cli("list", "--disabled")[1] == "no schedules\n"


def test_if_exists_skip_is_idempotent_and_update_applies(cli):
    argv = ("add", "tick", "--endpoint", "/hooks/tick", "--interval", "30")
    code, out, _ = cli(*argv)
    assert code == 0
    first = db_state(cli.db, lambda st: st.get_schedule_by_name("tick"))
    for _ in range(2):
        code, out, err = cli(*argv, "--if-exists", "skip")
        assert (code, err) == (0, "")
        assert out.startswith(f"exists, skipped: tick (id {first.id})")
    # skip leaves even a different spec alone
    code, out, _ = cli("add", "tick", "--endpoint", "/hooks/other", "--if-exists", "skip")
    assert code == 0
    (again,) = db_state(cli.db, lambda st: st.list_schedules())
    assert (again.id, again.endpoint, again.interval_seconds) == (first.id, "/hooks/tick", 30.0)
    assert again.updated_at == first.updated_at

    code, out, err = cli(
        "add", "tick", "--endpoint", "/hooks/tick", "--interval", "45", "--if-exists", "update"
    )
    assert (code, err) == (0, "")
    assert out.startswith(f"updated: tick (id {first.id})")
    (updated,) = db_state(cli.db, lambda st: st.list_schedules())
    assert (updated.id, updated.interval_seconds) == (first.id, 45.0)


# -- error paths: exit 2, the field named on stderr ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (("add", "x", "--endpoint", "/hooks/x", "--cron", "61 * * * *"), "--cron"),
        (("add", "x", "--endpoint", "/hooks/x", "--cron", "* * *"), "--cron"),
        (
            ("add", "x", "--endpoint", "/hooks/x", "--cron", "0 3 * * *", "--timezone", "Mars/X"),
            "--timezone",
        ),
        (("add", "x", "--endpoint", "/hooks/x", "--payload", "{not json"), "--payload"),
        (("add", "x", "--endpoint", "/hooks/x", "--payload", "[1, 2]"), "--payload"),
        (("add", "x", "--endpoint", "/hooks/x", "--run-at", "next tuesday"), "--run-at"),
        (("add", "x", "--endpoint", "/hooks/x", "--run-at", "1000"), "--run-at"),
        (("add", "x", "--endpoint", "/hooks/x", "--interval", "-1"), "--interval"),
        (("add", "x", "--endpoint", "/hooks/x", "--interval", "0"), "--interval"),
        (("add", "x", "--endpoint", "/hooks/x", "--max-retries", "-1"), "--max-retries"),
        (("add", "x", "--endpoint", "/hooks/x", "--retry-delay", "-1"), "--retry-delay"),
        (("add", "x", "--endpoint", "/hooks/x", "--timeout", "0"), "--timeout"),
        (("add", "x", "--endpoint", "/hooks/x", "--jitter", "-1"), "--jitter"),
        (("add", "x", "--endpoint", "/hooks/x", "--method", "FETCH"), "--method"),
        (("add", "x", "--endpoint", "hooks x"), "--endpoint"),
        (("add", "bad name!", "--endpoint", "/hooks/x"), "name"),
        (("runs", "--limit", "0"), "--limit"),
    ],
)
def test_validation_errors_exit_2_naming_the_field(cli, argv, field):
    db_state(cli.db, lambda st: st.list_schedules())  # the file exists: `runs` reads it
    code, out, err = cli(*argv)
    assert code == 2
    assert out == ""
    assert err.startswith(f"leasecron: error: {field}: ")
    assert db_state(cli.db, lambda st: st.list_schedules()) == []


def test_duplicate_name_exits_2(cli):
    assert cli("add", "tick", "--endpoint", "/hooks/tick", "--interval", "5")[0] == 0
    code, out, err = cli("add", "tick", "--endpoint", "/hooks/tick", "--interval", "5")
    assert (code, out) == (2, "")
    assert err == (
        "leasecron: error: name: a schedule named 'tick' already exists "
        "(use --if-exists update or skip)\n"
    )
    assert len(db_state(cli.db, lambda st: st.list_schedules())) == 1


@pytest.mark.parametrize("command", ["show", "pause", "resume", "trigger", "rm", "runs"])
def test_unknown_schedule_exits_2(cli, command):
    assert cli("add", "tick", "--endpoint", "/hooks/tick")[0] == 0
    code, out, err = cli(command, "nope")
    assert (code, out) == (2, "")
    assert err == "leasecron: error: schedule: no schedule with id or name 'nope'\n"


def test_trigger_disabled_schedule_exits_2(cli):
    assert cli("add", "tick", "--endpoint", "/hooks/tick")[0] == 0
    assert cli("pause", "tick")[0] == 0
    code, out, err = cli("trigger", "tick")
    assert (code, out) == (2, "")
    assert err.startswith("leasecron: error: enabled: schedule ")


def test_usage_errors_exit_2(cli, capsys):
    assert main(["add", "x", "--endpoint", "/x", "--cron", "* * * * *", "--interval", "5"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main([]) == 2


# -- the demo ----------------------------------------------------------------------------------


def _schedule(sid: str, name: str, **kw) -> Schedule:
    return Schedule(id=sid, name=name, endpoint=f"/hooks/{name}", created_at=1000.0, **kw)


def _run(sid: str, slot: float, attempt: int = 1, status: str = "success", **kw) -> ScheduleRun:
    return ScheduleRun(
        id=f"{sid}-{slot}-{attempt}-{status}",
        schedule_id=sid,
        attempt=attempt,
        scheduled_for=slot,
        trigger="schedule" if attempt == 1 else "retry",
        status=status,
        idempotency_key=f"{sid}@{slot:.3f}",
        triggered_at=None if status in ("skipped", "pending") else slot,
        **kw,
    )


def _got(sid: str, slot: float, attempt: int = 1, code: int = 200) -> Delivery:
    return Delivery(slot, "/hooks/x", sid, f"{sid}@{slot:.3f}", attempt, code)


def test_demo_report_counts_and_catches_violations():
    s = _schedule("s1", "every-2s", interval_seconds=2.0)  # slots 1002, 1004, 1006, ...
    runs = [
        _run("s1", 1002.0),
        _run("s1", 1004.0, status="failed"),
        _run("s1", 1004.0, attempt=2),
        _run("s1", 1006.0, status="skipped"),
        _run("s1", 1008.0, status="running"),  # cut at stop
    ]
    got = [
        _got("s1", 1002.0),
        _got("s1", 1004.0, code=500),
        _got("s1", 1004.0, 2),
        _got("s1", 1008.0),
    ]
    (rep,), problems = demo_report([s], {"s1": runs}, got)
    assert problems == []
    assert (rep.slots, rep.attempts_target, rep.attempts_db) == (3, 4, 4)
    assert (rep.success, rep.failed, rep.retries, rep.skipped, rep.cut) == (2, 1, 1, 1, 1)
    assert (rep.dup_target, rep.dup_db) == (0, 0)

    # The same evidence with a delivery the target saw twice, a missed slot, a phantom request,
    # a row the target never saw, and an outcome the runs table got wrong.
    bad_runs = [r for r in runs if r.scheduled_for != 1006.0] + [_run("s1", 1012.0)]
    bad_runs[0] = _run("s1", 1002.0, status="failed")
    bad_got = [*got, _got("s1", 1004.0, 2), _got("s1", 1010.0)]
    (rep,), problems = demo_report([s], {"s1": bad_runs}, bad_got)
    assert rep.dup_target == 1
    assert problems == [
        "s1@1004.000 attempt 2: target received it 2 times",
        "s1@1010.000 attempt 1: target received it, no run row says so",
        "s1@1012.000 attempt 1: run row success, but the target never received it",
        "s1@1002.000 attempt 1: target answered 200, run row says failed",
        "every-2s slot 1970-01-01T00:16:46.000Z: neither fired nor skipped",
        "every-2s slot 1970-01-01T00:16:50.000Z: neither fired nor skipped",
    ]


def test_demo_end_to_end_exactly_once(tmp_path, capsys):
    started = time.monotonic()
    code = main(["demo", "--seconds", "3", "--replicas", "2", "--db", str(tmp_path / "demo.db")])
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert err == ""
    assert out.rstrip().splitlines()[-1] == "every slot fired exactly once: YES"
    assert code == 0
    assert elapsed <= 4.0
    report = out[out.index("SCHEDULE     SLOTS") :]
    table = by_name(report.split("\n\n")[0])
    assert list(table) == ["every-2s", "every-3s", "flaky", "slow-agent", "cron-minute"]
    # The 2 s schedules' first slot falls inside 3 s and fired exactly once (the 3 s one's lands
    # right at the end: it may or may not make it).
    for name in ("every-2s", "flaky", "slow-agent"):
        assert table[name][1] == "1", table[name]
        assert table[name][-1] == "0/0"
    assert table["every-2s"][6] == "1/1"
    assert table["every-2s"][2:5] == ["1", "0", "0"]  # one slot, succeeded
    # The firing lines name the schedules that fired.
    fired = {
        line.split()[2] for line in out.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d{3}  r", line)
    }
    assert {"every-2s", "flaky"} <= fired
    assert table["every-3s"][-1] == "0/0"


# -- run: a real replica process, stopped by SIGTERM ---------------------------------------------


def test_run_fires_until_sigterm(tmp_path, capsys):
    db = tmp_path / "run.db"
    target = DemoTarget()
    base_url = target.start()
    try:
        assert (
            main(["add", "tick", "--db", str(db), "--endpoint", "/hooks/tick", "--interval", "0.5"])
            == 0
        )
        capsys.readouterr()
        code = "import sys; from leasecron.kernel.cli import main; sys.exit(main(sys.argv[1:]))"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "run",
                "--db",
                str(db),
                "--base-url",
                base_url,
                "--replica-id",
                "replica-under-test",
                "--poll-interval",
                "0.2",
                "--log-fires",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 10
        while len(target.deliveries) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        target.close()
    assert proc.returncode == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith(
        f"leasecron replica replica-under-test running on {db} -> {base_url}"
    )
    assert lines[-1].startswith("stopped; ")
    fires = [line for line in lines if "  fire    tick  " in line]
    finishes = [line for line in lines if "  finish  tick  status=success" in line]
    assert len(fires) >= 3
    assert len(finishes) == len(fires)
    assert all("replica=replica-under-test" in line for line in fires)
    runs = db_state(db, lambda st: st.list_runs(None, 100))
    done = [r for r in runs if r.status == "success"]
    assert len(done) == len(fires)
    assert all(r.replica == "replica-under-test" and r.status_code == 200 for r in done)
    assert sorted(d.key for d in target.deliveries) == sorted(r.idempotency_key for r in done)
    assert [d.attempt for d in target.deliveries] == [1] * len(done)


def test_prune_deletes_only_old_finished_runs(tmp_path, capsys):
    import sqlite3 as _sqlite3

    db = str(tmp_path / "prune.db")
    assert main(["add", "p", "--endpoint", "/hooks/p", "--db", db]) == 0
    assert main(["trigger", "p", "--db", db]) == 0  # a pending row: never pruned
    conn = _sqlite3.connect(db)
    sid = conn.execute("SELECT id FROM agno_schedules").fetchone()[0]
    for i, (status, age_days) in enumerate([("success", 40), ("failed", 31), ("success", 1)]):
        conn.execute(
            "INSERT INTO agno_schedule_runs (id, schedule_id, attempt, trigger, status, "
            "idempotency_key, created_at) VALUES (?, ?, 1, 'schedule', ?, 'k', ?)",
            (f"old{i}", sid, status, time.time() - age_days * 86_400),
        )
    conn.commit()
    capsys.readouterr()
    assert main(["prune", "--older-than-days", "30", "--db", db]) == 0
    assert "deleted 2 finished run(s)" in capsys.readouterr().out
    left = sorted(r[0] for r in conn.execute("SELECT status FROM agno_schedule_runs"))
    assert left == ["pending", "success"]
    assert main(["prune", "--older-than-days", "-1", "--db", db]) == 2
    assert capsys.readouterr().err == ("leasecron: error: --older-than-days: -1.0 must be >= 0\n")


def test_list_shows_owners_once_any_schedule_has_one(cli):
    assert cli("add", "shared", "--endpoint", "/hooks/shared", "--interval", "60")[0] == 0
    code, out, _ = cli("list")
    assert "OWNER" not in out  # a single-user file: no owner column

    async def own(store):
        await ScheduleManager(store).create("mine", endpoint="/hooks/mine", user_id="ann")

    db_state(cli.db, own)
    code, out, err = cli("list")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split()[-1] == "OWNER"
    table = by_name(out)
    assert (table["mine"][-1], table["shared"][-1]) == ("ann", "-")
    code, out, _ = cli("show", "mine")
    assert re.search(r"^user_id\s+ann$", out, re.M)


def test_list_and_show_survive_rows_other_tools_wrote_and_say_why_one_is_disabled(cli):
    """An interval of 1e12 s (first slot in the year 33715) made `leasecron list` crash for the
    whole file; a payload that is not JSON made every read fail. Both are listed now, and a
    quarantined row says why it is disabled."""
    import sqlite3

    assert cli("add", "far", "--endpoint", "/hooks/far", "--interval", "60")[0] == 0
    assert cli("add", "bad", "--endpoint", "/hooks/bad", "--interval", "60")[0] == 0
    assert cli("add", "fine", "--endpoint", "/hooks/fine", "--interval", "60")[0] == 0
    conn = sqlite3.connect(cli.db)
    conn.execute("UPDATE agno_schedules SET next_run_at = 1e12, due_at = 1e12 WHERE name='far'")
    conn.execute(
        "UPDATE agno_schedules SET enabled = 0, payload = '{oops', disabled_reason = "
        "'schedule disabled: cannot decode it: payload is not valid JSON' WHERE name = 'bad'"
    )
    conn.commit()
    conn.close()
    code, out, err = cli("list")
    assert code == 0, err
    listed = by_name(out.split("\n\n")[0] if "\n\n" in out else out)
    assert "out of range" in listed["far"][5]
    assert listed["bad"][4] == "no (quarantined)"
    assert listed["fine"][4] == "yes"
    assert "bad: disabled by leasecron: schedule disabled: cannot decode it" in out
    code, out, err = cli("show", "bad")
    assert code == 0, err
    assert re.search(r"^disabled_reason\s+schedule disabled: cannot decode it", out, re.M)
    assert cli("show", "far")[0] == 0


def test_add_takes_absolute_urls_only_for_allowed_hosts(cli):
    code, _, err = cli("add", "ext", "--endpoint", "https://agents.example/agents/a/runs")
    assert code == 2 and "--endpoint" in err and "not an allowed host" in err
    code, out, err = cli(
        "add",
        "ext",
        "--endpoint",
        "https://agents.example/agents/a/runs",
        "--allow-host",
        "agents.example",
    )
    assert code == 0 and out.startswith("created: ext"), err
    code, _, err = cli("add", "up", "--endpoint", "/api/../admin")
    assert code == 2 and "dot segments" in err


def test_progress_goes_to_stderr_at_most_once_per_period(capsys):
    from leasecron.kernel.cli.progress import Progress

    every_call = Progress(every=0)
    every_call("1 of 3")
    every_call("2 of 3")
    rarely = Progress(every=3600)
    rarely("never shown: the work ended before the first period")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["... 1 of 3", "... 2 of 3"]
