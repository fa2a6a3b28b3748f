"""The SQL of the SQLite store's workflow persistence: sessions, workflow runs and their spans. Not
part of the lease algorithm (kernel/sqlite/sql.py): nothing here is fenced, because a run is
written by the one process that executes it. `sqlite.py` runs these statements; the tables are
migration 2 in `kernel/sqlite/schema.py`. {SE} is the sessions table, {WR} the workflow runs table,
{TR} the traces table. JSON columns hold text.
"""

from __future__ import annotations

SESSIONS_SQL = {
    # A run's save creates its session or touches it. The state is taken only from a run that has
    # ended (:ended): the save at a run's start must not put back an older state over one that a
    # run finishing meanwhile wrote. The first workflow to use a session id keeps it; a later
    # save only fills in a user id the session did not have yet.
    "upsert_session": """
        INSERT INTO {SE} (session_id, session_type, workflow_id, user_id, session_state,
               created_at, updated_at)
        VALUES (:session_id, :session_type, :workflow_id, :user_id, :session_state,
               :created_at, :updated_at)
        ON CONFLICT (session_id) DO UPDATE SET
               session_state = CASE WHEN :ended THEN excluded.session_state
                                    ELSE {SE}.session_state END,
               user_id = COALESCE({SE}.user_id, excluded.user_id),
               workflow_id = COALESCE({SE}.workflow_id, excluded.workflow_id),
               updated_at = MAX({SE}.updated_at, excluded.updated_at)""",
    # The run row, written at the start (RUNNING) and again at the end: the second save replaces
    # every column. An upsert keeps the row's rowid, so the session's run order stays the order
    # the runs were first saved in.
    "upsert_run": """
        INSERT INTO {WR} (run_id, session_id, workflow_id, workflow_name, user_id, status, input,
               content, media, step_outputs, session_state, additional_data, error, started_at,
               ended_at)
        VALUES (:run_id, :session_id, :workflow_id, :workflow_name, :user_id, :status, :input,
               :content, :media, :step_outputs, :session_state, :additional_data, :error,
               :started_at, :ended_at)
        ON CONFLICT (run_id) DO UPDATE SET
               session_id = excluded.session_id, workflow_id = excluded.workflow_id,
               workflow_name = excluded.workflow_name, user_id = excluded.user_id,
               status = excluded.status, input = excluded.input, content = excluded.content,
               media = excluded.media, step_outputs = excluded.step_outputs,
               session_state = excluded.session_state, additional_data = excluded.additional_data,
               error = excluded.error, started_at = excluded.started_at,
               ended_at = excluded.ended_at""",
    # The run row as the run starts: an insert that does nothing if the run id is taken (the
    # store then refuses the run, in the same transaction, so another run is never overwritten).
    "insert_run": """
        INSERT INTO {WR} (run_id, session_id, workflow_id, workflow_name, user_id, status, input,
               content, media, step_outputs, session_state, additional_data, error, started_at,
               ended_at)
        VALUES (:run_id, :session_id, :workflow_id, :workflow_name, :user_id, :status, :input,
               :content, :media, :step_outputs, :session_state, :additional_data, :error,
               :started_at, :ended_at)
        ON CONFLICT (run_id) DO NOTHING""",
    # One span. A span saved again (a retried save) replaces its earlier copy.
    "upsert_span": """
        INSERT INTO {TR} (trace_id, span_id, parent_span_id, name, kind, status, started_at,
               ended_at, attributes, error)
        VALUES (:trace_id, :span_id, :parent_span_id, :name, :kind, :status, :started_at,
               :ended_at, :attributes, :error)
        ON CONFLICT (trace_id, span_id) DO UPDATE SET
               parent_span_id = excluded.parent_span_id, name = excluded.name,
               kind = excluded.kind, status = excluded.status, started_at = excluded.started_at,
               ended_at = excluded.ended_at, attributes = excluded.attributes,
               error = excluded.error""",
    # A run by id: one primary-key lookup.
    "get_run": """
        SELECT * FROM {WR} WHERE run_id = :run_id""",
    # A session's own row, by primary key.
    "get_session": """
        SELECT * FROM {SE} WHERE session_id = :session_id""",
    # A session's runs in the order they started, read off the (session_id, started_at) index;
    # rowid orders runs that started in the same instant as they were saved.
    "session_runs": """
        SELECT * FROM {WR} WHERE session_id = :session_id ORDER BY started_at, rowid""",
    # The newest :limit of them (the last to start), still in the order they started.
    "session_runs_newest": """
        SELECT * FROM (
            SELECT *, rowid AS saved FROM {WR} WHERE session_id = :session_id
             ORDER BY started_at DESC, rowid DESC LIMIT :limit)
         ORDER BY started_at, saved""",
    # A run's spans: one range of the (trace_id, span_id) primary key. The tree, and its order,
    # are built in Python (sessions.py).
    "trace": """
        SELECT * FROM {TR} WHERE trace_id = :trace_id""",
}
