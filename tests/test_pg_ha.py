"""High availability on PostgreSQL, for real: four `leasecron run` processes on one database fire
10,000 one-off schedules into a recording HTTP server on a loopback socket. One replica is killed
-9 while it has requests in flight, then started again. Every slot must end with exactly one
success row and must have reached the target; the only slots the target may see twice are the
killed replica's attempts in flight, re-delivered by another replica once their lease ran out."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
from pgserver import fresh_database, require_server

require_server()

import psycopg  # noqa: E402

from leasecron.adapters.postgres import PostgresStore  # noqa: E402
from leasecron.kernel import ScheduleManager  # noqa: E402

pytestmark = pytest.mark.postgres

SLOTS = 10_000  # one-off schedules: one slot each
REPLICAS = 4
LEASE = 3.0
SPREAD = 5.0  # the slots come due evenly over this many seconds...
LEAD = 1.0  # ...but never sooner than this after their schedule was created
SLOW_EVERY = 100  # one slot in SLOW_EVERY calls an endpoint that answers late, so that
SLOW_SECONDS = 1.0  # a replica always has requests in flight when it is killed
# Replicas may keep their clocks to the database server's, which they estimate within half a
# round trip: comparing their times with the target's own clock allows this much.
CLOCK_SLACK = 0.1
RUNS = '"public"."agno_schedule_runs"'
SCHEDULES = '"public"."agno_schedules"'


class Target(BaseHTTPRequestHandler):
    """Records every request (sender, schedule, key, attempt, arrival) and answers 200, after
    SLOW_SECONDS on /slow/ paths."""

    protocol_version = "HTTP/1.1"
    log: list[dict]
    open_slow: Counter  # sender -> slow requests received and not answered yet
    lock: threading.Lock

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        entry = {
            "schedule": self.headers.get("X-Schedule-Id"),
            "key": self.headers.get("Idempotency-Key"),
            "attempt": self.headers.get("X-Schedule-Attempt"),
            # every replica runs with its name as its bearer token, so the sender is known
            "sender": (self.headers.get("Authorization") or "").removeprefix("Bearer "),
            "path": self.path,
            "at": time.time(),
        }
        slow = self.path.startswith("/slow/")
        with self.lock:
            self.log.append(entry)
            if slow:
                self.open_slow[entry["sender"]] += 1
        if slow:
            try:
                time.sleep(SLOW_SECONDS)
            finally:
                with self.lock:
                    self.open_slow[entry["sender"]] -= 1
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TargetServer(ThreadingHTTPServer):
    request_queue_size = 128  # every replica opens its connections at once
    errors: list[str]

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        # The killed replica's connections break under its requests: expected. Anything else is
        # a fault of the target and fails the test.
        if not isinstance(exc, ConnectionError):
            self.errors.append(repr(exc))


@pytest.fixture
def target():
    handler = type(
        "Handler", (Target,), {"log": [], "open_slow": Counter(), "lock": threading.Lock()}
    )
    httpd = TargetServer(("127.0.0.1", 0), handler)
    httpd.errors = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, handler
    httpd.shutdown()
    httpd.server_close()


def _replica(db_url: str, base: str, name: str, tmp_path) -> subprocess.Popen:
    # The replica's name as application_name tells its server sessions apart.
    assert db_url.startswith("postgresql://"), db_url
    tagged = f"{db_url}{'&' if '?' in db_url else '?'}application_name={quote(name)}"
    with open(tmp_path / f"{name}.err", "wb") as err:  # a file: a full pipe would block it
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "leasecron.kernel.cli",
                "run",
                "--db",
                tagged,
                "--base-url",
                base,
                "--token",
                name,
                "--replica-id",
                name,
                "--lease-seconds",
                str(LEASE),
                "--poll-interval",
                "0.2",
                "--max-concurrent",
                "50",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def _create_slots(db_url: str, first_due: float) -> dict[str, str]:
    """Create the one-offs through the manager, in due order; returns schedule id -> endpoint."""
    store = PostgresStore(db_url, max_size=8)
    manager = ScheduleManager(store)
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> tuple[str, str]:
        endpoint = f"/slow/{i}" if i % SLOW_EVERY == SLOW_EVERY // 2 else f"/hooks/{i}"
        async with gate:
            run_at = max(first_due + i * SPREAD / SLOTS, time.time() + LEAD)
            schedule = await manager.create(f"slot{i:05d}", run_at=run_at, endpoint=endpoint)
        return schedule.id, endpoint

    try:
        return dict(await asyncio.gather(*(one(i) for i in range(SLOTS))))
    finally:
        await store.close()


async def _poll(check, *, stall: float, limit: float = 180.0, interval: float = 0.02):
    """Call `check` (async, returns (done, state)) until done, until its state has not changed
    for `stall` seconds (stuck: a slow machine is waited for, a stuck run is not), or `limit`
    seconds in all. Returns the last (done, state)."""
    start = changed = time.monotonic()
    last = None
    while True:
        done, state = await check()
        now = time.monotonic()
        if state != last:
            last, changed = state, now
        if done or now - changed > stall or now - start > limit:
            return done, state
        await asyncio.sleep(interval)


async def _rows(conn: psycopg.AsyncConnection, sql: str, *args) -> list[tuple]:
    cur = await conn.execute(sql, args)
    return await cur.fetchall()


@pytest.mark.slow
async def test_replica_killed_mid_run_loses_and_duplicates_nothing(target, tmp_path):
    httpd, handler = target
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    names = [f"r{i}" for i in range(1, REPLICAS + 1)]
    victim, restarted = names[1], f"{names[1]}-restarted"
    t0 = time.time()
    with fresh_database("leasecron_ha") as db_url:
        procs: dict[str, subprocess.Popen] = {}
        conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
        try:
            # Every schedule exists before the replicas start (running replicas would be woken
            # by each insert). Slots come due from 2 s after the start over SPREAD seconds, or
            # LEAD after their creation if that is later: on a slow machine, a backlog.
            expected = await _create_slots(db_url, t0 + 2.0)
            created_at = time.time()
            for name in names:
                procs[name] = _replica(db_url, base, name, tmp_path)

            # Kill once a quarter of the slots have landed and the victim has slow requests
            # waiting for their answers at the target: they are in flight when it dies.
            async def victim_busy():
                with handler.lock:
                    received, waiting = len(handler.log), handler.open_slow[victim]
                state = {"requests received": received, "victim's slow requests open": waiting}
                return received >= SLOTS // 4 and waiting > 0, state

            busy, state = await _poll(victim_busy, stall=20)
            assert busy, f"the victim never had requests in flight: {state}"
            procs[victim].send_signal(signal.SIGKILL)
            killed_at = time.time()
            procs[victim].wait(10)

            # Its server sessions end when its sockets close; from then on the database holds
            # exactly what it committed before it died: its attempts in flight are the run rows
            # it left running, each under its schedule's lease, whose expiry bounds re-delivery.
            async def victim_sessions_gone():
                sessions = await _rows(
                    conn, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", victim
                )
                return not sessions, sessions

            gone, sessions = await _poll(victim_sessions_gone, stall=10, limit=10)
            assert gone, f"the killed replica's sessions are still open: {sessions}"
            snapshot = await _rows(
                conn,
                f"SELECT r.schedule_id, s.lease_expires_at, s.locked_by FROM {RUNS} r"
                f" LEFT JOIN {SCHEDULES} s ON s.id = r.schedule_id"
                " WHERE r.replica = %s AND r.status = 'running'",
                victim,
            )
            snapshot_at = time.time()
            procs[restarted] = _replica(db_url, base, restarted, tmp_path)

            async def runs_final():
                [(success, unfinished)] = await _rows(
                    conn,
                    f"SELECT count(*) FILTER (WHERE status = 'success'),"
                    f" count(*) FILTER (WHERE status IN ('pending', 'running')) FROM {RUNS}",
                )
                state = {
                    "success rows": success,
                    "pending or running rows": unfinished,
                    "requests received": len(handler.log),
                }
                return success >= SLOTS and unfinished == 0, state

            async def schedules_idle():
                [(busy,)] = await _rows(
                    conn,
                    f"SELECT count(*) FROM {SCHEDULES} WHERE enabled OR locked_by IS NOT NULL",
                )
                return busy == 0, {"schedules still enabled or leased": busy}

            done, state = await _poll(runs_final, stall=20, interval=0.2)
            assert done, f"slots left unfinished: {state}"
            # A one-off is disabled and released by the transaction that records its success;
            # asserted below, after the checks that say more about what went wrong.
            idle, idle_state = await _poll(schedules_idle, stall=5, limit=5, interval=0.2)
            done_at = time.time()
            for name, proc in procs.items():
                if name != victim:
                    proc.send_signal(signal.SIGTERM)
            codes = {name: proc.wait(30) for name, proc in procs.items()}
            rows = await _rows(
                conn,
                f"SELECT schedule_id, idempotency_key, status, replica, reclaim, created_at"
                f" FROM {RUNS}",
            )
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            await conn.close()
    errors = {name: (tmp_path / f"{name}.err").read_text() for name in procs}
    assert codes == {**dict.fromkeys(procs, 0), victim: -signal.SIGKILL}, errors
    assert not httpd.errors
    log = list(handler.log)
    assert len(expected) == SLOTS

    # What the killed replica had in flight, each still under its own lease, none expired when
    # read: nothing of it could have been taken over yet, so the list is complete.
    assert snapshot, "the killed replica had no attempt in flight"
    assert {locked_by for _, _, locked_by in snapshot} == {victim}, snapshot
    expiry = {schedule: expires for schedule, expires, _ in snapshot}
    assert min(expiry.values()) > snapshot_at + CLOCK_SLACK, (min(expiry.values()), snapshot_at)
    # A lease is renewed every lease/4, so each had at least 3/4 of its length left at the kill
    # (half a second allowed for renewal lag on a busy machine).
    lease_left = min(expiry.values()) - killed_at
    assert lease_left >= LEASE * 3 / 4 - 0.5, lease_left

    # The runs table: exactly one success per slot; besides, only the killed replica's attempts
    # in flight, ended lease_lost.
    success = Counter(schedule for schedule, _, status, *_ in rows if status == "success")
    missing = set(expected) - set(success)
    assert not missing, f"{len(missing)} slots have no success row, e.g. {sorted(missing)[:5]}"
    doubled = {schedule: n for schedule, n in success.items() if n > 1}
    assert not doubled, f"{len(doubled)} slots have several success rows: {doubled}"
    assert set(success) == set(expected)
    statuses = Counter(status for _, _, status, *_ in rows)
    assert set(statuses) <= {"success", "lease_lost"}, statuses
    lost = {
        schedule: replica for schedule, _, status, replica, *_ in rows if status == "lease_lost"
    }
    assert set(lost.values()) <= {victim}, f"a live replica lost a lease: {Counter(lost.values())}"
    assert set(lost) == set(expiry), "lease_lost rows are not the killed replica's attempts"
    key_of = {}
    for schedule, key, *_ in rows:
        assert key.startswith(f"{schedule}@") and key_of.setdefault(schedule, key) == key
    winner = {
        schedule: (replica, reclaim, at)
        for schedule, _, status, replica, reclaim, at in rows
        if status == "success"
    }
    # Each was taken over by another replica once its lease had expired, and re-delivered.
    for schedule in lost:
        replica, reclaim, claimed_at = winner[schedule]
        assert replica != victim and reclaim == 1, (schedule, winner[schedule])
        assert claimed_at >= expiry[schedule], (schedule, claimed_at, expiry[schedule])

    # The target: every slot received, last from the replica that recorded its success, under
    # the slot's key; a slot received twice was sent by the killed replica before it died, then
    # re-delivered after its lease expired.
    assert {e["attempt"] for e in log} == {"1"}
    received = defaultdict(list)
    for e in log:
        received[e["schedule"]].append(e)
    unseen = set(expected) - set(received)
    assert not unseen, f"the target never got {len(unseen)} slots, e.g. {sorted(unseen)[:5]}"
    assert set(received) == set(expected), set(received) - set(expected)
    twice = {schedule: got for schedule, got in received.items() if len(got) > 1}
    assert set(twice) <= set(lost), {s: got for s, got in twice.items() if s not in lost}
    for schedule, got in received.items():
        got.sort(key=lambda e: e["at"])
        assert got[-1]["sender"] == winner[schedule][0], (got, winner[schedule])
        assert {(e["key"], e["path"]) for e in got} == {(key_of[schedule], expected[schedule])}
        if schedule in twice:
            assert len(got) == 2, got
            first, again = got
            assert first["sender"] == victim and again["sender"] != victim, got
            assert again["at"] >= expiry[schedule] - CLOCK_SLACK, (again, expiry[schedule])
    assert twice, "no request was in flight at the target when the replica was killed"
    # Nothing came from the killed replica after its death (beyond what was on its way).
    assert max(e["at"] for e in log if e["sender"] == victim) <= killed_at + 1.0
    # No re-delivery came sooner than the leases allow (see lease_left above).
    redelivered = min(received[schedule][-1]["at"] for schedule in lost)
    assert redelivered >= killed_at + LEASE * 3 / 4 - 0.5, redelivered - killed_at
    assert any(e["sender"] == restarted for e in log), "the restarted replica fired nothing"
    assert idle, idle_state
    print(
        f"created {created_at - t0:.1f}s, killed {killed_at - t0:.1f}s with {len(lost)} in"
        f" flight ({len(twice)} sent), lease left {lease_left:.2f}s,"
        f" first re-delivery +{redelivered - killed_at:.2f}s, done {done_at - t0:.1f}s, by"
        f" sender {dict(sorted(Counter(e['sender'] for e in log).items()))}"
    )
