"""The SQL of the Postgres store's lease algorithm, in one place: every statement with the race it
closes, in the order of kernel/sqlite/sql.py so the two read side by side. `store.py` only runs
these statements. {S} is the schema-qualified schedules table, {R} the runs table; parameters are
psycopg's %(name)s.

Every transaction, its statements in order (the flows are in kernel/writes.py; "per row" steps
of a batch run side by side, one row's steps always in this order). A batch's rows move in
lockstep rounds, and each round sends the steps of one kind as ONE set-based statement of
ROUND_SQL (arrays, one element per row, fenced per row) where two or more rows take that step;
so a batch of plain fires, however many rows, is these statements (one round trip per round):
    claim          claim; claim_runs
    start          lock_schedules; start_fence; insert_run
    heartbeat      heartbeat (locks its rows in id order itself); schedule_exists (if any lost)
    finish         lock_schedules; finish_run; finish_schedule; release; notify
Row by row, the steps are:

  one fire, claim to release:
    idle poll      next_due (next_due_and_now: with the database's clock)
    claim          claim; claim_runs (per undecodable row: quarantine, cancel_pending, insert_run)
    start          lock_schedules; per plan: start_fence (fenced out: release);
                   per orphan: lose_orphan, insert_run; insert_run (new rows); start_pending;
                   disable_one_off (a spent one-off); release (nothing started)
    (the HTTP call; a run endpoint's answer: set_run_ids)
    heartbeat      per lease: heartbeat (not renewed: schedule_exists)
    finish         lock_schedules; per outcome: finish_run; finish_schedule (lease gone, a retry:
                   schedule_enabled); insert_run (the retry); refresh_due (lease gone) or
                   finish_advance, insert_run (overlap rows); disable_one_off; release
  a holder keeping its row (overlap=allow): held_row per lease; claim_runs
  a replica stopping: expire_lease per lease; after a lost claim reply: leases_of, expire_lease
  the manager:
    create         insert_schedule
    update         lock_schedules; schedule_state; update_fields; cancel_pending (a disable);
                   refresh_due; get_schedule
    enable         lock_schedules; schedule_state; enable_schedule; refresh_due; get_schedule
    disable        lock_schedules; schedule_state; disable_schedule; cancel_pending;
                   refresh_due; get_schedule
    delete         lock_schedules; cancel_pending; lose_unheld; delete_schedule
    trigger        lock_schedules; schedule_state; insert_run; refresh_due
  retention: prune_runs, in batches
Every write that can make work due sooner for another replica also queues notify (sent at commit).

Time: every statement judges due-ness and lease expiry by the caller's `now` (%(now)s), exactly as
the SQLite store does. By default that `now` is the database's clock: the store keeps each
replica's clock aligned to {clock} (an `AlignedClock`, read with every idle poll), so planning in
Python and judging in SQL use one time, and app hosts whose clocks disagree neither fire early nor
steal a live lease. With time_authority="local" the caller's clock is used as is (a SimClock).
"""

from __future__ import annotations

from leasecron.kernel.tables import render

# ---------------------------------------------------------------------------------------------
# Transactions and locks.
# Postgres runs READ COMMITTED: each statement sees what was committed when *it* started, and an
# UPDATE that waits for a row lock re-checks its WHERE on the new row version but evaluates its
# subqueries on the old snapshot. Hence one rule, applied by kernel/writes.py and store.py: a
# transaction that writes a schedule's runs or recomputes its due_at holds that schedule row's lock
# from an *earlier* statement (`lock_schedules`, the first statement of start, finish and every
# manager write; the heartbeat's UPDATE locks only its own row). Every later statement
# then takes a fresh snapshot that includes whatever the previous lock holder committed, so DUE_EXPR
# never misses a trigger or retry committed meanwhile. Locks are always taken schedule row first,
# run rows second, and a batch locks its schedule rows in id order: no two store transactions can
# deadlock.
#
# The race each statement closes is said once, on the SQLite statement of the same name
# (kernel/sqlite/sql.py, whose head also states the timing fence): the fences are the same. A
# comment here says only what Postgres does differently; a statement without one is SQLite's.
# ---------------------------------------------------------------------------------------------

# When a free row next needs attention: its earliest pending run or its slot cursor, whichever
# is sooner. LEAST ignores NULLs (unlike SQLite's scalar MIN), so no "far future" sentinel is
# needed; both NULL gives NULL (never due). The subquery reads the pending-runs partial index only.
DUE_EXPR = """LEAST(next_run_at,
    (SELECT MIN(r.due_at) FROM {R} r WHERE r.schedule_id = {S}.id AND r.status = 'pending'))"""

LEASE_SQL = {
    # Serialise the manager's and the holders' writes on the rows they touch, before any read that
    # decides: see "Transactions and locks" above. Byte order (COLLATE "C"), as Python sorts the
    # ids of the row-at-a-time writes: one lock order everywhere, whatever the database's collation.
    "lock_schedules": """
        SELECT id, enabled FROM {S} WHERE id = ANY(%(ids)s) ORDER BY id COLLATE "C" FOR UPDATE""",
    "next_due": """
        SELECT MIN(due_at) AS due FROM {S} WHERE enabled AND due_at IS NOT NULL""",
    # The same poll, also reading the time authority's clock: the round trip we pay anyway keeps
    # every replica's clock aligned to the database's (a stepped app clock is corrected here).
    "next_due_and_now": """
        SELECT MIN(due_at) AS due, {clock} AS now FROM {S} WHERE enabled AND due_at IS NOT NULL""",
    "server_time": """
        SELECT {clock} AS now""",
    # SQLite's claim (the lease, the orphans' places, the fencing token), with FOR UPDATE SKIP
    # LOCKED: concurrent claimers never wait on each other and never take the same row (a row
    # another transaction is claiming, starting or finishing is skipped, not queued behind). The
    # outer WHERE's re-check is needed here: the candidate lists were read from the statement's
    # snapshot, and a row released-and-reclaimed by a commit in between must not be claimed twice.
    # (Each candidate subquery carries LIMIT and FOR UPDATE, which the planner keeps as one
    # evaluated subplan; it is never re-run per outer row. Candidates beyond the final LIMIT stay
    # locked only until this short transaction ends.)
    "claim": """
        UPDATE {S} SET locked_by = %(replica)s, locked_at = %(now)s,
               lease_expires_at = %(lease_until)s, due_at = %(lease_until)s,
               lease_version = lease_version + 1
         WHERE id IN (SELECT id FROM (
                   SELECT id, 0 AS lane, due_at FROM (
                       SELECT id, due_at FROM {S} WHERE enabled AND locked_by IS NOT NULL
                          AND due_at <= %(now)s ORDER BY due_at LIMIT %(orphans)s
                          FOR UPDATE SKIP LOCKED) orphaned
                   UNION ALL
                   SELECT id, 1 AS lane, due_at FROM (
                       SELECT id, due_at FROM {S} WHERE enabled AND due_at IS NOT NULL
                          AND due_at <= %(now)s ORDER BY due_at LIMIT %(limit)s
                          FOR UPDATE SKIP LOCKED) due) candidates
                GROUP BY id ORDER BY MIN(lane), MIN(due_at) LIMIT %(limit)s)
           AND enabled AND due_at <= %(now)s
           AND (locked_by IS NULL OR lease_expires_at <= %(now)s)
        RETURNING *""",
    # SQLite's claim_runs, from a fresh snapshot taken after the claim locked the rows: a trigger
    # committed before is seen; one committing after waits for our lock (add_pending_run locks the
    # row first) and is seen by the next claim.
    "claim_runs": """
        SELECT * FROM {R} WHERE schedule_id = ANY(%(ids)s) AND status IN ('pending', 'running')
         ORDER BY due_at, created_at, seq""",
    "quarantine": """
        UPDATE {S} SET enabled = FALSE, disabled_reason = %(reason)s, next_run_at = NULL,
               due_at = NULL, locked_by = NULL, locked_at = NULL, lease_expires_at = NULL,
               timing_version = timing_version + 1
         WHERE id = %(id)s AND locked_by = %(replica)s AND lease_version = %(version)s
           AND timing_version = %(timing)s""",
    "held_row": """
        SELECT * FROM {S} WHERE id = %(id)s AND locked_by = %(replica)s
           AND lease_version = %(version)s AND enabled""",
    # SQLite's start_fence; this UPDATE is also the schedule row's lock for the rest of the start
    # transaction.
    "start_fence": """
        UPDATE {S} SET next_run_at = %(next_run_at)s,
               last_run_at = COALESCE(%(last_run_at)s, last_run_at)
         WHERE id = %(id)s AND locked_by = %(replica)s AND lease_version = %(version)s
           AND timing_version = %(timing)s""",
    "lose_orphan": """
        UPDATE {R} SET status = 'lease_lost', completed_at = %(now)s, error = %(error)s
         WHERE id = %(id)s AND status = 'running'""",
    "start_pending": """
        UPDATE {R} SET status = 'running', replica = %(replica)s, lease_version = %(version)s,
               triggered_at = %(now)s
         WHERE id = %(id)s AND status = 'pending'""",
    "insert_run": """
        INSERT INTO {R} (id, schedule_id, attempt, scheduled_for, trigger, status,
               idempotency_key, due_at, run_id, session_id, error, replica, lease_version,
               reclaim, triggered_at, completed_at, input, created_at)
        VALUES (%(id)s, %(schedule_id)s, %(attempt)s, %(scheduled_for)s, %(trigger)s, %(status)s,
               %(idempotency_key)s, %(due_at)s, %(run_id)s, %(session_id)s, %(error)s,
               %(replica)s, %(lease_version)s, %(reclaim)s, %(triggered_at)s, %(completed_at)s,
               %(input)s, %(created_at)s)""",
    "heartbeat": """
        UPDATE {S} SET lease_expires_at = %(lease_until)s, due_at = %(lease_until)s
         WHERE id = %(id)s AND locked_by = %(replica)s AND lease_version = %(version)s""",
    "schedule_exists": """
        SELECT 1 FROM {S} WHERE id = %(id)s""",
    "finish_run": """
        UPDATE {R} SET status = %(status)s, status_code = %(status_code)s,
               run_id = COALESCE(%(run_id)s, run_id),
               session_id = COALESCE(%(session_id)s, session_id),
               error = %(error)s, completed_at = %(completed_at)s, duration_ms = %(duration_ms)s,
               output = %(output)s
         WHERE id = %(id)s AND status = 'running' AND replica = %(replica)s
           AND lease_version = %(version)s""",
    "finish_schedule": """
        UPDATE {S} SET last_status = %(status)s,
               consecutive_failures = CASE WHEN %(success)s THEN 0
                                           ELSE consecutive_failures + 1 END
         WHERE id = %(id)s AND locked_by = %(replica)s AND lease_version = %(version)s
        RETURNING timing_version, enabled""",
    "finish_advance": """
        UPDATE {S} SET next_run_at = %(next_run_at)s
         WHERE id = %(id)s AND locked_by = %(replica)s AND lease_version = %(version)s
           AND timing_version = %(timing)s""",
    "schedule_enabled": """
        SELECT timing_version FROM {S} WHERE id = %(id)s AND enabled""",
    "disable_one_off": """
        UPDATE {S} SET enabled = FALSE, next_run_at = NULL, due_at = NULL
         WHERE id = %(id)s AND locked_by = %(replica)s AND lease_version = %(version)s
           AND timing_version = %(timing)s
           AND NOT EXISTS (SELECT 1 FROM {R} r WHERE r.schedule_id = %(id)s
                            AND r.status = 'pending')""",
    # SQLite's release, run only while the row lock is held from an earlier statement (a fresh
    # snapshot: "Transactions and locks" above).
    "release": """
        UPDATE {S} SET locked_by = NULL, locked_at = NULL, lease_expires_at = NULL,
               due_at = CASE WHEN enabled THEN """
    + DUE_EXPR
    + """ END
         WHERE id = %(id)s AND locked_by = %(replica)s AND lease_version = %(version)s""",
    "refresh_due": """
        UPDATE {S} SET due_at = CASE
               WHEN NOT enabled THEN NULL
               WHEN locked_by IS NOT NULL THEN lease_expires_at
               ELSE """
    + DUE_EXPR
    + """ END
         WHERE id = %(id)s""",
    # -- the manager's writes (kernel/writes.py: create_schedule, update_schedule,
    # enable_schedule, disable_schedule, delete_schedule, add_pending_run); each runs under the
    # row's lock (lock_schedules), taken first, where SQLite's run under BEGIN IMMEDIATE.
    "schedule_state": """
        SELECT enabled FROM {S} WHERE id = %(id)s""",
    # SQLite's insert_schedule; the name's UNIQUE constraint is {prefix}schedules_name_key.
    "insert_schedule": """
        INSERT INTO {S} ({{columns}}) VALUES ({{values}})""",
    "get_schedule": """
        SELECT * FROM {S} WHERE id = %(id)s""",
    "update_fields": """
        UPDATE {S} SET {{sets}}, timing_version = timing_version + %(bump)s, updated_at = %(now)s
         WHERE id = %(id)s""",
    "enable_schedule": """
        UPDATE {S} SET enabled = TRUE, disabled_reason = NULL, next_run_at = %(next_run_at)s,
               timing_version = timing_version + 1, updated_at = %(now)s
         WHERE id = %(id)s""",
    "disable_schedule": """
        UPDATE {S} SET enabled = FALSE, timing_version = timing_version + 1, updated_at = %(now)s
         WHERE id = %(id)s""",
    "delete_schedule": """
        DELETE FROM {S} WHERE id = %(id)s""",
    "cancel_pending": """
        UPDATE {R} SET status = 'cancelled', completed_at = %(now)s, error = %(reason)s
         WHERE schedule_id = %(id)s AND status = 'pending'""",
    "lose_unheld": """
        UPDATE {R} SET status = 'lease_lost', completed_at = %(now)s,
               error = 'schedule deleted after its holder''s lease ran out'
         WHERE schedule_id = %(id)s AND status = 'running'
           AND EXISTS (SELECT 1 FROM {S} s WHERE s.id = %(id)s
                        AND (s.locked_by IS NULL OR s.lease_expires_at <= %(now)s))""",
    "set_run_ids": """
        UPDATE {R} SET run_id = %(run_id)s, session_id = %(session_id)s
         WHERE id = %(id)s AND status = 'running' AND replica = %(replica)s""",
    "leases_of": """
        SELECT id, lease_version FROM {S}
         WHERE locked_by = %(replica)s AND lease_expires_at > %(now)s""",
    "expire_lease": """
        UPDATE {S} SET lease_expires_at = %(now)s, due_at = %(now)s
         WHERE id = %(id)s AND locked_by = %(replica)s AND lease_version = %(version)s""",
    # Cross-host wake-up: queued inside the writing transaction, so Postgres delivers it to every
    # LISTENing replica only if the change commits (a rollback drops it), and after the commit is
    # visible (a woken claimer sees the row). Identical notifications of one transaction collapse
    # into one, so a batch may send it per row.
    "notify": """
        SELECT pg_notify(%(channel)s, '')""",
    # SQLite's prune_runs, oldest first (the created_at index), %(limit)s NULL for all; one batch
    # holds few row locks for a short time. SKIP LOCKED: two replicas pruning at once take disjoint
    # rows instead of queueing on each other's. A plain DELETE: autovacuum reclaims the space.
    "prune_runs": """
        DELETE FROM {R} WHERE id IN (
            SELECT id FROM {R} WHERE status NOT IN ('pending', 'running')
               AND created_at < %(before)s
             ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)""",
}

# ---------------------------------------------------------------------------------------------
# Set-based rounds. The flows of kernel/writes.py move a batch's rows in lockstep, one round at a
# time, every row of a round at the same kind of step. The store sends each round's steps of one
# kind as ONE statement over arrays (one element per row; `unnest … WITH ORDINALITY` numbers the
# rows, and RETURNING v.i says which rows the statement matched), instead of one statement per
# row. Each is the per-row statement of the same name above, fenced per row exactly as it is: a
# row whose fence fails is simply not matched, returns nothing, and the flow reads it as the
# per-row statement's "0 rows" or "no row" (a lost lease stays lost, and is reported so). Rows of
# a round are distinct schedules (the flows' rule), so no statement here meets one row twice; a
# round that would (or a round of one row) runs the per-row statements.
# The statement's snapshot is taken after the transaction's earlier statements, the batch's
# `lock_schedules` among them, so the rule of "Transactions and locks" holds row by row. The one
# round not preceded by that lock (heartbeat) takes its rows' locks itself, in id order.
# Each entry: the per-row parameters, as `name type`, in the order of the arrays; the statement.
# ---------------------------------------------------------------------------------------------

ROUND_SQL: dict[str, tuple[str, str]] = {
    # start: advance each slot cursor under its row's (holder, version, timing) fence.
    "start_fence": (
        "id text, replica text, version bigint, timing bigint, next_run_at float8,"
        " last_run_at float8",
        """
        UPDATE {S} s SET next_run_at = v.next_run_at,
               last_run_at = COALESCE(v.last_run_at, s.last_run_at)
          FROM unnest(%(id)s::text[], %(replica)s::text[], %(version)s::bigint[],
                      %(timing)s::bigint[], %(next_run_at)s::float8[], %(last_run_at)s::float8[])
               WITH ORDINALITY AS v(id, replica, version, timing, next_run_at, last_run_at, i)
         WHERE s.id = v.id AND s.locked_by = v.replica AND s.lease_version = v.version
           AND s.timing_version = v.timing
        RETURNING v.i""",
    ),
    # start (and finish's retries and overlap rows): every new run row of the round, one INSERT.
    "insert_run": (
        "id text, schedule_id text, attempt int, scheduled_for float8, trigger text, status text,"
        " idempotency_key text, due_at float8, run_id text, session_id text, error text,"
        " replica text, lease_version bigint, reclaim int, triggered_at float8,"
        " completed_at float8, input text, created_at float8",
        """
        INSERT INTO {R} (id, schedule_id, attempt, scheduled_for, trigger, status,
               idempotency_key, due_at, run_id, session_id, error, replica, lease_version,
               reclaim, triggered_at, completed_at, input, created_at)
        SELECT id, schedule_id, attempt, scheduled_for, trigger, status, idempotency_key, due_at,
               run_id, session_id, error, replica, lease_version, reclaim, triggered_at,
               completed_at, input, created_at
          FROM unnest(%(id)s::text[], %(schedule_id)s::text[], %(attempt)s::int[],
                      %(scheduled_for)s::float8[], %(trigger)s::text[], %(status)s::text[],
                      %(idempotency_key)s::text[], %(due_at)s::float8[], %(run_id)s::text[],
                      %(session_id)s::text[], %(error)s::text[], %(replica)s::text[],
                      %(lease_version)s::bigint[], %(reclaim)s::int[],
                      %(triggered_at)s::float8[], %(completed_at)s::float8[], %(input)s::text[],
                      %(created_at)s::float8[])
               AS v(id, schedule_id, attempt, scheduled_for, trigger, status, idempotency_key,
                    due_at, run_id, session_id, error, replica, lease_version, reclaim,
                    triggered_at, completed_at, input, created_at)""",
    ),
    # start: pending -> running, each only if still pending (a cancelled trigger must not fire).
    "start_pending": (
        "id text, replica text, version bigint, now float8",
        """
        UPDATE {R} r SET status = 'running', replica = v.replica, lease_version = v.version,
               triggered_at = v.now
          FROM unnest(%(id)s::text[], %(replica)s::text[], %(version)s::bigint[],
                      %(now)s::float8[]) WITH ORDINALITY AS v(id, replica, version, now, i)
         WHERE r.id = v.id AND r.status = 'pending'
        RETURNING v.i""",
    ),
    # heartbeat: extend each lease only for the (holder, version) that owns it. The rows are
    # locked first, in id order (the lock order of every write), as the per-row statements sent
    # in id order would: an UPDATE over a join locks in whatever order its plan visits rows.
    "heartbeat": (
        "id text, replica text, version bigint, lease_until float8",
        """
        WITH v AS (SELECT * FROM unnest(%(id)s::text[], %(replica)s::text[],
                                        %(version)s::bigint[], %(lease_until)s::float8[])
                        WITH ORDINALITY AS v(id, replica, version, lease_until, i)),
             locked AS (SELECT id FROM {S} WHERE id IN (SELECT id FROM v)
                         ORDER BY id COLLATE "C" FOR UPDATE)
        UPDATE {S} s SET lease_expires_at = v.lease_until, due_at = v.lease_until
          FROM v JOIN locked ON locked.id = v.id
         WHERE s.id = v.id AND s.locked_by = v.replica AND s.lease_version = v.version
        RETURNING v.i""",
    ),
    # heartbeat: which of the leases not renewed still have a row (a deleted row is not lost).
    "schedule_exists": (
        "id text",
        """
        SELECT v.i FROM unnest(%(id)s::text[]) WITH ORDINALITY AS v(id, i)
          JOIN {S} s ON s.id = v.id""",
    ),
    # finish: record each outcome only while this holder still owns the attempt.
    "finish_run": (
        "id text, replica text, version bigint, status text, status_code int, run_id text,"
        " session_id text, error text, completed_at float8, duration_ms float8, output text",
        """
        UPDATE {R} r SET status = v.status, status_code = v.status_code,
               run_id = COALESCE(v.run_id, r.run_id),
               session_id = COALESCE(v.session_id, r.session_id),
               error = v.error, completed_at = v.completed_at, duration_ms = v.duration_ms,
               output = v.output
          FROM unnest(%(id)s::text[], %(replica)s::text[], %(version)s::bigint[],
                      %(status)s::text[], %(status_code)s::int[], %(run_id)s::text[],
                      %(session_id)s::text[], %(error)s::text[], %(completed_at)s::float8[],
                      %(duration_ms)s::float8[], %(output)s::text[])
               WITH ORDINALITY AS v(id, replica, version, status, status_code, run_id,
                                    session_id, error, completed_at, duration_ms, output, i)
         WHERE r.id = v.id AND r.status = 'running' AND r.replica = v.replica
           AND r.lease_version = v.version
        RETURNING v.i""",
    ),
    # finish: the holder's bookkeeping on each schedule row, fenced on its lease; a row matched
    # answers the timing and enabled state, a row not matched is no longer ours.
    "finish_schedule": (
        "id text, replica text, version bigint, status text, success bool",
        """
        UPDATE {S} s SET last_status = v.status,
               consecutive_failures = CASE WHEN v.success THEN 0
                                           ELSE s.consecutive_failures + 1 END
          FROM unnest(%(id)s::text[], %(replica)s::text[], %(version)s::bigint[],
                      %(status)s::text[], %(success)s::bool[])
               WITH ORDINALITY AS v(id, replica, version, status, success, i)
         WHERE s.id = v.id AND s.locked_by = v.replica AND s.lease_version = v.version
        RETURNING v.i, s.timing_version, s.enabled""",
    ),
    # finish: overlap moves each cursor past slots that came due, only if the timing is unchanged.
    "finish_advance": (
        "id text, replica text, version bigint, timing bigint, next_run_at float8",
        """
        UPDATE {S} s SET next_run_at = v.next_run_at
          FROM unnest(%(id)s::text[], %(replica)s::text[], %(version)s::bigint[],
                      %(timing)s::bigint[], %(next_run_at)s::float8[])
               WITH ORDINALITY AS v(id, replica, version, timing, next_run_at, i)
         WHERE s.id = v.id AND s.locked_by = v.replica AND s.lease_version = v.version
           AND s.timing_version = v.timing
        RETURNING v.i""",
    ),
    # finish: a retry is queued only for a schedule that still exists and is enabled.
    "schedule_enabled": (
        "id text",
        """
        SELECT v.i, s.timing_version FROM unnest(%(id)s::text[]) WITH ORDINALITY AS v(id, i)
          JOIN {S} s ON s.id = v.id AND s.enabled""",
    ),
    # start and finish: drop each lease and recompute due_at from the cursor and the pending runs
    # in the same statement (a trigger or update committed during the run is honoured). The
    # round's snapshot follows the batch's lock_schedules, so each row's subquery sees what the
    # last lock holder committed, as the per-row statement does.
    "release": (
        "id text, replica text, version bigint",
        """
        UPDATE {S} s SET locked_by = NULL, locked_at = NULL, lease_expires_at = NULL,
               due_at = CASE WHEN s.enabled THEN LEAST(s.next_run_at,
                   (SELECT MIN(r.due_at) FROM {R} r
                     WHERE r.schedule_id = s.id AND r.status = 'pending')) END
          FROM unnest(%(id)s::text[], %(replica)s::text[], %(version)s::bigint[])
               WITH ORDINALITY AS v(id, replica, version, i)
         WHERE s.id = v.id AND s.locked_by = v.replica AND s.lease_version = v.version
        RETURNING v.i""",
    ),
    # finish, a lease lost meanwhile: refresh each due_at unless somebody holds the row (then it
    # stays the lease expiry), as the manager's per-row refresh does.
    "refresh_due": (
        "id text",
        """
        UPDATE {S} s SET due_at = CASE
               WHEN NOT s.enabled THEN NULL
               WHEN s.locked_by IS NOT NULL THEN s.lease_expires_at
               ELSE LEAST(s.next_run_at,
                   (SELECT MIN(r.due_at) FROM {R} r
                     WHERE r.schedule_id = s.id AND r.status = 'pending')) END
          FROM unnest(%(id)s::text[]) WITH ORDINALITY AS v(id, i)
         WHERE s.id = v.id
        RETURNING v.i""",
    ),
}

# The wake-up channel, on the store's one dedicated listening connection (not a pooled one: a
# pooled connection would be handed to other work and its LISTEN lost). Quoted, so the name keeps
# its case and matches pg_notify's string exactly; {channel} is made of validated names only.
LISTEN_SQL = 'LISTEN "{channel}"'
# An idle LISTEN connection reads nothing, so a silently dead peer (no FIN, no RST) would never be
# noticed; the listener probes between notifications.
PROBE_SQL = "SELECT 1"

# ---------------------------------------------------------------------------------------------
# Tables and migrations. Applied in order inside one transaction under an advisory lock (two
# replicas starting at once do not race their CREATEs), recorded in a meta table; a migration may
# add tables, columns and indexes, never drop or rewrite data. The tables are the SQLite store's
# (kernel/tables.py), in Postgres's spelling.
# ---------------------------------------------------------------------------------------------

# How Postgres spells the markers of the shared table definitions (kernel/tables.py).
SPELLING = {
    "REAL": "DOUBLE PRECISION",
    "BIGINT": "BIGINT",
    "BOOL": "BOOLEAN",
    "TRUE": "TRUE",
    "JSON": "JSONB",
    "ENABLED": "enabled",
    "Q": '"',
    "NAME_UNIQUE": "",
    # named, so a taken name is told from any other unique violation (schedules.py)
    "NAME_KEY": ',\n    CONSTRAINT "{prefix}schedules_name_key" UNIQUE (name)',
    "SEQ": "\n    seq BIGINT GENERATED ALWAYS AS IDENTITY,",
    # retention deletes the oldest rows first, a batch at a time (prune_runs)
    "RUNS_CREATED": ';\nCREATE INDEX IF NOT EXISTS "{prefix}schedule_runs_created" ON {R} '
    "(created_at, seq)",
    "SESSION_ORDER": "started_at NULLS FIRST, seq",
    "WITHOUT_ROWID": "",
    "IF_NEW": "IF NOT EXISTS ",
    "BYTE_ORDER": ' COLLATE "C"',
}

MIGRATIONS: list[str] = render(SPELLING)
SCHEMA_VERSION = len(MIGRATIONS)

META_SQL = {
    "create_schema": "CREATE SCHEMA IF NOT EXISTS {schema}",
    "create_meta": "CREATE TABLE IF NOT EXISTS {M} (key TEXT PRIMARY KEY, value TEXT)",
    # One migrator at a time per (schema, prefix); the lock ends with the transaction.
    "advisory_lock": "SELECT pg_advisory_xact_lock(hashtext(%(key)s))",
    "meta_exists": "SELECT to_regclass(%(name)s) IS NOT NULL AS present",
    "get_version": "SELECT value FROM {M} WHERE key = 'schema_version'",
    "set_version": """
        INSERT INTO {M} (key, value) VALUES ('schema_version', %(version)s)
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""",
}
