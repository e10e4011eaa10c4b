-- cbus's own schema, version 1. Safe to run again: every object is IF NOT EXISTS,
-- and cbus.install runs it under an advisory lock.
CREATE SCHEMA IF NOT EXISTS cbus;

CREATE TABLE IF NOT EXISTS cbus.schema_version (
    version integer PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT now()
);

-- The command log: one row per command, the system of record behind get_command.
CREATE TABLE IF NOT EXISTS cbus.command (
    domain text NOT NULL,
    command_id uuid NOT NULL,
    kind text NOT NULL,
    version integer NOT NULL,
    status text NOT NULL CHECK (status IN ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED',
                                           'IN_TROUBLESHOOTING_QUEUE', 'CANCELED')),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    msg_id bigint,
    correlation_id uuid NOT NULL,
    reply_to text,
    batch_id uuid,
    causation_id uuid,
    last_error_type text,
    last_error_code text,
    last_error_message text,
    result jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    PRIMARY KEY (domain, command_id)
) WITH (fillfactor = 40);

-- No index covers a column the worker updates (status, attempts, result, ...), and
-- pages keep room: updates of a command stay HOT (measured +6% to +35% on a drain,
-- ADR 0004). One acknowledgement updates every row of a page in one transaction, so
-- a page must hold each row twice, and a completed row is a little longer (its
-- result, finished_at): at 60, 35% of those updates left their page (new index
-- entries), at 45 none without a result and 9% with a small one, at 40 none.
-- Troubleshooting membership lives in its own table for the same reason.
ALTER TABLE cbus.command SET (fillfactor = 40);
DROP INDEX IF EXISTS cbus.command_troubleshooting;
DROP INDEX IF EXISTS cbus.command_troubleshooting_recent;

CREATE TABLE IF NOT EXISTS cbus.troubleshooting (
    domain text NOT NULL,
    command_id uuid NOT NULL,
    kind text NOT NULL,
    since timestamptz NOT NULL,
    PRIMARY KEY (domain, command_id)
);

CREATE INDEX IF NOT EXISTS troubleshooting_recent
    ON cbus.troubleshooting (since DESC, domain DESC, command_id DESC);
CREATE INDEX IF NOT EXISTS troubleshooting_kind
    ON cbus.troubleshooting (domain, kind, since DESC);

-- With its owner's rights: a least-privilege worker (`cbus db roles`) has no grant on
-- cbus.troubleshooting; the command row that fires it has passed its own checks.
CREATE OR REPLACE FUNCTION cbus.track_troubleshooting() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.status = 'IN_TROUBLESHOOTING_QUEUE' THEN
        INSERT INTO cbus.troubleshooting (domain, command_id, kind, since)
        -- Version 4: a btree entry holds about 2.7 kB; a longer kind (any producer
        -- may send one) failed the statement that sets its command aside, for ever.
        VALUES (NEW.domain, NEW.command_id, left(NEW.kind, 200), NEW.updated_at)
        ON CONFLICT (domain, command_id) DO UPDATE SET kind = excluded.kind, since = excluded.since;
    ELSE
        DELETE FROM cbus.troubleshooting WHERE domain = NEW.domain AND command_id = NEW.command_id;
    END IF;
    RETURN NULL;
END
$$;

-- The triggers fire only when a command enters or leaves the troubleshooting queue.
DROP TRIGGER IF EXISTS command_enters_troubleshooting ON cbus.command;
CREATE TRIGGER command_enters_troubleshooting AFTER INSERT ON cbus.command
    FOR EACH ROW WHEN (NEW.status = 'IN_TROUBLESHOOTING_QUEUE')
    EXECUTE FUNCTION cbus.track_troubleshooting();
DROP TRIGGER IF EXISTS command_moves_troubleshooting ON cbus.command;
CREATE TRIGGER command_moves_troubleshooting AFTER UPDATE OF status ON cbus.command
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       AND 'IN_TROUBLESHOOTING_QUEUE' IN (OLD.status, NEW.status))
    EXECUTE FUNCTION cbus.track_troubleshooting();

-- Added after the first release of this file; a no-op on a fresh install.
ALTER TABLE cbus.command ADD COLUMN IF NOT EXISTS causation_id uuid;
-- Version 3: the `details` a business error carries (JSON), beside its code and message.
ALTER TABLE cbus.command ADD COLUMN IF NOT EXISTS last_error_details jsonb;

CREATE INDEX IF NOT EXISTS command_correlation ON cbus.command (correlation_id);

CREATE INDEX IF NOT EXISTS command_batch
    ON cbus.command (batch_id)
    WHERE batch_id IS NOT NULL;

-- The audit trail: what happened to a command beyond what its log row says.
CREATE TABLE IF NOT EXISTS cbus.audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    domain text NOT NULL,
    command_id uuid NOT NULL,
    event text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempt integer,
    operator text,
    detail jsonb
);

CREATE INDEX IF NOT EXISTS audit_command ON cbus.audit (domain, command_id, id);

-- Batches: the row is written once at send; progress is counted from cbus.command.
CREATE TABLE IF NOT EXISTS cbus.batch (
    batch_id uuid PRIMARY KEY,
    total integer NOT NULL,
    reply_to text,
    correlation_id uuid,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at timestamptz
);

-- Header values a worker casts, checked first so that one malformed message cannot
-- fail the statement that leases a whole batch. PostgreSQL 16 checks input without
-- a regular expression (several times cheaper per row); 15 falls back to one.
-- Both are SQL expressions the planner inlines into the calling query.
DO $install$
BEGIN
    IF current_setting('server_version_num')::int >= 160000 THEN
        CREATE OR REPLACE FUNCTION cbus.as_uuid(value text) RETURNS uuid
        LANGUAGE sql STABLE PARALLEL SAFE AS
        $$ SELECT CASE WHEN length(value) IN (32, 36) AND pg_input_is_valid(value, 'uuid')
                       THEN value::uuid END $$;
        CREATE OR REPLACE FUNCTION cbus.as_int(value text) RETURNS integer
        LANGUAGE sql STABLE PARALLEL SAFE AS
        $$ SELECT CASE WHEN pg_input_is_valid(value, 'integer') THEN value::integer END $$;
    ELSE
        CREATE OR REPLACE FUNCTION cbus.as_uuid(value text) RETURNS uuid
        LANGUAGE sql STABLE PARALLEL SAFE AS
        $$ SELECT CASE WHEN value ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                       THEN value::uuid END $$;
        CREATE OR REPLACE FUNCTION cbus.as_int(value text) RETURNS integer
        LANGUAGE sql STABLE PARALLEL SAFE AS
        $$ SELECT CASE WHEN value ~ '^-?[0-9]{1,9}$' THEN value::integer END $$;
    END IF;
END
$install$;

-- Version 4: each command version's JSON schemas (msgspec's), recorded by install_domain,
-- so operators' tools check a result, and show a payload, without the application's code.
CREATE TABLE IF NOT EXISTS cbus.command_type (
    kind text NOT NULL,
    version integer NOT NULL,
    domain text NOT NULL,
    payload_schema jsonb NOT NULL,
    result_schema jsonb,
    installed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kind, version)
);

-- ==== rate ====
-- Version 6: rate limits and schedules (contract section 13, ADR 0012).
-- One row per rate-limit bucket (a domain, or a command kind, and the key value): the
-- GCRA state. `tat` is when the next command may start (one start per `interval_s`,
-- no burst beyond one: at most rate x T + 1 in any T seconds); `queued_until` is where
-- the next command held back is put, so a backlog is spread over the slots to come
-- instead of being read again at every token; `granted` is what the last take started.
CREATE TABLE IF NOT EXISTS cbus.rate_bucket (
    domain text NOT NULL,
    bucket text NOT NULL,
    interval_s float8 NOT NULL,
    tat timestamptz NOT NULL,
    queued_until timestamptz NOT NULL,
    granted integer NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (domain, bucket)
);

-- One row per schedule a worker has seen: when it was first seen (nothing from before
-- is sent) and the newest firing sent; its cron and timezone for `cbus stats`. A
-- worker fires a schedule holding this row's lock (FOR UPDATE SKIP LOCKED).
CREATE TABLE IF NOT EXISTS cbus.schedule (
    domain text NOT NULL,
    name text NOT NULL,
    cron text NOT NULL,
    timezone text NOT NULL,
    command text NOT NULL,
    catch_up integer NOT NULL,
    first_seen timestamptz NOT NULL,
    last_fired timestamptz,
    PRIMARY KEY (domain, name)
);
-- ==== end rate ====

-- Also version 6: retention (contract section 9). The retention in effect per domain and
-- kind, in seconds, recorded by install_domain (kind '': the domain's own options),
-- so the pruner, `cbus db prune` included, needs no application code.
CREATE TABLE IF NOT EXISTS cbus.retention (
    domain text NOT NULL,
    kind text NOT NULL,
    completed integer NOT NULL,
    failed integer NOT NULL,
    canceled integer NOT NULL,
    audit integer NOT NULL,
    archive integer NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (domain, kind)
);

-- The pruner walks a domain's log oldest first: created_at is written once, so this
-- index keeps the worker's updates HOT (an index on finished_at would not). A
-- command ends after it was created, so rows created after the shortest retention
-- ago are never visited. The audit trail is walked by id, the archive by archived_at
-- (PGMQ's index).
CREATE INDEX IF NOT EXISTS command_created ON cbus.command (domain, created_at, command_id);

-- Every version this file brings; install.SCHEMA_VERSION is what the runtime needs.
INSERT INTO cbus.schema_version (version) VALUES (1), (2), (3), (4), (5), (6) ON CONFLICT DO NOTHING;
