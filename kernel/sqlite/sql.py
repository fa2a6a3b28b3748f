"""The SQL of the SQLite store's lease algorithm, in one place: every statement with the race it
closes. Read it top to bottom to learn the algorithm; `store.py` only runs these statements and
`schema.py` holds the tables. {S} is the schedules table, {R} the runs table.

Every transaction, its statements in order (the flows are in kernel/writes.py; "per row" steps
of a batch run side by side, one row's steps always in this order). A batch's rows move in
lockstep rounds, and each round runs the steps of one kind as ONE set-based statement of
ROUND_SQL (a VALUES list, one row per row of the batch, fenced per row) where two or more rows
take that step; so a batch of plain fires, however many rows, is these statements:
    claim          claim; claim_runs
    start          start_fence; insert_run
    heartbeat      heartbeat; schedule_exists (if any lost)
    finish         finish_run; finish_schedule; release
Row by row, the steps are:

  one fire, claim to release:
    idle poll      next_due
    claim          claim; per undecodable row: quarantine, cancel_pending, insert_run;
                   claim_runs
    start          per plan: start_fence (fenced out: release);
                   per orphan: lose_orphan, insert_run; insert_run (new rows); start_pending;
                   disable_one_off (a spent one-off); release (nothing started)
    (the HTTP call; a run endpoint's answer: set_run_ids)
    heartbeat      per lease: heartbeat (not renewed: schedule_exists)
    finish         per outcome: finish_run; finish_schedule (lease gone, a retry:
                   schedule_enabled); insert_run (the retry); refresh_due (lease gone) or
                   finish_advance, insert_run (overlap rows); disable_one_off; release
  a holder keeping its row (overlap=allow): held_row per lease; claim_runs
  a replica stopping: expire_lease per lease; after a lost claim reply: leases_of, expire_lease
  the manager:
    create         insert_schedule
    update         schedule_state; update_fields; cancel_pending (a disable); refresh_due;
                   get_schedule
    enable         schedule_state; enable_schedule; refresh_due; get_schedule
    disable        schedule_state; disable_schedule; cancel_pending; refresh_due; get_schedule
    delete         cancel_pending; lose_unheld; delete_schedule
    trigger        schedule_state; insert_run; refresh_due
  retention: prune_runs, in batches
"""

from __future__ import annotations

_FAR = 1e18  # stands for "never" inside MIN(); SQLite's scalar MIN() returns NULL on any NULL

# ---------------------------------------------------------------------------------------------
# The lease algorithm, top to bottom.
# Every transaction is BEGIN IMMEDIATE: it holds the file's write lock from its first read, so
# within it nothing another replica or process commits can interleave. The fences below are what
# make a write by a holder that lost its lease (or planned with a stale schedule) a no-op.
#
# The timing fence, the second fence of every holder write that moves the slot cursor or ends a
# one-off (start_fence, finish_advance, disable_one_off, quarantine). A holder plans from the row
# it claimed: the cursor it writes back is computed from that row's cron, interval, run_at, time
# zone and enabled state. The manager changes these without the lease (the holder keeps it across
# the change): it recomputes next_run_at itself and bumps timing_version (update_fields when a
# timing column changes, enable_schedule, disable_schedule; quarantine bumps it too). The holder
# presents the timing_version it planned with, so its write after such a change is a no-op
# instead of putting the old series' cursor back over the new one. Every other mention of
# timing_version points here.
# ---------------------------------------------------------------------------------------------


# When a free row next needs attention: its earliest pending run or its slot cursor, whichever
# is sooner. Written by every statement that releases a row or changes its work, so the idle
# poll stays one index probe. The subquery reads the pending-runs index only: its cost does not
# grow with the schedule's run history.
def due_of(row: str) -> str:
    """The expression for the schedule row named `row` (its table, or an UPDATE's alias)."""
    return f"""NULLIF(MIN(COALESCE({row}.next_run_at, {{far}}),
    COALESCE((SELECT MIN(r.due_at) FROM {{R}} r WHERE r.schedule_id = {row}.id
              AND r.status = 'pending'), {{far}})), {{far}})"""


DUE_EXPR = due_of("{S}")

LEASE_SQL = {
    # The idle poll: MIN over the partial index on due_at is one index probe, flat in table size.
    "next_due": """
        SELECT MIN(due_at) FROM {S} WHERE enabled = 1 AND due_at IS NOT NULL""",
    # Claim up to :limit due rows under a new lease. A held row's due_at is its lease expiry, so
    # a crashed holder's row comes due here and is reclaimed by the same statement. Orphans (rows
    # still leased, their lease run out) get up to :orphans places first, from their own index:
    # under a backlog live rows with older due times would otherwise always sort first, and a
    # crashed replica's attempts would wait far past their lease. The outer WHERE re-checks
    # due-ness and lease state: under SQLite's write lock the candidates cannot go stale within
    # the statement, but the predicate is the contract (the Postgres store reads candidates from
    # a snapshot) and it guards a row whose due_at and lease disagree. Bumping lease_version
    # issues the fencing token every later write of this holder must present.
    "claim": """
        UPDATE {S} SET locked_by = :replica, locked_at = :now, lease_expires_at = :lease_until,
               due_at = :lease_until, lease_version = lease_version + 1
         WHERE id IN (SELECT id FROM (
                   SELECT id, 0 AS lane, due_at FROM (
                       SELECT id, due_at FROM {S} WHERE enabled = 1 AND locked_by IS NOT NULL
                          AND due_at <= :now ORDER BY due_at LIMIT :orphans)
                   UNION ALL
                   SELECT id, 1 AS lane, due_at FROM (
                       SELECT id, due_at FROM {S} WHERE enabled = 1 AND due_at IS NOT NULL
                          AND due_at <= :now ORDER BY due_at LIMIT :limit))
                GROUP BY id ORDER BY MIN(lane), MIN(due_at) LIMIT :limit)
           AND enabled = 1 AND due_at <= :now
           AND (locked_by IS NULL OR lease_expires_at <= :now)
        RETURNING *""",
    # The claimed row's waiting work and its running attempts (orphans of an expired holder, or
    # this holder's own when it re-reads a row it keeps), read inside the claim's transaction: a
    # trigger committed after it is seen by the next claim and never half-seen by this one.
    # One query for the whole claimed batch: :ids is a JSON array of the claimed ids.
    "claim_runs": """
        SELECT * FROM {R} WHERE schedule_id IN (SELECT value FROM json_each(:ids))
           AND status IN ('pending', 'running')
         ORDER BY due_at, created_at""",
    # A claimed row the kernel cannot decode (its payload unparseable, written by another tool)
    # or plan (a cron edited by hand into nonsense) is taken out of the pool under the lease we
    # hold, in the claim's or start's transaction: disabled with the reason kept, no lease, never
    # due. Without it every claim that meets the row fails, and the replica fires nothing at all.
    # It bumps timing_version (the timing fence, above); enabling clears the reason.
    "quarantine": """
        UPDATE {S} SET enabled = 0, disabled_reason = :reason, next_run_at = NULL, due_at = NULL,
               locked_by = NULL, locked_at = NULL, lease_expires_at = NULL,
               timing_version = timing_version + 1
         WHERE id = :id AND locked_by = :replica AND lease_version = :version
           AND timing_version = :timing""",
    # An overlap=allow holder re-reads a row it keeps leased, to fire slots and pending work that
    # come due while its runs are in flight (no other replica may: the row is leased).
    "held_row": """
        SELECT * FROM {S} WHERE id = :id AND locked_by = :replica AND lease_version = :version
           AND enabled = 1""",
    # Start: advance the slot cursor only while we still hold the lease (a reclaim bumped
    # lease_version) and under the timing we planned with (the timing fence, above).
    "start_fence": """
        UPDATE {S} SET next_run_at = :next_run_at, last_run_at = COALESCE(:last_run_at, last_run_at)
         WHERE id = :id AND locked_by = :replica AND lease_version = :version
           AND timing_version = :timing""",
    # An attempt whose holder's lease expired ends lease_lost, but only if it is still running:
    # if the old holder's result landed first, the slot is done and must not be fired again.
    "lose_orphan": """
        UPDATE {R} SET status = 'lease_lost', completed_at = :now, error = :error
         WHERE id = :id AND status = 'running'""",
    # Pending -> running only if still pending: a disable or delete between claim and start
    # cancelled it, and a cancelled trigger must not fire.
    "start_pending": """
        UPDATE {R} SET status = 'running', replica = :replica, lease_version = :version,
               triggered_at = :now
         WHERE id = :id AND status = 'pending'""",
    "insert_run": """
        INSERT INTO {R} (id, schedule_id, attempt, scheduled_for, trigger, status,
               idempotency_key, due_at, run_id, session_id, error, replica, lease_version,
               reclaim, triggered_at, completed_at, input, created_at)
        VALUES (:id, :schedule_id, :attempt, :scheduled_for, :trigger, :status,
               :idempotency_key, :due_at, :run_id, :session_id, :error, :replica, :lease_version,
               :reclaim, :triggered_at, :completed_at, :input, :created_at)""",
    # Heartbeat: extend the lease only for the (holder, version) that owns it. A holder whose
    # lease was taken gets rowcount 0 and stops; it can never extend someone else's lease.
    "heartbeat": """
        UPDATE {S} SET lease_expires_at = :lease_until, due_at = :lease_until
         WHERE id = :id AND locked_by = :replica AND lease_version = :version""",
    # A lease that was not renewed was lost only if its row still exists: a schedule deleted
    # mid-run lets its attempt finish (nobody else can claim a deleted row).
    "schedule_exists": """
        SELECT 1 FROM {S} WHERE id = :id""",
    # Record an attempt's outcome only while this holder still owns the attempt. After a reclaim
    # the row is lease_lost and this late write changes nothing.
    "finish_run": """
        UPDATE {R} SET status = :status, status_code = :status_code,
               run_id = COALESCE(:run_id, run_id), session_id = COALESCE(:session_id, session_id),
               error = :error, completed_at = :completed_at, duration_ms = :duration_ms,
               output = :output
         WHERE id = :id AND status = 'running' AND replica = :replica
           AND lease_version = :version""",
    # The holder's bookkeeping on the schedule row, fenced on the lease like every holder write.
    # It answers whether we still hold the row, and the row's timing and enabled state.
    "finish_schedule": """
        UPDATE {S} SET last_status = :status,
               consecutive_failures = CASE WHEN :success THEN 0 ELSE consecutive_failures + 1 END
         WHERE id = :id AND locked_by = :replica AND lease_version = :version
        RETURNING timing_version, enabled""",
    # Overlap handling moves the slot cursor past slots that came due during the run, under the
    # timing fence (above): not if an update changed the timing meanwhile.
    "finish_advance": """
        UPDATE {S} SET next_run_at = :next_run_at
         WHERE id = :id AND locked_by = :replica AND lease_version = :version
           AND timing_version = :timing""",
    # A retry is queued only if the schedule still exists and is enabled: a disable or delete
    # that committed during the run means nothing more of it fires.
    "schedule_enabled": """
        SELECT timing_version FROM {S} WHERE id = :id AND enabled = 1""",
    # A one-off is done after its last attempt, unless a trigger is still waiting on it: that
    # fires first (a trigger is never lost) and the end of its run disables the row.
    "disable_one_off": """
        UPDATE {S} SET enabled = 0, next_run_at = NULL, due_at = NULL
         WHERE id = :id AND locked_by = :replica AND lease_version = :version
           AND timing_version = :timing
           AND NOT EXISTS (SELECT 1 FROM {R} r WHERE r.schedule_id = :id
                            AND r.status = 'pending')""",
    # Release: drop the lease and recompute due_at from the cursor and pending runs in the same
    # statement, so a trigger or an update committed during the run is honoured, not overwritten.
    "release": """
        UPDATE {S} SET locked_by = NULL, locked_at = NULL, lease_expires_at = NULL,
               due_at = CASE WHEN enabled = 1 THEN """
    + DUE_EXPR
    + """ END
         WHERE id = :id AND locked_by = :replica AND lease_version = :version""",
    # Manager writes (update, trigger) recompute due_at too, except on a held row: there due_at
    # must stay the lease expiry, live (the holder's release recomputes it) or already past (a
    # crashed holder's orphan must stay claimable now, not wait for the next slot). Taken from
    # lease_expires_at, not the old due_at, which a disable in between may have cleared.
    "refresh_due": """
        UPDATE {S} SET due_at = CASE
               WHEN enabled = 0 THEN NULL
               WHEN locked_by IS NOT NULL THEN lease_expires_at
               ELSE """
    + DUE_EXPR
    + """ END
         WHERE id = :id""",
    # -- the manager's writes (kernel/writes.py: create_schedule, update_schedule,
    # enable_schedule, disable_schedule, delete_schedule, add_pending_run); each runs under
    # BEGIN IMMEDIATE, so its read of the row cannot go stale.
    # Whether the row exists and is enabled: a trigger of a gone or disabled schedule is refused.
    "schedule_state": """
        SELECT enabled FROM {S} WHERE id = :id""",
    # A new row ({{columns}}: the columns the schedule sets, rows.schedule_values); the name is
    # UNIQUE, so of two replicas declaring one schedule at start-up one insert fails.
    "insert_schedule": """
        INSERT INTO {S} ({{columns}}) VALUES ({{values}})""",
    "get_schedule": """
        SELECT * FROM {S} WHERE id = :id""",
    # The caller's columns ({{sets}}: `column = :column` each). A change of the slot series bumps
    # timing_version (:bump: writes.TIMING_COLUMNS; the timing fence, above).
    "update_fields": """
        UPDATE {S} SET {{sets}}, timing_version = timing_version + :bump, updated_at = :now
         WHERE id = :id""",
    # Enabling resumes at the manager's next slot after now and clears a quarantine's reason;
    # disabling keeps the cursor. Both move the slot series: timing_version is bumped (the
    # timing fence, above).
    "enable_schedule": """
        UPDATE {S} SET enabled = 1, disabled_reason = NULL, next_run_at = :next_run_at,
               timing_version = timing_version + 1, updated_at = :now
         WHERE id = :id""",
    "disable_schedule": """
        UPDATE {S} SET enabled = 0, timing_version = timing_version + 1, updated_at = :now
         WHERE id = :id""",
    "delete_schedule": """
        DELETE FROM {S} WHERE id = :id""",
    # Disabling or deleting cancels waiting work in the same transaction: nothing of the schedule
    # fires after the change commits. A running attempt is left to finish and be recorded.
    "cancel_pending": """
        UPDATE {R} SET status = 'cancelled', completed_at = :now, error = :reason
         WHERE schedule_id = :id AND status = 'pending'""",
    # Deleting a row whose holder's lease has already run out: its attempts in flight have nobody
    # left to record them (a live holder still will, fenced on the run row), so they end now.
    "lose_unheld": """
        UPDATE {R} SET status = 'lease_lost', completed_at = :now,
               error = 'schedule deleted after its holder''s lease ran out'
         WHERE schedule_id = :id AND status = 'running'
           AND EXISTS (SELECT 1 FROM {S} s WHERE s.id = :id
                        AND (s.locked_by IS NULL OR s.lease_expires_at <= :now))""",
    # A run endpoint answered: link the attempt to the run it started, while it is still ours.
    "set_run_ids": """
        UPDATE {R} SET run_id = :run_id, session_id = :session_id
         WHERE id = :id AND status = 'running' AND replica = :replica""",
    # The live leases a replica holds. After a claim whose reply was lost (the connection cut
    # after the commit) it holds rows it does not know of; it reads them here and hands back
    # those it does not track (expire_lease, fenced), instead of leaving them to wait out the
    # lease. A rare path: it scans the leased rows, no index needed.
    "leases_of": """
        SELECT id, lease_version FROM {S}
         WHERE locked_by = :replica AND lease_expires_at > :now""",
    # A stopping replica hands its leases back at once: expired now, so another replica
    # re-delivers the cancelled attempts without waiting out the lease.
    "expire_lease": """
        UPDATE {S} SET lease_expires_at = :now, due_at = :now
         WHERE id = :id AND locked_by = :replica AND lease_version = :version""",
    # Retention: final run rows older than a cut-off, at most :limit of them (-1: all), so a
    # replica pruning a large history holds the write lock for one short batch at a time.
    # Pending and running rows are never pruned; final rows are never written again, so a prune
    # racing a finish, or another replica's prune, cannot delete anything it should not (the
    # second of two pruners finds the rows gone and deletes the next ones).
    "prune_runs": """
        DELETE FROM {R} WHERE rowid IN (
            SELECT rowid FROM {R} WHERE status NOT IN ('pending', 'running')
               AND created_at < :before LIMIT :limit)""",
}

# ---------------------------------------------------------------------------------------------
# Set-based rounds. The flows of kernel/writes.py move a batch's rows in lockstep, one round at a
# time, every row of a round at the same kind of step. The store runs each round's steps of one
# kind as ONE statement over a VALUES list (one row of `?` per row of the round, {rows}),
# instead of one statement per row: one call into SQLite, one release and re-take of the GIL,
# one pass of the driver's Python, where a round of a hundred rows cost a hundred. Each is the
# per-row statement of the same name above, fenced per row exactly as it is: a row whose fence
# fails is not matched, is not RETURNed, and the flow reads it as the per-row statement's "0
# rows" or "no row" (a lost lease stays lost, and is reported so). SQLite's RETURNING may name
# only the table written, and not by its alias, so a statement returns the ids it matched
# (unqualified: the written row's) and the store maps them back to the round's rows. Rows of a
# round are distinct (the flows' rule: one schedule per flow), so no statement meets one target
# row twice (UPDATE … FROM would apply only one of two); a round that would, and a round of one
# row, runs the per-row statements.
# The whole transaction holds the file's write lock (BEGIN IMMEDIATE), so the order in which an
# UPDATE … FROM visits its rows locks nothing and decides nothing: unlike Postgres, no round
# needs to lock its rows in id order first.
# Each entry: the per-row parameters, in the order of each VALUES row (the names of `v`); the
# statement.
# ---------------------------------------------------------------------------------------------

ROUND_SQL: dict[str, tuple[str, str]] = {
    # start: advance each slot cursor under its row's (holder, version, timing) fence.
    "start_fence": (
        "id replica version timing next_run_at last_run_at",
        """
        WITH v(id, replica, version, timing, next_run_at, last_run_at) AS (VALUES {rows})
        UPDATE {S} AS s SET next_run_at = v.next_run_at,
               last_run_at = COALESCE(v.last_run_at, s.last_run_at)
          FROM v
         WHERE s.id = v.id AND s.locked_by = v.replica AND s.lease_version = v.version
           AND s.timing_version = v.timing
        RETURNING id""",
    ),
    # start (and finish's retries and overlap rows): every new run row of the round, one INSERT.
    # A run id taken fails the whole statement, as it fails the per-row INSERT: the transaction
    # is rolled back either way.
    "insert_run": (
        "id schedule_id attempt scheduled_for trigger status idempotency_key due_at run_id"
        " session_id error replica lease_version reclaim triggered_at completed_at input"
        " created_at",
        """
        INSERT INTO {R} (id, schedule_id, attempt, scheduled_for, trigger, status,
               idempotency_key, due_at, run_id, session_id, error, replica, lease_version,
               reclaim, triggered_at, completed_at, input, created_at)
        VALUES {rows}""",
    ),
    # start: pending -> running, each only if still pending (a cancelled trigger must not fire).
    "start_pending": (
        "id replica version now",
        """
        WITH v(id, replica, version, now) AS (VALUES {rows})
        UPDATE {R} AS r SET status = 'running', replica = v.replica, lease_version = v.version,
               triggered_at = v.now
          FROM v
         WHERE r.id = v.id AND r.status = 'pending'
        RETURNING id""",
    ),
    # heartbeat: extend each lease only for the (holder, version) that owns it.
    "heartbeat": (
        "id replica version lease_until",
        """
        WITH v(id, replica, version, lease_until) AS (VALUES {rows})
        UPDATE {S} AS s SET lease_expires_at = v.lease_until, due_at = v.lease_until
          FROM v
         WHERE s.id = v.id AND s.locked_by = v.replica AND s.lease_version = v.version
        RETURNING id""",
    ),
    # heartbeat: which of the leases not renewed still have a row (a deleted row is not lost).
    "schedule_exists": (
        "id",
        """
        WITH v(id) AS (VALUES {rows})
        SELECT s.id FROM v JOIN {S} s ON s.id = v.id""",
    ),
    # finish: record each outcome only while this holder still owns the attempt (after a
    # reclaim the run row is lease_lost and is not matched).
    "finish_run": (
        "id replica version status status_code run_id session_id error completed_at"
        " duration_ms output",
        """
        WITH v(id, replica, version, status, status_code, run_id, session_id, error,
               completed_at, duration_ms, output) AS (VALUES {rows})
        UPDATE {R} AS r SET status = v.status, status_code = v.status_code,
               run_id = COALESCE(v.run_id, r.run_id),
               session_id = COALESCE(v.session_id, r.session_id),
               error = v.error, completed_at = v.completed_at, duration_ms = v.duration_ms,
               output = v.output
          FROM v
         WHERE r.id = v.id AND r.status = 'running' AND r.replica = v.replica
           AND r.lease_version = v.version
        RETURNING id""",
    ),
    # finish: the holder's bookkeeping on each schedule row, fenced on its lease; a row matched
    # answers its timing and enabled state, a row not matched is no longer ours.
    "finish_schedule": (
        "id replica version status success",
        """
        WITH v(id, replica, version, status, success) AS (VALUES {rows})
        UPDATE {S} AS s SET last_status = v.status,
               consecutive_failures = CASE WHEN v.success THEN 0
                                           ELSE s.consecutive_failures + 1 END
          FROM v
         WHERE s.id = v.id AND s.locked_by = v.replica AND s.lease_version = v.version
        RETURNING id, timing_version, enabled""",
    ),
    # finish: overlap moves each cursor past slots that came due, only if the timing is unchanged.
    "finish_advance": (
        "id replica version timing next_run_at",
        """
        WITH v(id, replica, version, timing, next_run_at) AS (VALUES {rows})
        UPDATE {S} AS s SET next_run_at = v.next_run_at
          FROM v
         WHERE s.id = v.id AND s.locked_by = v.replica AND s.lease_version = v.version
           AND s.timing_version = v.timing
        RETURNING id""",
    ),
    # finish: a retry is queued only for a schedule that still exists and is enabled.
    "schedule_enabled": (
        "id",
        """
        WITH v(id) AS (VALUES {rows})
        SELECT s.id, s.timing_version FROM v JOIN {S} s ON s.id = v.id AND s.enabled = 1""",
    ),
    # start and finish: drop each lease and recompute due_at from the cursor and the pending runs
    # in the same statement, so a trigger or update committed during the run is honoured (the
    # subquery reads each row's own pending runs, as the per-row statement's does).
    "release": (
        "id replica version",
        """
        WITH v(id, replica, version) AS (VALUES {rows})
        UPDATE {S} AS s SET locked_by = NULL, locked_at = NULL, lease_expires_at = NULL,
               due_at = CASE WHEN s.enabled = 1 THEN """
        + due_of("s")
        + """ END
          FROM v
         WHERE s.id = v.id AND s.locked_by = v.replica AND s.lease_version = v.version
        RETURNING id""",
    ),
    # finish, a lease lost meanwhile: refresh each due_at unless somebody holds the row (then it
    # stays the lease expiry), as the manager's per-row refresh does.
    "refresh_due": (
        "id",
        """
        WITH v(id) AS (VALUES {rows})
        UPDATE {S} AS s SET due_at = CASE
               WHEN s.enabled = 0 THEN NULL
               WHEN s.locked_by IS NOT NULL THEN s.lease_expires_at
               ELSE """
        + due_of("s")
        + """ END
          FROM v
         WHERE s.id = v.id
        RETURNING id""",
    ),
}
