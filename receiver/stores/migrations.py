"""PostgreSQL schema migrations: numbered, applied in order once each, recorded in `schema_migrations`.

Append new migrations; never edit one that has shipped. Each runs in the transaction that records it,
and is written to be harmless if run again (IF NOT EXISTS), should the record ever be lost.
Times are epoch seconds in double precision, as the models hold them; `doc` and `body` are `json`
(not `jsonb`) so documents come back with their keys in the order they were written, as in SQLite.
"""

from __future__ import annotations

POSTGRES: tuple[tuple[str, str], ...] = (
    (
        "0001_jobs_events_deliveries",
        """
        CREATE TABLE IF NOT EXISTS jobs (
            id text PRIMARY KEY,
            state text NOT NULL,
            model text NOT NULL,
            version integer NOT NULL,
            idempotency_key text UNIQUE,
            due_at double precision,
            created_at double precision NOT NULL,
            doc json NOT NULL
        );
        CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, due_at, created_at) WHERE due_at IS NOT NULL;
        CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at DESC, id DESC);
        CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_at DESC, id DESC);
        CREATE TABLE IF NOT EXISTS job_inputs (job_id text PRIMARY KEY, image text NOT NULL);
        CREATE TABLE IF NOT EXISTS events (id text PRIMARY KEY, body json NOT NULL);
        CREATE TABLE IF NOT EXISTS deliveries (
            event_id text NOT NULL,
            sink text NOT NULL,
            state text NOT NULL,
            attempts integer NOT NULL,
            next_at double precision NOT NULL,
            last_error text,
            delivered_at double precision,
            PRIMARY KEY (event_id, sink)
        );
        CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_at);
        """,
    ),
    (
        "0002_jobs_state_model",
        # The submitter counts active tasks per model on every wake-up.
        "CREATE INDEX IF NOT EXISTS jobs_state_model ON jobs (state, model);",
    ),
)
