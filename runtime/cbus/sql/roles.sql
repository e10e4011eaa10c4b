-- Least-privilege roles (`cbus db roles`): which role may do what in which domain,
-- and the row-level security on cbus's tables that holds every role but their owner
-- to its domains. Safe to run again. Owners (the role that ran `cbus db install`)
-- bypass row-level security, so the default set-up runs the same plans as before.
CREATE TABLE IF NOT EXISTS cbus.domain_grant (
    grantee name NOT NULL,
    domain text NOT NULL,
    access text NOT NULL CHECK (access IN ('send', 'consume', 'operate')),
    granted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (grantee, domain, access)
);

-- The domains the current role may act in, by access: a role's own rows and those
-- of every role whose privileges it has (membership with INHERIT, or SET ROLE).
-- A policy reads it as `domain = ANY (ARRAY(SELECT d FROM cbus.my_domains(...) AS d))`:
-- FROM it, the planner inlines it (called in a SELECT list, its body is planned
-- again at every statement: 1.3 ms), and ARRAY(...) is an init plan, run once per
-- statement (`domain IN (SELECT ...)` ran the subquery again for every row).
CREATE OR REPLACE FUNCTION cbus.my_domains(wanted text) RETURNS SETOF text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT g.domain FROM cbus.domain_grant g JOIN pg_catalog.pg_roles r ON r.rolname = g.grantee
    WHERE g.access = wanted AND pg_catalog.pg_has_role(r.oid, 'USAGE')
$$;

-- The troubleshooting table follows cbus.command through a trigger: the trigger runs
-- with its owner's rights, so a worker needs no grant on that table (the command row
-- it changes has passed its own policy already). schema.sql defines it so; this
-- repairs a database installed before it did.
ALTER FUNCTION cbus.track_troubleshooting() SECURITY DEFINER;
ALTER FUNCTION cbus.track_troubleshooting() SET search_path = pg_catalog, pg_temp;

ALTER TABLE cbus.command ENABLE ROW LEVEL SECURITY;
ALTER TABLE cbus.audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE cbus.troubleshooting ENABLE ROW LEVEL SECURITY;
ALTER TABLE cbus.rate_bucket ENABLE ROW LEVEL SECURITY;  -- rate: the limits' buckets
ALTER TABLE cbus.schedule ENABLE ROW LEVEL SECURITY;  -- rate: the schedules seen

-- A producer records new commands of its domains, as PENDING and untouched, and
-- reads them back (RETURNING, get_command, wait_for); it updates nothing (send and
-- send_many draw the msg_id in the INSERT). The policy send_msg_id is dropped for
-- databases installed when send_many updated it.
DROP POLICY IF EXISTS send_insert ON cbus.command;
CREATE POLICY send_insert ON cbus.command FOR INSERT
    WITH CHECK (domain = ANY (ARRAY(SELECT d FROM cbus.my_domains('send') AS d))
                AND status = 'PENDING' AND attempts = 0 AND result IS NULL
                AND finished_at IS NULL AND last_error_type IS NULL AND last_error_code IS NULL
                AND last_error_message IS NULL AND last_error_details IS NULL);
DROP POLICY IF EXISTS send_msg_id ON cbus.command;
DROP POLICY IF EXISTS send_select ON cbus.command;
CREATE POLICY send_select ON cbus.command FOR SELECT
    USING (domain = ANY (ARRAY(SELECT d FROM cbus.my_domains('send') AS d)));

-- A worker reads, records and updates the commands and audit rows of the domains it
-- consumes; an operator those of the domains it operates, and reads their
-- troubleshooting queue.
DO $policies$
DECLARE
    tab text;
    access text;
BEGIN
    FOREACH tab IN ARRAY ARRAY['command', 'audit', 'rate_bucket', 'schedule'] LOOP
        FOREACH access IN ARRAY ARRAY['consume', 'operate'] LOOP
            EXECUTE format('DROP POLICY IF EXISTS %I ON cbus.%I', access || '_all', tab);
            EXECUTE format('CREATE POLICY %I ON cbus.%I FOR ALL'
                           ' USING (domain = ANY (ARRAY(SELECT d FROM cbus.my_domains(%L) AS d)))'
                           ' WITH CHECK (domain = ANY (ARRAY(SELECT d FROM cbus.my_domains(%L) AS d)))',
                           access || '_all', tab, access, access);
        END LOOP;
    END LOOP;
END
$policies$;
DROP POLICY IF EXISTS operate_select ON cbus.troubleshooting;
CREATE POLICY operate_select ON cbus.troubleshooting FOR SELECT
    USING (domain = ANY (ARRAY(SELECT d FROM cbus.my_domains('operate') AS d)));
