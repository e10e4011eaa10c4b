-- name: send
-- Record the command and enqueue it, in one round trip; nothing is enqueued when the
-- command_id was sent before (no row comes back). {q} is unused, kept for symmetry.
WITH logged AS (
    INSERT INTO cbus.command (domain, command_id, kind, version, status, max_attempts,
                              correlation_id, reply_to, batch_id, causation_id)
    VALUES (%(domain)s, %(command_id)s, %(kind)s, %(version)s, 'PENDING', %(max_attempts)s,
            %(correlation_id)s, %(reply_to)s, %(batch_id)s, %(causation_id)s)
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
                          correlation_id, reply_to, batch_id, causation_id)
SELECT %(domain)s, u.command_id, u.kind, u.version, 'PENDING', u.max_attempts,
       u.correlation_id, %(reply_to)s, %(batch_id)s, %(causation_id)s
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
                                   max_attempts, msg_id, correlation_id, reply_to, batch_id,
                                   causation_id)
    SELECT DISTINCT ON ((headers ->> 'command_id')::uuid)
           %(domain)s, (headers ->> 'command_id')::uuid, headers ->> 'kind',
           (headers ->> 'version')::int, 'IN_PROGRESS', read_ct,
           coalesce((%(max_attempts)s::jsonb ->> (headers ->> 'kind'))::int, %(default_max_attempts)s),
           msg_id, (headers ->> 'correlation_id')::uuid,
           CASE WHEN jsonb_typeof(headers -> 'reply_to') = 'string' THEN headers ->> 'reply_to' END,
           (headers ->> 'batch_id')::uuid,
           CASE WHEN headers ->> 'causation_id'
                     ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                THEN (headers ->> 'causation_id')::uuid END
    FROM m
    WHERE well_formed
    ORDER BY (headers ->> 'command_id')::uuid, msg_id
    ON CONFLICT (domain, command_id) DO UPDATE
        SET status = 'IN_PROGRESS', attempts = excluded.attempts, msg_id = excluded.msg_id,
            updated_at = clock_timestamp()
        WHERE c.status IN ('PENDING', 'IN_PROGRESS')
          AND (c.msg_id IS NULL OR c.msg_id = excluded.msg_id)
    RETURNING c.msg_id, c.max_attempts, c.command_id, c.attempts
),
received AS (
    INSERT INTO cbus.audit (domain, command_id, event, attempt)
    SELECT %(domain)s, command_id, 'received', attempts FROM logged WHERE %(audit_full)s
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
SELECT (SELECT count(*) FROM acked) AS acked, (SELECT count(*) FROM logged) AS logged,
       pg_notify(%(done_channel)s, '')

-- name: still_leased
-- Whether a delivery still holds its message: a replay does not run the handler of a
-- message another worker has read since (its acknowledgement could only fail).
SELECT 1 FROM {q} WHERE msg_id = %(msg_id)s AND read_ct = %(read_ct)s

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
RETURNING pg_notify(%(done_channel)s, '')

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

-- name: send_replies
-- Replies to the reply_to queues of commands that ended. A queue that does not
-- exist gets no reply (the command still ends; its result stays in the log) and an
-- audit row says why, so a bad reply_to never makes the handler run again.
WITH r AS (
    SELECT * FROM unnest(%(queues)s::text[], %(messages)s::jsonb[], %(command_ids)s::uuid[])
        AS r(queue, message, command_id)
),
known AS (
    SELECT r.*, EXISTS (SELECT 1 FROM pgmq.meta m WHERE m.queue_name = r.queue) AS ok FROM r
),
sent AS (
    SELECT pgmq.send(queue, message, '{"kind": "cbus.Reply"}'::jsonb) AS msg_id
    FROM known WHERE ok
),
undeliverable AS (
    INSERT INTO cbus.audit (domain, command_id, event, detail)
    SELECT %(domain)s, command_id, 'reply_undeliverable',
           jsonb_build_object('reply_to', queue, 'reason', 'the reply queue does not exist')
    FROM known WHERE NOT ok
    RETURNING 1
)
SELECT (SELECT count(*) FROM sent), (SELECT count(*) FROM undeliverable)

-- name: lock_batches
-- Serialise the completers of the same batch, so the last command's transaction
-- sees every other one committed (the next statement takes a new snapshot).
SELECT pg_advisory_xact_lock(hashtextextended(b::text, 0))
FROM unnest(%(batch_ids)s::uuid[]) WITH ORDINALITY AS u(b, n)
ORDER BY n

-- name: complete_batches
-- Mark batches whose every command has ended, and send each its completion message.
WITH done AS (
    UPDATE cbus.batch AS b SET completed_at = clock_timestamp()
    WHERE b.batch_id = ANY(%(batch_ids)s::uuid[]) AND b.completed_at IS NULL
      AND NOT EXISTS (
          SELECT 1 FROM cbus.command c
          WHERE c.batch_id = b.batch_id AND c.status NOT IN ('COMPLETED', 'FAILED', 'CANCELED'))
    RETURNING b.batch_id, b.total, b.reply_to, b.correlation_id
),
counted AS (
    SELECT d.batch_id, d.total, d.reply_to, d.correlation_id,
           count(*) FILTER (WHERE c.status = 'COMPLETED') AS completed,
           count(*) FILTER (WHERE c.status = 'FAILED') AS failed,
           count(*) FILTER (WHERE c.status = 'CANCELED') AS canceled
    FROM done d JOIN cbus.command c ON c.batch_id = d.batch_id
    GROUP BY d.batch_id, d.total, d.reply_to, d.correlation_id
),
sent AS (
    SELECT pgmq.send(
        reply_to,
        jsonb_strip_nulls(jsonb_build_object(
            'batch_id', batch_id, 'total', total, 'completed', completed, 'failed', failed,
            'canceled', canceled, 'correlation_id', correlation_id)),
        '{"kind": "cbus.BatchCompleted"}'::jsonb) AS msg_id
    FROM counted
    WHERE reply_to IS NOT NULL
      AND EXISTS (SELECT 1 FROM pgmq.meta m WHERE m.queue_name = counted.reply_to)
)
SELECT d.batch_id, (SELECT count(*) FROM sent), pg_notify('cbus_batch', d.batch_id::text)
FROM done d

-- name: set_aside
-- Put a poison message's command in the troubleshooting queue, recording it first
-- when it never got a log row (headers without a usable command_id).
INSERT INTO cbus.command AS c (domain, command_id, kind, version, status, attempts,
                               max_attempts, msg_id, correlation_id, last_error_type,
                               last_error_code, last_error_message)
VALUES (%(domain)s, %(command_id)s, %(kind)s, %(version)s, 'IN_TROUBLESHOOTING_QUEUE',
        %(attempts)s, %(max_attempts)s, %(msg_id)s, %(command_id)s, 'Poison',
        %(error_code)s, %(error_message)s)
ON CONFLICT (domain, command_id) DO UPDATE
    SET status = 'IN_TROUBLESHOOTING_QUEUE', attempts = greatest(c.attempts, excluded.attempts),
        msg_id = excluded.msg_id, last_error_type = 'Poison',
        last_error_code = excluded.last_error_code,
        last_error_message = excluded.last_error_message, updated_at = clock_timestamp()
RETURNING pg_notify(%(done_channel)s, '')
