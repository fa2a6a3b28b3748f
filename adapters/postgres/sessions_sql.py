"""The SQL of the Postgres store's workflow persistence: sessions, workflow runs and their spans,
statement for statement as kernel/workflow/sqlite_sql.py. Not part of the lease algorithm
(sql.py): nothing here is fenced or takes a schedule row's lock, because a run is written
by the one process that executes it. `sessions.py` runs these statements; the tables are
migration 2 in `sql.py`. {SE} is the schema-qualified sessions table, {WR} the workflow
runs table, {TR} the traces table. JSON columns are JSONB: parameters arrive as JSON text and are
cast, and psycopg decodes them on the way out.
"""

from __future__ import annotations

SESSIONS_SQL = {
    # A run's save creates its session or touches it. The state is taken only from a run that has
    # ended (%(ended)s): the save at a run's start must not put back an older state over one that
    # a run finishing meanwhile wrote. The first workflow to use a session id keeps it; a later
    # save only fills in a user id the session did not have yet. The upsert's row lock orders two
    # saves of one session: the later one to commit wins, as on SQLite.
    "upsert_session": """
        INSERT INTO {SE} AS s (session_id, session_type, workflow_id, user_id, session_state,
               created_at, updated_at)
        VALUES (%(session_id)s, %(session_type)s, %(workflow_id)s, %(user_id)s,
               %(session_state)s::jsonb, %(created_at)s, %(updated_at)s)
        ON CONFLICT (session_id) DO UPDATE SET
               session_state = CASE WHEN %(ended)s THEN EXCLUDED.session_state
                                    ELSE s.session_state END,
               user_id = COALESCE(s.user_id, EXCLUDED.user_id),
               workflow_id = COALESCE(s.workflow_id, EXCLUDED.workflow_id),
               updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at)""",
    # The run row, written at the start (RUNNING) and again at the end: the second save replaces
    # every column but `seq`, so the session's run order stays the order the runs were first
    # saved in.
    "upsert_run": """
        INSERT INTO {WR} (run_id, session_id, workflow_id, workflow_name, user_id, status, input,
               content, media, step_outputs, session_state, additional_data, error, started_at,
               ended_at)
        VALUES (%(run_id)s, %(session_id)s, %(workflow_id)s, %(workflow_name)s, %(user_id)s,
               %(status)s, %(input)s::jsonb, %(content)s::jsonb, %(media)s::jsonb,
               %(step_outputs)s::jsonb, %(session_state)s::jsonb, %(additional_data)s::jsonb,
               %(error)s, %(started_at)s, %(ended_at)s)
        ON CONFLICT (run_id) DO UPDATE SET
               session_id = EXCLUDED.session_id, workflow_id = EXCLUDED.workflow_id,
               workflow_name = EXCLUDED.workflow_name, user_id = EXCLUDED.user_id,
               status = EXCLUDED.status, input = EXCLUDED.input, content = EXCLUDED.content,
               media = EXCLUDED.media, step_outputs = EXCLUDED.step_outputs,
               session_state = EXCLUDED.session_state, additional_data = EXCLUDED.additional_data,
               error = EXCLUDED.error, started_at = EXCLUDED.started_at,
               ended_at = EXCLUDED.ended_at""",
    # The run row as the run starts: an insert that does nothing if the run id is taken (the
    # store then refuses the run, in the same transaction, so another run is never overwritten).
    "insert_run": """
        INSERT INTO {WR} (run_id, session_id, workflow_id, workflow_name, user_id, status, input,
               content, media, step_outputs, session_state, additional_data, error, started_at,
               ended_at)
        VALUES (%(run_id)s, %(session_id)s, %(workflow_id)s, %(workflow_name)s, %(user_id)s,
               %(status)s, %(input)s::jsonb, %(content)s::jsonb, %(media)s::jsonb,
               %(step_outputs)s::jsonb, %(session_state)s::jsonb, %(additional_data)s::jsonb,
               %(error)s, %(started_at)s, %(ended_at)s)
        ON CONFLICT (run_id) DO NOTHING""",
    # One span. A span saved again (a retried save) replaces its earlier copy.
    "upsert_span": """
        INSERT INTO {TR} (trace_id, span_id, parent_span_id, name, kind, status, started_at,
               ended_at, attributes, error)
        VALUES (%(trace_id)s, %(span_id)s, %(parent_span_id)s, %(name)s, %(kind)s, %(status)s,
               %(started_at)s, %(ended_at)s, %(attributes)s::jsonb, %(error)s)
        ON CONFLICT (trace_id, span_id) DO UPDATE SET
               parent_span_id = EXCLUDED.parent_span_id, name = EXCLUDED.name,
               kind = EXCLUDED.kind, status = EXCLUDED.status, started_at = EXCLUDED.started_at,
               ended_at = EXCLUDED.ended_at, attributes = EXCLUDED.attributes,
               error = EXCLUDED.error""",
    # A run by id: one primary-key lookup.
    "get_run": """
        SELECT * FROM {WR} WHERE run_id = %(run_id)s""",
    # A session's own row, by primary key.
    "get_session": """
        SELECT * FROM {SE} WHERE session_id = %(session_id)s""",
    # A session's runs in the order they started, read off the (session_id, started_at, seq)
    # index; NULLS FIRST as SQLite sorts a run saved before it started (PENDING).
    "session_runs": """
        SELECT * FROM {WR} WHERE session_id = %(session_id)s
         ORDER BY started_at NULLS FIRST, seq""",
    # The newest %(limit)s of them (the last to start), still in the order they started.
    "session_runs_newest": """
        SELECT * FROM (
            SELECT * FROM {WR} WHERE session_id = %(session_id)s
             ORDER BY started_at DESC NULLS LAST, seq DESC LIMIT %(limit)s) AS newest
         ORDER BY started_at NULLS FIRST, seq""",
    # A run's spans: one range of the (trace_id, span_id) primary key. The tree, and its order,
    # are built in Python (kernel/workflow/sessions.py).
    "trace": """
        SELECT * FROM {TR} WHERE trace_id = %(trace_id)s""",
}
