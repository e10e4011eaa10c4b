-- name: send
-- Record the command and enqueue it, in one round trip; nothing is enqueued when the
-- command_id was sent before (no row comes back). {q} is unused, kept for symmetry.
WITH logged AS (
    INSERT INTO cbus.command (domain, command_id, kind, version, status, max_attempts,
                              correlation_id, reply_to, batch_id)
    VALUES (%(domain)s, %(command_id)s, %(kind)s, %(version)s, 'PENDING', %(max_attempts)s,
            %(correlation_id)s, %(reply_to)s, %(batch_id)s)
    ON CONFLICT DO NOTHING
    RETURNING command_id
)
SELECT pgmq.send(%(queue)s, %(message)s, %(headers)s,
                 coalesce(%(at)s::timestamptz, clock_timestamp() + make_interval(secs => %(delay)s))),
       pg_notify(%(channel)s, '')
FROM logged

-- name: send_many_log
-- Record a group of commands of one domain; returns the ids that were new.
INSERT INTO cbus.command (domain, command_id, kind, version, status, max_attempts,
                          correlation_id, reply_to, batch_id)
SELECT %(domain)s, u.command_id, u.kind, u.version, 'PENDING', u.max_attempts,
       u.correlation_id, %(reply_to)s, %(batch_id)s
FROM unnest(%(command_ids)s::uuid[], %(kinds)s::text[], %(versions)s::int[],
            %(max_attempts)s::int[], %(correlation_ids)s::uuid[])
     AS u(command_id, kind, version, max_attempts, correlation_id)
ON CONFLICT DO NOTHING
RETURNING command_id

-- name: send_many_queue
SELECT pgmq.send_batch(%(queue)s, %(messages)s::jsonb[], %(headers)s::jsonb[],
                       coalesce(%(at)s::timestamptz, clock_timestamp() + make_interval(secs => %(delay)s))),
       pg_notify(%(channel)s, '')

-- name: read
-- Lease up to qty messages and record each on first receipt, in one statement.
-- A message whose command already ended (a foreign duplicate), or a second message
-- for a command in the same batch, comes back with runnable = false.
WITH m AS (
    SELECT msg_id, read_ct, message, headers,
           CASE WHEN jsonb_typeof(headers -> 'command_id') = 'string'
                 AND headers ->> 'command_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                 AND jsonb_typeof(headers -> 'correlation_id') = 'string'
                 AND headers ->> 'correlation_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                 AND jsonb_typeof(headers -> 'kind') = 'string'
                 AND jsonb_typeof(headers -> 'version') = 'number'
                 AND (headers ->> 'version') ~ '^[0-9]{1,9}$'
                 AND (headers -> 'batch_id' IS NULL OR jsonb_typeof(headers -> 'batch_id') = 'null'
                      OR (jsonb_typeof(headers -> 'batch_id') = 'string'
                          AND headers ->> 'batch_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'))
                THEN true ELSE false END AS well_formed
    FROM pgmq.read(%(queue)s, %(vt)s, %(qty)s)
),
logged AS (
    INSERT INTO cbus.command AS c (domain, command_id, kind, version, status, attempts,
                                   max_attempts, msg_id, correlation_id, reply_to, batch_id)
    SELECT DISTINCT ON ((headers ->> 'command_id')::uuid)
           %(domain)s, (headers ->> 'command_id')::uuid, headers ->> 'kind',
           (headers ->> 'version')::int, 'IN_PROGRESS', read_ct,
           coalesce((%(max_attempts)s::jsonb ->> (headers ->> 'kind'))::int, %(default_max_attempts)s),
           msg_id, (headers ->> 'correlation_id')::uuid,
           CASE WHEN jsonb_typeof(headers -> 'reply_to') = 'string' THEN headers ->> 'reply_to' END,
           (headers ->> 'batch_id')::uuid
    FROM m
    WHERE well_formed
    ORDER BY (headers ->> 'command_id')::uuid, msg_id
    ON CONFLICT (domain, command_id) DO UPDATE
        SET status = 'IN_PROGRESS', attempts = excluded.attempts, msg_id = excluded.msg_id,
            updated_at = clock_timestamp()
        WHERE c.status IN ('PENDING', 'IN_PROGRESS')
          AND (c.msg_id IS NULL OR c.msg_id = excluded.msg_id)
    RETURNING c.msg_id, c.max_attempts
)
SELECT m.msg_id, m.read_ct, m.message, m.headers, logged.msg_id IS NOT NULL AS runnable,
       m.well_formed, logged.max_attempts
FROM m LEFT JOIN logged ON logged.msg_id = m.msg_id
ORDER BY m.msg_id

-- name: ack_completed
-- Acknowledge handled messages and mark their commands COMPLETED, in one statement.
-- Only messages still leased by this delivery (same read_ct) are deleted; the caller
-- compares the count and rolls back when a lease was lost.
WITH acked AS (
    DELETE FROM {q} AS q
    USING unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[]) AS g(msg_id, read_ct)
    WHERE q.msg_id = g.msg_id AND q.read_ct = g.read_ct
    RETURNING q.msg_id
),
logged AS (
    UPDATE cbus.command AS c
    SET status = 'COMPLETED', result = u.result, updated_at = clock_timestamp(),
        finished_at = clock_timestamp(), last_error_type = NULL, last_error_code = NULL,
        last_error_message = NULL
    FROM unnest(%(msg_ids)s::bigint[], %(command_ids)s::uuid[], %(results)s::jsonb[])
         AS u(msg_id, command_id, result)
    WHERE c.domain = %(domain)s AND c.command_id = u.command_id
      AND u.msg_id IN (SELECT msg_id FROM acked)
    RETURNING 1
),
audited AS (
    INSERT INTO cbus.audit (domain, command_id, event, attempt)
    SELECT %(domain)s, u.command_id, 'completed', u.read_ct
    FROM unnest(%(msg_ids)s::bigint[], %(command_ids)s::uuid[], %(read_cts)s::int[])
         AS u(msg_id, command_id, read_ct)
    WHERE %(audit_full)s AND u.msg_id IN (SELECT msg_id FROM acked)
)
SELECT (SELECT count(*) FROM acked) AS acked, (SELECT count(*) FROM logged) AS logged

-- name: delete_message
-- Drop a message that must not run (a duplicate of a command that already ended).
DELETE FROM {q} WHERE msg_id = %(msg_id)s AND read_ct = %(read_ct)s

-- name: retry_later
-- Put a failed delivery back for another attempt after its backoff.
WITH leased AS (
    UPDATE {q} SET vt = clock_timestamp() + make_interval(secs => %(backoff)s)
    WHERE msg_id = %(msg_id)s AND read_ct = %(read_ct)s
    RETURNING msg_id
)
UPDATE cbus.command
SET status = 'PENDING', attempts = %(read_ct)s, last_error_type = %(error_type)s,
    last_error_code = %(error_code)s, last_error_message = %(error_message)s,
    updated_at = clock_timestamp()
WHERE domain = %(domain)s AND command_id = %(command_id)s AND EXISTS (SELECT 1 FROM leased)
RETURNING 1

-- name: archive_message
-- Move a message to PGMQ's archive (the troubleshooting queue's payload store).
WITH moved AS (
    DELETE FROM {q} WHERE msg_id = %(msg_id)s AND read_ct = %(read_ct)s
    RETURNING msg_id, read_ct, enqueued_at, vt, message, headers
)
INSERT INTO {a} (msg_id, read_ct, enqueued_at, vt, message, headers)
SELECT msg_id, read_ct, enqueued_at, vt, message, headers FROM moved
RETURNING msg_id

-- name: end_command
-- Record how a command ended when it did not complete (troubleshooting, failed, canceled).
UPDATE cbus.command
SET status = %(status)s, attempts = greatest(attempts, %(attempts)s),
    last_error_type = %(error_type)s, last_error_code = %(error_code)s,
    last_error_message = %(error_message)s, result = coalesce(%(result)s, result),
    msg_id = coalesce(%(msg_id)s, msg_id),
    updated_at = clock_timestamp(),
    finished_at = CASE WHEN %(status)s IN ('COMPLETED', 'FAILED', 'CANCELED')
                       THEN clock_timestamp() END
WHERE domain = %(domain)s AND command_id = %(command_id)s

-- name: audit
INSERT INTO cbus.audit (domain, command_id, event, attempt, operator, detail)
VALUES (%(domain)s, %(command_id)s, %(event)s, %(attempt)s, %(operator)s, %(detail)s)

-- name: extend_lease
UPDATE {q} SET vt = clock_timestamp() + make_interval(secs => %(seconds)s)
FROM unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[]) AS g(msg_id, read_ct)
WHERE {q}.msg_id = g.msg_id AND {q}.read_ct = g.read_ct

-- name: pending
-- Work a worker run with until_idle still waits for: due now or within the horizon,
-- or waiting for a retry (read before).
SELECT EXISTS (
    SELECT 1 FROM {q}
    WHERE read_ct > 0 OR vt <= clock_timestamp() + make_interval(secs => %(horizon)s)
)
