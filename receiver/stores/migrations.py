"""PostgreSQL schema migrations: numbered, applied in order once each, recorded in `schema_migrations`.

Append new migrations; never edit one that has shipped. Each runs in the transaction that records it,
and is written to be harmless if run again (IF NOT EXISTS), should the record ever be lost.
Times are epoch seconds in double precision, as the models hold them; `doc` and `body` are `json`
(not `jsonb`) so documents come back with their keys in the order they were written, as in SQLite.
"""

from __future__ import annotations

CHANNEL = "kontext_receiver"  # NOTIFY payloads: "<schema> <Change>"

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
    (
        "0003_jobs_submitting_until",
        # The active-task count of every replica's submit claims: jobs BFL has, and jobs being submitted.
        """
        ALTER TABLE jobs ADD COLUMN IF NOT EXISTS submitting_until double precision;
        CREATE INDEX IF NOT EXISTS jobs_upstream ON jobs (model)
            WHERE state = 'submitted' OR submitting_until IS NOT NULL;
        """,
    ),
    (
        "0004_notify_changes",
        # Each committed change that makes work due wakes the background work of every replica.
        f"""
        CREATE OR REPLACE FUNCTION notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', TG_TABLE_SCHEMA || ' ' || TG_ARGV[0]);
            RETURN NULL;
        END $$;
        DROP TRIGGER IF EXISTS jobs_created ON jobs;
        CREATE TRIGGER jobs_created AFTER INSERT ON jobs
            FOR EACH ROW EXECUTE FUNCTION notify_change('job_created');
        DROP TRIGGER IF EXISTS jobs_result_ready ON jobs;
        CREATE TRIGGER jobs_result_ready AFTER UPDATE OF state ON jobs
            FOR EACH ROW WHEN (NEW.state = 'received' AND OLD.state <> 'received')
            EXECUTE FUNCTION notify_change('result_ready');
        DROP TRIGGER IF EXISTS jobs_slot_freed ON jobs;
        CREATE TRIGGER jobs_slot_freed AFTER UPDATE OF state ON jobs
            FOR EACH ROW WHEN (OLD.state = 'submitted' AND NEW.state <> 'submitted')
            EXECUTE FUNCTION notify_change('slot_freed');
        DROP TRIGGER IF EXISTS deliveries_due ON deliveries;
        CREATE TRIGGER deliveries_due AFTER INSERT OR UPDATE ON deliveries
            FOR EACH ROW WHEN (NEW.state = 'pending' AND NEW.attempts = 0)
            EXECUTE FUNCTION notify_change('delivery_due');
        """,
    ),
    (
        "0005_sse_event_feed",
        # The feed behind GET /v1/events. Writers add rows (by trigger, so no code path can skip one)
        # with no number; a reader numbers the committed ones under a lock (`PostgresStore._number`),
        # so a number is never handed out below one a reader has already seen. NOTIFY wakes every replica.
        """
        CREATE SEQUENCE IF NOT EXISTS feed_seq;
        CREATE TABLE IF NOT EXISTS feed (
            id bigserial PRIMARY KEY,
            seq bigint UNIQUE,
            at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()),
            type text NOT NULL,
            job_id text NOT NULL,
            state text,
            sink text,
            body json
        );
        CREATE INDEX IF NOT EXISTS feed_unnumbered ON feed (id) WHERE seq IS NULL;
        CREATE INDEX IF NOT EXISTS feed_job ON feed (job_id, seq);
        CREATE OR REPLACE FUNCTION feed_note() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND NEW.state IS NOT DISTINCT FROM OLD.state THEN
                RETURN NULL;
            END IF;
            IF TG_TABLE_NAME = 'jobs' THEN
                INSERT INTO feed (type, job_id, state) VALUES ('kontext.job.state', NEW.id, NEW.state);
            ELSIF TG_TABLE_NAME = 'deliveries' THEN
                INSERT INTO feed (type, job_id, state, sink)
                VALUES ('kontext.delivery.state', NEW.event_id, NEW.state, NEW.sink);
            END IF;
            PERFORM pg_notify('kontext_receiver_feed', TG_TABLE_SCHEMA);
            RETURN NULL;
        END $$;
        CREATE OR REPLACE FUNCTION feed_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO feed (type, job_id, body) VALUES (NEW.body->>'type', NEW.id, NEW.body);
            PERFORM pg_notify('kontext_receiver_feed', TG_TABLE_SCHEMA);
            RETURN NULL;
        END $$;
        DROP TRIGGER IF EXISTS feed_job ON jobs;
        CREATE TRIGGER feed_job AFTER INSERT OR UPDATE OF state ON jobs
            FOR EACH ROW EXECUTE FUNCTION feed_note();
        DROP TRIGGER IF EXISTS feed_delivery ON deliveries;
        CREATE TRIGGER feed_delivery AFTER UPDATE OF state ON deliveries
            FOR EACH ROW EXECUTE FUNCTION feed_note();
        DROP TRIGGER IF EXISTS feed_event ON events;
        CREATE TRIGGER feed_event AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION feed_event();
        """,
    ),
    (
        "0006_perf_settled_counts",
        # Jobs that have settled (published, failed, moderated, expired) never change state again and
        # pile up; their per-state counts come from this table, kept by triggers, so counting them does
        # not read a row per job. Rows are spread over 32 shards per state and model, so transactions
        # settling jobs at the same time rarely wait for each other's counter row.
        """
        CREATE TABLE IF NOT EXISTS settled_counts (
            state text NOT NULL,
            model text NOT NULL,
            shard integer NOT NULL,
            n bigint NOT NULL,
            PRIMARY KEY (state, model, shard)
        );
        CREATE OR REPLACE FUNCTION settled_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                UPDATE settled_counts SET n = n - 1
                WHERE state = OLD.state AND model = OLD.model AND shard = hashtext(OLD.id) & 31;
                RETURN NULL;
            END IF;
            INSERT INTO settled_counts AS c (state, model, shard, n)
            VALUES (NEW.state, NEW.model, hashtext(NEW.id) & 31, 1)
            ON CONFLICT (state, model, shard) DO UPDATE SET n = c.n + 1;
            RETURN NULL;
        END $$;
        DROP TRIGGER IF EXISTS jobs_settled_insert ON jobs;
        CREATE TRIGGER jobs_settled_insert AFTER INSERT ON jobs FOR EACH ROW
            WHEN (NEW.state IN ('published', 'failed', 'moderated', 'expired'))
            EXECUTE FUNCTION settled_counts_track();
        DROP TRIGGER IF EXISTS jobs_settled_update ON jobs;
        CREATE TRIGGER jobs_settled_update AFTER UPDATE OF state ON jobs FOR EACH ROW
            WHEN (NEW.state IN ('published', 'failed', 'moderated', 'expired')
                  AND OLD.state IS DISTINCT FROM NEW.state)
            EXECUTE FUNCTION settled_counts_track();
        DROP TRIGGER IF EXISTS jobs_settled_delete ON jobs;
        CREATE TRIGGER jobs_settled_delete AFTER DELETE ON jobs FOR EACH ROW
            WHEN (OLD.state IN ('published', 'failed', 'moderated', 'expired'))
            EXECUTE FUNCTION settled_counts_track();
        -- Active-task counts read only the jobs in progress (the condition matches `rows.COUNT_LIVE`).
        CREATE INDEX IF NOT EXISTS jobs_live ON jobs (state, model)
            WHERE state IN ('created', 'received', 'stored', 'submitted');
        DROP INDEX IF EXISTS jobs_state_model;
        -- Replicas of the previous release may be writing: hold their writes while counting.
        LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;
        DELETE FROM settled_counts;
        INSERT INTO settled_counts (state, model, shard, n)
            SELECT state, model, hashtext(id) & 31, count(*) FROM jobs
            WHERE state IN ('published', 'failed', 'moderated', 'expired') GROUP BY 1, 2, 3;
        """,
    ),
    (
        "0007_jobs_submitted",
        # A daily credit cap sums the costs of the day's submits on each submit claim: an index search
        # of that day's jobs (the expression matches `rows.CREDITS_SPENT` as the store writes it), not a
        # read of every job.
        "CREATE INDEX IF NOT EXISTS jobs_submitted ON jobs (((doc->>'submitted_at')::float8));",
    ),
)
