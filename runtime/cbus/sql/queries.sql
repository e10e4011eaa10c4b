-- name: send
-- Record the command and enqueue it, in one round trip; nothing is enqueued when the
-- command_id was sent before (no row comes back). The message goes into the queue's
-- table as pgmq.send puts it there (its whole body is this INSERT), without the
-- PL/pgSQL call and the EXECUTE that parses and plans it again on every send:
-- 1.55x the rate of pgmq.send on its own (ADR 0004).
-- The log row keeps the message's msg_id (drawn first), so a worker knows another
-- producer's message that reuses the command_id.
-- The log row's ids, kind and version are read from the headers, which hold them
-- already: a parameter fewer is less for the sender's Python to dump, and the
-- sender's thread holds the GIL that every other sending thread waits for (ADR 0010).
-- For the same reason the domain, its channel and the kind's max_attempts are
-- literals, one statement per domain and max_attempts (`cbus._queries.query`), and
-- a command due at once is sent by `send_now`, this statement with
-- `clock_timestamp()` for its vt: two parameters to dump instead of seven.
WITH h AS (SELECT %(headers)s::jsonb AS h),
logged AS (
    INSERT INTO cbus.command (domain, command_id, kind, version, status, max_attempts,
                              correlation_id, reply_to, batch_id, causation_id, msg_id)
    SELECT {domain}, (h ->> 'command_id')::uuid, h ->> 'kind', (h ->> 'version')::int,
           'PENDING', {attempts}, (h ->> 'correlation_id')::uuid, h ->> 'reply_to',
           (h ->> 'batch_id')::uuid, (h ->> 'causation_id')::uuid,
           nextval(pg_get_serial_sequence({qname}, 'msg_id'))
    FROM h
    ON CONFLICT DO NOTHING
    RETURNING command_id, msg_id
)
INSERT INTO {q} (msg_id, vt, message, headers) OVERRIDING SYSTEM VALUE
SELECT logged.msg_id,
       coalesce(%(at)s::timestamptz, clock_timestamp() + make_interval(secs => %(delay)s)),
       %(message)s::jsonb, h.h
FROM logged, h
RETURNING msg_id, pg_notify({channel}, '')

-- name: send_many
-- Record and enqueue a group of commands of one domain in one statement, as `send`
-- does: each new log row draws its message's msg_id, and only new command_ids are
-- enqueued, with those msg_ids (no UPDATE of the log). Returns the new ids.
WITH u AS (
    SELECT *
    FROM unnest(%(command_ids)s::uuid[], %(kinds)s::text[], %(versions)s::int[],
                %(max_attempts)s::int[], %(correlation_ids)s::uuid[], %(messages)s::jsonb[],
                %(headers)s::jsonb[])
         WITH ORDINALITY AS u(command_id, kind, version, max_attempts, correlation_id,
                              message, headers, i)
),
logged AS (
    INSERT INTO cbus.command (domain, command_id, kind, version, status, max_attempts,
                              correlation_id, reply_to, batch_id, causation_id, msg_id)
    SELECT %(domain)s, u.command_id, u.kind, u.version, 'PENDING', u.max_attempts,
           u.correlation_id, %(reply_to)s, %(batch_id)s, %(causation_id)s,
           nextval(pg_get_serial_sequence({qname}, 'msg_id'))
    FROM u
    ORDER BY u.i
    ON CONFLICT DO NOTHING
    RETURNING command_id, msg_id
),
queued AS (
    INSERT INTO {q} (msg_id, vt, message, headers) OVERRIDING SYSTEM VALUE
    SELECT logged.msg_id,
           coalesce(%(at)s::timestamptz, clock_timestamp() + make_interval(secs => %(delay)s)),
           u.message, u.headers
    FROM logged JOIN u USING (command_id)
    ORDER BY logged.msg_id
)
SELECT logged.command_id, logged.msg_id
FROM logged, (SELECT pg_notify(%(channel)s, '')) AS woken

-- name: send_many_log
-- (bench/experiments.py compares against these two.)
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
-- Enqueue a group as pgmq.send_batch does (one INSERT ... SELECT), planned once; the
-- msg_ids come back in the order of the arrays, and go into the group's log rows (as
-- `send` keeps them), which send_many_log wrote just before.
WITH queued AS (
    INSERT INTO {q} (vt, message, headers)
    SELECT coalesce(%(at)s::timestamptz, clock_timestamp() + make_interval(secs => %(delay)s)),
           u.message, u.headers
    FROM unnest(%(messages)s::jsonb[], %(headers)s::jsonb[]) WITH ORDINALITY AS u(message, headers, i)
    ORDER BY u.i
    RETURNING msg_id, (headers ->> 'command_id')::uuid AS command_id
),
logged AS (
    UPDATE cbus.command AS c SET msg_id = queued.msg_id
    FROM queued
    WHERE c.domain = %(domain)s AND c.command_id = queued.command_id AND c.msg_id IS NULL
)
SELECT msg_id FROM queued, (SELECT pg_notify(%(channel)s, '')) AS woken
ORDER BY msg_id

-- name: read
-- Lease up to {limit} messages, in one statement. The lease is pgmq.read's own
-- UPDATE, written here as `send` writes pgmq.send's INSERT: pgmq.read is PL/pgSQL
-- that formats, parses and plans it on every call; prepared here with the batch size
-- as a literal, the planner also knows how many rows come back and finds their log
-- rows by primary key (ADR 0006). The log rows of commands cbus sent are only read
-- (the acknowledgement records the outcome); a command another PGMQ client sent is
-- recorded on first receipt. A message whose command already ended (a duplicate)
-- comes back with runnable = false, and one whose kind or msg_id is not the log
-- row's (another producer reusing a pending command's id) with conflict = true.
-- Header values are checked before any cast
-- (cbus.as_uuid, cbus.as_int): only the command_id of a message with a log row,
-- every value the log needs of one without; the worker's decoder checks all headers
-- of every message anyway. Due messages go earliest-due first (`vt`, which is the
-- send time for a message sent without delay): by msg_id, as pgmq.read orders, the
-- scan stepped over every message other consumers held leased at the head of the
-- queue (0.40 against 0.11 ms for 100 rows with 700 leased, ADR 0006).
-- `after`, while a backlog lasts, is the earliest `vt` of the consumer's last full
-- lease (`due`, returned per row; NULL: the whole queue): the scan then starts there
-- instead of stepping over every dead index entry the drain left at the head of the
-- queue until a vacuum (7.4 ms for 100 rows 150,000 messages into a drain, ADR 0004).
WITH leasable AS (
    SELECT msg_id, vt FROM {q}
    WHERE vt <= clock_timestamp() AND vt >= coalesce(%(after)s::timestamptz, '-infinity')
    ORDER BY vt
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
),
r AS (
    UPDATE {q} AS q
    SET last_read_at = clock_timestamp(),
        vt = clock_timestamp() + make_interval(secs => %(vt)s),
        read_ct = q.read_ct + 1
    FROM leasable
    WHERE q.msg_id = leasable.msg_id
    RETURNING q.msg_id, q.read_ct, q.message, q.headers, leasable.vt AS due
),
m AS (
    SELECT r.*, CASE WHEN jsonb_typeof(headers -> 'command_id') = 'string'
                     THEN cbus.as_uuid(headers ->> 'command_id') END AS command_id
    FROM r
),
known AS (  -- conflict: the message is not the one the log row was sent as
    SELECT m.msg_id, c.status, c.max_attempts,
           c.kind IS DISTINCT FROM (m.headers ->> 'kind') OR c.msg_id <> m.msg_id AS conflict
    FROM m JOIN cbus.command c ON c.domain = %(domain)s AND c.command_id = m.command_id
),
unlogged AS MATERIALIZED (  -- the checks run on these rows only
    SELECT m.msg_id, m.read_ct, m.command_id, m.headers,
           cbus.as_uuid(headers ->> 'correlation_id') AS correlation_id,
           CASE WHEN jsonb_typeof(headers -> 'version') = 'number'
                THEN cbus.as_int(headers ->> 'version') END AS version,
           CASE WHEN jsonb_typeof(headers -> 'batch_id') = 'string'
                THEN cbus.as_uuid(headers ->> 'batch_id') END AS batch_id
    FROM m
    WHERE m.command_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM known k WHERE k.msg_id = m.msg_id)
),
valid AS (
    SELECT * FROM unlogged u
    WHERE u.correlation_id IS NOT NULL AND u.version >= 0
      AND jsonb_typeof(u.headers -> 'kind') = 'string' AND length(u.headers ->> 'kind') <= 200
      AND (u.batch_id IS NOT NULL OR coalesce(jsonb_typeof(u.headers -> 'batch_id'), 'null') = 'null')
),
fresh AS (
    INSERT INTO cbus.command AS c (domain, command_id, kind, version, status, attempts,
                                   max_attempts, msg_id, correlation_id, reply_to, batch_id,
                                   causation_id)
    SELECT DISTINCT ON (v.command_id)
           %(domain)s, v.command_id, headers ->> 'kind', v.version, 'PENDING', read_ct,
           coalesce((%(max_attempts)s::jsonb ->> (headers ->> 'kind'))::int, %(default_max_attempts)s),
           msg_id, v.correlation_id,
           CASE WHEN jsonb_typeof(headers -> 'reply_to') = 'string' THEN headers ->> 'reply_to' END,
           v.batch_id,
           CASE WHEN jsonb_typeof(headers -> 'causation_id') = 'string'
                THEN cbus.as_uuid(headers ->> 'causation_id') END
    FROM valid v
    ORDER BY v.command_id, v.msg_id
    -- pgmq.read runs its query with a newer snapshot than this statement's: a message
    -- committed in between is leased while its log row is not in `known`. The conflict
    -- sees the row all the same; the no-op update claims it when it is still running.
    ON CONFLICT (domain, command_id) DO UPDATE SET updated_at = c.updated_at
        WHERE c.status IN ('PENDING', 'IN_PROGRESS')
    RETURNING c.command_id, c.max_attempts
),
received AS (
    INSERT INTO cbus.audit (domain, command_id, event, attempt)
    SELECT %(domain)s, m.command_id, 'received', m.read_ct
    FROM m LEFT JOIN known k ON k.msg_id = m.msg_id
           LEFT JOIN fresh f ON f.command_id = m.command_id
    WHERE %(audit_full)s AND (k.status IN ('PENDING', 'IN_PROGRESS') OR f.command_id IS NOT NULL)
)
-- The worker reads the rows in binary (ADR 0004): message and headers as the UTF-8
-- bytes of their JSON, for msgspec, and `due` in microseconds since the epoch; a
-- datetime per row cost it 1.2 us, more than any other column.
SELECT m.msg_id, m.read_ct,
       convert_to(m.message::text, 'UTF8') AS message,
       convert_to(m.headers::text, 'UTF8') AS headers,
       coalesce(k.status IN ('PENDING', 'IN_PROGRESS'), false) OR f.command_id IS NOT NULL
           AS runnable,
       k.msg_id IS NOT NULL OR v.msg_id IS NOT NULL AS well_formed,
       coalesce(k.max_attempts, f.max_attempts) AS max_attempts,
       coalesce(k.conflict, false) AS conflict,
       (extract(epoch FROM m.due) * 1000000)::bigint AS due_us
FROM m LEFT JOIN known k ON k.msg_id = m.msg_id
       LEFT JOIN valid v ON v.msg_id = m.msg_id
       LEFT JOIN fresh f ON f.command_id = m.command_id
ORDER BY m.msg_id

-- name: ack_completed
-- Acknowledge handled messages and mark their commands COMPLETED, in one statement.
-- Only messages still leased by this delivery (same read_ct) are deleted, and only
-- commands not ended yet are marked; the caller compares both counts and rolls back
-- when a lease was lost or a duplicate ran. The ids come as array literals and the
-- results as one JSON array (null when no handler returned one): building them costs
-- the worker a join, not a dump per element.
WITH acked AS (
    DELETE FROM {q} AS q
    USING unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[]) WITH ORDINALITY AS g(msg_id, read_ct, i)
    WHERE q.msg_id = g.msg_id AND q.read_ct = g.read_ct
    RETURNING q.msg_id, q.read_ct, (q.headers ->> 'command_id')::uuid AS command_id, g.i
),
logged AS (
    UPDATE cbus.command AS c
    SET status = 'COMPLETED', result = nullif(%(results)s::jsonb -> (a.i::int - 1), 'null'),
        attempts = a.read_ct, msg_id = a.msg_id,
        updated_at = clock_timestamp(), finished_at = clock_timestamp(),
        last_error_type = NULL, last_error_code = NULL, last_error_message = NULL,
        last_error_details = NULL
    FROM acked AS a
    WHERE c.domain = %(domain)s AND c.command_id = a.command_id
      AND c.status IN ('PENDING', 'IN_PROGRESS')
    RETURNING 1
),
audited AS (
    INSERT INTO cbus.audit (domain, command_id, event, attempt)
    SELECT %(domain)s, a.command_id, 'completed', a.read_ct
    FROM acked AS a
    WHERE %(audit_full)s
)
SELECT (SELECT count(*) FROM acked) AS acked, (SELECT count(*) FROM logged) AS logged,
       pg_notify(%(done_channel)s, '')

-- name: pgmq_last_read_at
-- The queues among those given whose table has PGMQ's last_read_at (PGMQ 1.10+).
SELECT q FROM unnest(%(queues)s::text[]) AS q
WHERE EXISTS (
    SELECT 1 FROM pg_attribute
    WHERE attrelid = to_regclass(quote_ident('pgmq') || '.' || quote_ident('q_' || q))
      AND attname = 'last_read_at' AND NOT attisdropped
)

-- name: missing_queues
-- The queues among those given that PGMQ has no table for.
SELECT q FROM unnest(%(queues)s::text[]) AS q
WHERE to_regclass(quote_ident('pgmq') || '.' || quote_ident('q_' || q)) IS NULL

-- name: still_leased
-- Whether a delivery still holds its message, and its command's status: a replay
-- does not run the handler of a message another worker has read since, nor of a
-- command another delivery has ended (both acknowledgements could only fail).
SELECT c.status
FROM {q} AS q JOIN cbus.command AS c ON c.domain = %(domain)s AND c.command_id = %(command_id)s
WHERE q.msg_id = %(msg_id)s AND q.read_ct = %(read_ct)s

-- name: delete_message
-- Drop a message that must not run (a duplicate of a command that already ended).
DELETE FROM {q} WHERE msg_id = %(msg_id)s AND read_ct = %(read_ct)s

-- name: retry_later
-- Put a failed delivery back for another attempt after its backoff; with tracing, its
-- headers name this attempt's span (previous_span: the next attempt's span links to it).
WITH leased AS (
    UPDATE {q} SET vt = clock_timestamp() + make_interval(secs => %(backoff)s),
        headers = CASE WHEN %(previous_span)s::text IS NULL THEN headers
                       ELSE coalesce(headers, jsonb_build_object())
                            || jsonb_build_object('previous_span', %(previous_span)s::text) END
    WHERE msg_id = %(msg_id)s AND read_ct = %(read_ct)s
    RETURNING msg_id
)
UPDATE cbus.command
SET status = 'PENDING', attempts = %(read_ct)s, last_error_type = %(error_type)s,
    last_error_code = %(error_code)s, last_error_message = %(error_message)s,
    last_error_details = NULL, updated_at = clock_timestamp()
WHERE domain = %(domain)s AND command_id = %(command_id)s AND EXISTS (SELECT 1 FROM leased)
RETURNING 1

-- name: archive_message
-- Move a message to PGMQ's archive (the troubleshooting queue's payload store); with
-- tracing, its headers name the last attempt's span (previous_span), for `tsq retry`.
-- A keyed message retried from the troubleshooting queue went back under its msg_id
-- (tsq_resend), so its first archived copy may be there already: that one stays.
WITH moved AS (
    DELETE FROM {q} WHERE msg_id = %(msg_id)s AND read_ct = %(read_ct)s
    RETURNING msg_id, read_ct, enqueued_at, vt, message, headers
),
archived AS (
    INSERT INTO {a} (msg_id, read_ct, enqueued_at, vt, message, headers)
    SELECT msg_id, read_ct, enqueued_at, vt, message,
           CASE WHEN %(previous_span)s::text IS NULL THEN headers
                ELSE coalesce(headers, jsonb_build_object())
                     || jsonb_build_object('previous_span', %(previous_span)s::text) END
    FROM moved
    ON CONFLICT DO NOTHING  -- an UPDATE would need a grant the worker role lacks
)
SELECT msg_id FROM moved

-- name: end_command
-- Record how a command ended when it did not complete (troubleshooting, failed, canceled).
UPDATE cbus.command
SET status = %(status)s, attempts = greatest(attempts, %(attempts)s),
    last_error_type = %(error_type)s, last_error_code = %(error_code)s,
    last_error_message = %(error_message)s, last_error_details = %(error_details)s,
    result = coalesce(%(result)s, result),
    msg_id = coalesce(%(msg_id)s, msg_id),
    updated_at = clock_timestamp(),
    finished_at = CASE WHEN %(status)s IN ('COMPLETED', 'FAILED', 'CANCELED')
                       THEN clock_timestamp() END
WHERE domain = %(domain)s AND command_id = %(command_id)s
RETURNING pg_notify(%(done_channel)s, '')

-- name: audit
-- One audit row: an event of a command (worker or operator), with its detail.
INSERT INTO cbus.audit (domain, command_id, event, attempt, operator, detail)
VALUES (%(domain)s, %(command_id)s, %(event)s, %(attempt)s, %(operator)s, %(detail)s)

-- name: extend_lease
-- Renew the leases of messages in flight, and mark their commands IN_PROGRESS: a
-- handler that runs for more than a heartbeat shows as such, while the fast path
-- writes nothing to the log before the outcome.
WITH renewed AS (
    UPDATE {q} SET vt = clock_timestamp() + make_interval(secs => %(seconds)s)
    FROM unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[]) AS g(msg_id, read_ct)
    WHERE {q}.msg_id = g.msg_id AND {q}.read_ct = g.read_ct
    RETURNING {q}.msg_id, {q}.read_ct, {q}.headers ->> 'command_id' AS command_id
)
UPDATE cbus.command AS c
SET status = 'IN_PROGRESS', attempts = renewed.read_ct, msg_id = renewed.msg_id,
    updated_at = clock_timestamp()
FROM renewed
WHERE c.domain = %(domain)s AND c.command_id = renewed.command_id::uuid
  AND c.status = 'PENDING' AND %(mark)s

-- name: due_probe
-- One queue's part of the idle probe, `{limit}` being the domain's position: the
-- worker joins the parts of all its domains with UNION ALL, one statement for all.
SELECT {limit} WHERE EXISTS (SELECT 1 FROM {q} WHERE vt <= clock_timestamp())

-- name: pending
-- Work a worker run with until_idle still waits for: due now or within the horizon,
-- or waiting for a retry (read before); not a message left for a newer worker (not
-- due, its log row says so, and its kind is missing from `known`, the worker's
-- versions by kind, or newer there: a worker that can run it waits for it).
SELECT EXISTS (
    SELECT 1 FROM {q} AS q
    WHERE (q.read_ct > 0 OR q.vt <= clock_timestamp() + make_interval(secs => %(horizon)s))
      AND NOT (q.vt > clock_timestamp() AND EXISTS (
          SELECT 1 FROM cbus.command AS c
          WHERE c.domain = %(domain)s AND c.command_id = cbus.as_uuid(q.headers ->> 'command_id')
            AND c.status = 'PENDING' AND c.last_error_code = %(waiting)s
            AND coalesce(c.version > (%(known)s::jsonb ->> c.kind)::int, true)))
)

-- name: wait_for_newer
-- Leave a message for a newer worker (contract section 8): back to the queue for
-- `delay` seconds, at most what is left of the grace, its read undone (read_ct - 1:
-- not an attempt, so the crash-loop rule never counts the waits), and the log row
-- saying why. Nothing moves once `grace` seconds have passed since it was sent; the
-- age comes back (null: the lease was lost), with whether it moved.
WITH target AS (
    SELECT msg_id, extract(epoch FROM clock_timestamp() - enqueued_at)::float8 AS age
    FROM {q} WHERE msg_id = %(msg_id)s AND read_ct = %(read_ct)s
),
moved AS (
    UPDATE {q} AS q
    SET vt = clock_timestamp() + make_interval(
            secs => greatest(least(%(delay)s::float8, %(grace)s::float8 - t.age), 0.05)),
        read_ct = q.read_ct - 1
    FROM target AS t
    WHERE q.msg_id = t.msg_id AND t.age < %(grace)s::float8
    RETURNING q.msg_id
),
logged AS (
    UPDATE cbus.command
    SET status = 'PENDING', attempts = %(read_ct)s - 1, last_error_type = 'Waiting',
        last_error_code = %(code)s, last_error_message = %(reason)s,
        last_error_details = NULL, updated_at = clock_timestamp()
    WHERE domain = %(domain)s AND command_id = %(command_id)s
      AND status IN ('PENDING', 'IN_PROGRESS') AND EXISTS (SELECT 1 FROM moved)
    RETURNING 1
)
SELECT (SELECT age FROM target), (SELECT count(*) FROM moved)

-- name: send_replies
-- Replies to the reply_to queues of commands that ended. A queue that breaks the
-- naming rule (its reason comes from the worker), does not exist or that this role
-- may not write gets no reply (the command still ends; its result stays in the log)
-- and an audit row says why, so a bad reply_to never makes the handler run again nor
-- fails the statement that ends the command with the rest of its batch.
WITH r AS (
    SELECT r.*, to_regclass(quote_ident('pgmq') || '.' || quote_ident('q_' || r.queue)) AS t
    FROM unnest(%(queues)s::text[], %(messages)s::jsonb[], %(command_ids)s::uuid[],
                %(refused)s::text[]) AS r(queue, message, command_id, refused)
),
known AS (
    SELECT r.*, CASE
        WHEN r.refused IS NOT NULL THEN r.refused
        WHEN r.t IS NULL OR NOT EXISTS (SELECT 1 FROM pgmq.meta m WHERE m.queue_name = r.queue)
            THEN 'the reply queue does not exist'
        WHEN NOT (has_table_privilege(r.t, 'INSERT') AND has_column_privilege(r.t, 'msg_id', 'SELECT'))
            THEN 'the worker may not write to the reply queue'
    END AS reason
    FROM r
),
sent AS (
    SELECT pgmq.send(queue, message, '{"kind": "cbus.Reply"}'::jsonb) AS msg_id
    FROM known WHERE reason IS NULL
),
undeliverable AS (
    INSERT INTO cbus.audit (domain, command_id, event, detail)
    SELECT %(domain)s, command_id, 'reply_undeliverable',
           jsonb_build_object('reply_to', queue, 'reason', reason)
    FROM known WHERE reason IS NOT NULL
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
    WHERE reply_to IS NOT NULL AND reply_to NOT LIKE '%%\_\_commands'
      AND EXISTS (SELECT 1 FROM pgmq.meta m WHERE m.queue_name = counted.reply_to)
      AND has_table_privilege(
          to_regclass(quote_ident('pgmq') || '.' || quote_ident('q_' || reply_to)), 'INSERT')
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
        last_error_message = excluded.last_error_message, last_error_details = NULL,
        updated_at = clock_timestamp()
RETURNING pg_notify(%(done_channel)s, '')

-- name: schema_installed
-- Whether cbus's schema is there at all (a worker checks before it starts).
SELECT to_regclass('cbus.schema_version') IS NOT NULL

-- name: schema_version
-- The installed cbus schema's version (a worker refuses to start on an older one).
SELECT max(version) FROM cbus.schema_version

-- name: stats_queues
-- The command queues PGMQ knows, for `cbus stats` and the console's overview.
SELECT queue_name FROM pgmq.meta WHERE right(queue_name, 10) = '__commands' ORDER BY queue_name

-- name: stats_queue
-- One domain's messages by state: in flight is leased now, delayed waits for its time
-- (sent with a delay, or backing off after a failed attempt, whose log row already
-- counts that attempt); only messages read and not due look their log row up (CASE).
SELECT {domain} AS domain, count(*) AS depth,
       count(*) FILTER (WHERE NOT m.waiting) AS due,
       count(*) FILTER (WHERE m.waiting AND NOT m.leased) AS delayed,
       count(*) FILTER (WHERE m.leased) AS in_flight,
       coalesce(extract(epoch FROM now() - min(m.vt) FILTER (WHERE NOT m.waiting)), 0)::float8
           AS oldest_due_age
FROM (
    SELECT q.vt, q.vt > now() AS waiting,
           CASE WHEN q.vt > now() AND q.read_ct > 0 THEN NOT EXISTS (
               SELECT 1 FROM cbus.command AS c
               WHERE c.domain = {domain}
                 AND c.command_id = cbus.as_uuid(q.headers ->> 'command_id')
                 AND c.status = 'PENDING' AND c.attempts >= q.read_ct
           ) ELSE false END AS leased
    FROM {q} AS q
) AS m

-- name: stats
-- Every domain's numbers in one statement: {queues} is one `stats_queue` per queue
-- (UNION ALL). Commands ended in the last hour, and those whose message waits for a
-- newer worker (PENDING, last_error_code WAITING_FOR_NEWER_WORKER: `_versions.WAITING`),
-- are counted from the log, which has no index on finished_at or status (its updates
-- stay HOT): one scan of cbus.command for both.
WITH queues AS ({queues}),
tsq AS (SELECT domain, count(*) AS n FROM cbus.troubleshooting GROUP BY domain),
ended AS (
    SELECT domain,
           count(*) FILTER (WHERE status = 'COMPLETED'
                            AND finished_at >= now() - interval '1 minute') AS completed_1m,
           count(*) FILTER (WHERE status = 'FAILED'
                            AND finished_at >= now() - interval '1 minute') AS failed_1m,
           count(*) FILTER (WHERE status = 'COMPLETED') AS completed_1h,
           count(*) FILTER (WHERE status = 'FAILED') AS failed_1h,
           count(*) FILTER (WHERE status = 'PENDING') AS waiting_for_newer
    FROM cbus.command
    WHERE (finished_at >= now() - interval '1 hour' AND status IN ('COMPLETED', 'FAILED'))
       OR (status = 'PENDING' AND last_error_code = 'WAITING_FOR_NEWER_WORKER')
    GROUP BY domain
)
SELECT q.domain, q.depth, q.due, q.delayed, q.in_flight, q.oldest_due_age,
       coalesce(t.n, 0) AS troubleshooting,
       coalesce(e.completed_1m, 0) AS completed_1m, coalesce(e.failed_1m, 0) AS failed_1m,
       coalesce(e.completed_1h, 0) AS completed_1h, coalesce(e.failed_1h, 0) AS failed_1h,
       coalesce(e.waiting_for_newer, 0) AS waiting_for_newer
FROM queues AS q
LEFT JOIN tsq AS t USING (domain)
LEFT JOIN ended AS e USING (domain)
ORDER BY q.domain

-- name: worker_missing_grants
-- The privileges a worker needs on its queues and on cbus's tables that the current
-- role lacks, as `PRIVILEGE on TABLE` (none for a table's owner). Queues that do not
-- exist are left to missing_queues.
SELECT n.privilege || ' on ' || n.tab
FROM (
    SELECT 'pgmq.' || quote_ident(p.prefix || q) AS tab, p.privilege
    FROM unnest(%(queues)s::text[]) AS q,
         (VALUES ('q_', 'SELECT'), ('q_', 'UPDATE'), ('q_', 'DELETE'),
                 ('a_', 'SELECT'), ('a_', 'INSERT')) AS p(prefix, privilege)
    UNION ALL
    SELECT t.tab, t.privilege
    FROM (VALUES ('cbus.command', 'SELECT'), ('cbus.command', 'INSERT'),
                 ('cbus.command', 'UPDATE'), ('cbus.audit', 'INSERT'),
                 ('cbus.batch', 'SELECT'), ('cbus.batch', 'UPDATE'),
                 ('pgmq.meta', 'SELECT')) AS t(tab, privilege)
) AS n
WHERE to_regclass(n.tab) IS NOT NULL AND NOT has_table_privilege(n.tab, n.privilege)
ORDER BY 1

-- name: rls_applies
-- Whether row-level security holds the current role to the domains cbus db roles
-- granted it (not for the owner of cbus.command, a superuser or a BYPASSRLS role).
-- Also the current role's name, for messages.
SELECT to_regclass('cbus.domain_grant') IS NOT NULL AND c.relrowsecurity
       AND NOT pg_has_role(c.relowner, 'USAGE') AND NOT (r.rolsuper OR r.rolbypassrls),
       current_user
FROM pg_class c, pg_roles r
WHERE c.oid = 'cbus.command'::regclass AND r.rolname = current_user

-- name: worker_missing_domains
-- The domains among those given that the current role may not consume (run when
-- rls_applies).
SELECT d FROM unnest(%(domains)s::text[]) AS d
WHERE d NOT IN (SELECT cbus.my_domains('consume'))
ORDER BY d

-- name: role_exists
-- Whether a role exists.
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s)

-- name: create_role
-- A role for cbus db roles; {login} is LOGIN or NOLOGIN.
CREATE ROLE {role} {login}

-- name: grant_schemas
-- The schemas every cbus role works in.
GRANT USAGE ON SCHEMA cbus, pgmq TO {role}

-- name: grant_table
-- Table privileges ({privileges}: a fixed list of keywords, maybe with columns).
GRANT {privileges} ON TABLE {table} TO {role}

-- name: grant_sequence
-- A queue's msg_id sequence, for the roles that insert messages.
GRANT USAGE ON SEQUENCE {sequence} TO {role}

-- name: grant_functions
-- The functions the policies and the worker's lease call.
GRANT EXECUTE ON FUNCTION cbus.my_domains(text), cbus.as_uuid(text), cbus.as_int(text) TO {role}

-- name: queue_sequence
-- The sequence behind a queue table's msg_id (identity column).
SELECT pg_get_serial_sequence(%(table)s, 'msg_id')

-- name: record_domain_grant
-- What row-level security lets a role do in a domain; a row back when it is new.
INSERT INTO cbus.domain_grant (grantee, domain, access)
VALUES (%(role)s, %(domain)s, %(access)s)
ON CONFLICT DO NOTHING
RETURNING 1

-- name: get_command
-- A command's log row as get_command returns it, and whether its domain's queue
-- table exists (the lease check below reads it).
SELECT domain, command_id, kind, version, status, attempts, max_attempts, msg_id,
       correlation_id, reply_to, batch_id, causation_id, last_error_type, last_error_code,
       last_error_message, last_error_details, result, created_at, updated_at, finished_at,
       to_regclass(quote_ident('pgmq') || '.' || quote_ident('q_' || domain || '__commands'))
           IS NOT NULL AS queued
FROM cbus.command
WHERE domain = %(domain)s AND command_id = %(command_id)s

-- name: command_leased
-- Whether a worker holds a PENDING command's message now, so get_command shows it
-- IN_PROGRESS without a write on the worker's hot path: read (read_ct > 0), its lease
-- not run out (vt ahead), and not waiting for a retry (retry_later records the attempt
-- that failed, with its error). By msg_id when the log has it, else among the
-- messages whose vt is ahead (PGMQ's vt index: `vt > now()` can use it, and
-- clock_timestamp(), which cannot, still decides in a long transaction).
SELECT EXISTS (
    SELECT 1 FROM {q} AS q
    WHERE q.msg_id = %(msg_id)s AND q.vt > clock_timestamp() AND q.read_ct > 0
      AND (q.read_ct > %(attempts)s OR NOT %(failed)s)
) OR (%(msg_id)s::bigint IS NULL AND EXISTS (
    SELECT 1 FROM {q} AS q
    WHERE q.vt > now() AND q.vt > clock_timestamp() AND q.read_ct > 0
      AND q.headers ->> 'command_id' = %(command_id)s::text
      AND (q.read_ct > %(attempts)s OR NOT %(failed)s)
)) AS leased

-- name: pgmq_probe
-- What PGMQ the server has: the extension installed and available, whether a pgmq.send
-- of any signature exists (a plain-SQL install, which records no version), whether it
-- takes headers (1.5 on), and pgmq.format_table_name (1.4 on).
SELECT (SELECT extversion FROM pg_extension WHERE extname = 'pgmq'),
       (SELECT default_version FROM pg_available_extensions WHERE name = 'pgmq'),
       EXISTS (SELECT FROM pg_proc WHERE pronamespace = to_regnamespace('pgmq')
               AND proname = 'send'),
       to_regprocedure('pgmq.send(text, jsonb, jsonb, integer)') IS NOT NULL,
       to_regprocedure('pgmq.format_table_name(text, text)') IS NOT NULL

-- name: record_command_type
-- Record (or replace) one command version's JSON schemas; result_schema NULL: no result.
INSERT INTO cbus.command_type (kind, version, domain, payload_schema, result_schema)
VALUES (%(kind)s, %(version)s, %(domain)s, %(payload_schema)s, %(result_schema)s)
ON CONFLICT (kind, version) DO UPDATE
SET domain = excluded.domain, payload_schema = excluded.payload_schema,
    result_schema = excluded.result_schema, installed_at = excluded.installed_at

-- name: command_result_schema
-- The result schema install_domain recorded for a command version (no row: unknown).
SELECT result_schema FROM cbus.command_type WHERE kind = %(kind)s AND version = %(version)s

-- name: batch_insert
-- Record a batch sent by send_many, for its completion reply.
INSERT INTO cbus.batch (batch_id, total, reply_to, correlation_id)
VALUES (%s, %s, %s, %s)

-- name: command_by_id
-- The whole log row of one command (cbus.get_command, the troubleshooting plans).
SELECT domain, command_id, kind, version, status, attempts, max_attempts, msg_id,
       correlation_id, reply_to, batch_id, causation_id, last_error_type, last_error_code,
       last_error_message, last_error_details, result, created_at, updated_at, finished_at
FROM cbus.command WHERE domain = %s AND command_id = %s

-- name: command_trace
-- The log rows of every command sharing a correlation_id, oldest first.
SELECT domain, command_id, kind, version, status, attempts, max_attempts, msg_id,
       correlation_id, reply_to, batch_id, causation_id, last_error_type, last_error_code,
       last_error_message, last_error_details, result, created_at, updated_at, finished_at
FROM cbus.command WHERE correlation_id = %s ORDER BY created_at, command_id

-- name: audit_command
-- The status and times of one command, for its audit trail.
SELECT status, created_at, finished_at FROM cbus.command
WHERE domain = %(domain)s AND command_id = %(command_id)s

-- name: audit_rows
-- The audit events of one command, in the order they happened.
SELECT event, at, attempt, operator, detail FROM cbus.audit
WHERE domain = %(domain)s AND command_id = %(command_id)s
ORDER BY id

-- name: tsq_list
-- A page of the troubleshooting queue, newest first ({filters}: AND clauses; {limit}:
-- page size + 1). cbus.troubleshooting holds the queue's members (a trigger keeps it),
-- so that no index on cbus.command covers its status and the worker's updates stay HOT.
SELECT * FROM (
    SELECT t.domain, t.command_id, t.kind, c.attempts, c.max_attempts, c.last_error_type,
           c.last_error_code, c.last_error_message, t.since AS updated_at
    FROM cbus.troubleshooting t
    JOIN cbus.command c ON c.domain = t.domain AND c.command_id = t.command_id
) AS tsq
WHERE true{filters}
ORDER BY updated_at DESC, domain DESC, command_id DESC
LIMIT {limit}

-- name: tsq_tables
-- Whether the domain's queue and archive tables exist.
SELECT to_regclass(%(q)s) IS NOT NULL AS q, to_regclass(%(a)s) IS NOT NULL AS a

-- name: tsq_message_by_msg_id
-- The message with this msg_id in the table {t} (the queue or its archive).
SELECT msg_id, message::text AS message, headers::text AS headers FROM {t}
WHERE msg_id = %(msg_id)s

-- name: tsq_message_by_header
-- When the log has no msg_id for the command (sent, not received yet): match the
-- headers. A scan of the table {t}, so only then.
SELECT msg_id, message::text AS message, headers::text AS headers FROM {t}
WHERE replace(lower(headers ->> 'command_id'), '-', '') = %(hex)s
ORDER BY msg_id DESC
LIMIT 1

-- name: tsq_status
-- A command's status and the last operator action on it.
SELECT c.status, c.kind, c.version, a.event, a.operator, a.at
FROM cbus.command AS c
LEFT JOIN LATERAL (
    SELECT event, operator, at FROM cbus.audit
    WHERE domain = c.domain AND command_id = c.command_id AND operator IS NOT NULL
    ORDER BY id DESC
    LIMIT 1
) AS a ON true
WHERE c.domain = %(domain)s AND c.command_id = %(command_id)s

-- name: tsq_claim
-- The gate: only one transaction can move a command out of the troubleshooting queue.
-- msg_id and attempts come back unchanged, for the retry to find the message.
UPDATE cbus.command
SET status = %(status)s, updated_at = clock_timestamp(),
    finished_at = CASE WHEN %(status)s = 'PENDING' THEN NULL ELSE clock_timestamp() END,
    result = CASE WHEN %(status)s = 'COMPLETED' THEN %(result)s ELSE result END,
    last_error_type = CASE WHEN %(status)s = 'COMPLETED' THEN NULL ELSE last_error_type END,
    last_error_code = CASE WHEN %(status)s = 'COMPLETED' THEN NULL ELSE last_error_code END,
    last_error_message = CASE WHEN %(status)s = 'COMPLETED' THEN NULL
                              ELSE last_error_message END,
    last_error_details = CASE WHEN %(status)s = 'COMPLETED' THEN NULL
                              ELSE last_error_details END
WHERE domain = %(domain)s AND command_id = %(command_id)s
  AND status = 'IN_TROUBLESHOOTING_QUEUE'
RETURNING msg_id, attempts, kind, correlation_id, reply_to, batch_id

-- name: notify_done
-- Wakes `cbus.wait_for` callers once the command's end commits.
SELECT pg_notify(%(channel)s, '')

-- name: tsq_resend
-- Send the archived message again, as a new message of the queue; a message with an
-- ordering_key goes back under its own msg_id instead, so that it keeps its place
-- ahead of the commands of its key sent after it (ADR 0011).
WITH archived AS (
    SELECT msg_id, message, headers FROM {a} WHERE msg_id = %(msg_id)s
),
in_place AS (
    INSERT INTO {q} (msg_id, vt, message, headers) OVERRIDING SYSTEM VALUE
    SELECT ar.msg_id, clock_timestamp(), ar.message, ar.headers FROM archived AS ar
    WHERE ar.headers ->> 'ordering_key' IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM {q} AS q WHERE q.msg_id = ar.msg_id)
    RETURNING msg_id
)
SELECT coalesce(i.msg_id, s.msg_id) AS msg_id, pg_notify(%(channel)s, '')
FROM archived AS ar
LEFT JOIN in_place AS i ON true
LEFT JOIN LATERAL (
    SELECT pgmq.send(%(queue)s, ar.message, ar.headers) AS msg_id WHERE i.msg_id IS NULL
) AS s ON true

-- name: tsq_reset
-- Attempts start again from 0; the worker's read records the new msg_id on receipt.
UPDATE cbus.command SET attempts = 0, msg_id = NULL
WHERE domain = %(domain)s AND command_id = %(command_id)s

-- name: testing_sent
-- cbus.testing.sent: the queue's messages of one kind, as the caller's transaction sees them.
SELECT msg_id, message, headers FROM {q} WHERE headers ->> 'kind' = %(kind)s ORDER BY msg_id

-- name: testing_queued_ids
-- cbus.testing.run_pending: the command_ids queued (committed) before a run.
SELECT headers ->> 'command_id' FROM {q} ORDER BY msg_id

-- name: testing_touched
-- cbus.testing.run_pending: the commands of these domains a run started or ended.
SELECT domain, command_id FROM cbus.command
WHERE domain = ANY(%(domains)s) AND updated_at >= %(since)s
ORDER BY created_at, command_id

-- name: testing_now
-- cbus.testing.run_pending: the server's clock, before a run.
SELECT clock_timestamp()

-- ==== the last SQL text out of the Python modules (issue 13) ====

-- name: install_lock
-- cbus.install, install_domain and `cbus db roles`: one installer at a time (%s: the lock key).
SELECT pg_advisory_xact_lock(%s)

-- name: install_lock_literal
-- install_domain's pipeline: the install lock, its key {key} a literal (no parameters).
SELECT pg_advisory_xact_lock({key})

-- name: create_pgmq_extension
-- cbus.install: PGMQ as an extension, when the server offers a recent enough one.
CREATE EXTENSION IF NOT EXISTS pgmq

-- name: create_queue
-- install_domain: the domain's command queue ({queue}: its name, a literal).
SELECT pgmq.create({queue})

-- name: health_check
-- The metrics server's /healthz: whether PostgreSQL answers.
SELECT 1

-- name: listen
-- Wake-ups: the worker's listener and `wait_for` listen on a channel ({channel}: an identifier).
LISTEN {channel}

-- name: unlisten
-- `wait_for`, done: stop listening on the channel ({channel}: an identifier).
UNLISTEN {channel}

-- name: handler_statement_timeout
-- The handlers' connection: a statement timeout in ms ({ms}: a literal), as a SET so the
-- user's own options (DSN, PGOPTIONS, service file) stay as they are.
SET statement_timeout = {ms}

-- name: testing_create_database
-- cbus's pytest plugin: a database ({}: its name, an identifier).
CREATE DATABASE {}

-- name: testing_copy_database
-- cbus's pytest plugin: a test's database ({} {}: its name, the template's name).
CREATE DATABASE {} TEMPLATE {}

-- name: testing_drop_database
-- cbus's pytest plugin: a test's database, gone even with connections open.
DROP DATABASE IF EXISTS {} WITH (FORCE)

-- The filters of tsq_list, each one AND clause (only the filters asked for are joined in,
-- so each query keeps the plan its index gives: troubleshooting_recent, troubleshooting_kind).

-- name: tsq_list_domain
-- tsq_list's filter: one domain.
AND domain = %(domain)s

-- name: tsq_list_kind
-- tsq_list's filter: a full kind (`orders.CreateOrder`).
AND kind = %(kind)s

-- name: tsq_list_short_kind
-- tsq_list's filter: a kind without its domain (`CreateOrder`), in any domain.
AND kind = domain || '.' || %(kind)s

-- name: tsq_list_error_code
-- tsq_list's filter: the last error code.
AND last_error_code = %(error_code)s

-- name: tsq_list_after
-- tsq_list's filter: the entries after a cursor (keyset paging, newest first).
AND (updated_at, domain, command_id) < (%(after_at)s, %(after_domain)s, %(after_id)s)

-- name: batch_status
-- cbus.batch_status: a batch's progress, counted from the command log (no counter row).
SELECT b.batch_id, b.total, b.created_at, b.completed_at,
       count(*) FILTER (WHERE c.status = 'PENDING') AS pending,
       count(*) FILTER (WHERE c.status = 'IN_PROGRESS') AS in_progress,
       count(*) FILTER (WHERE c.status = 'COMPLETED') AS completed,
       count(*) FILTER (WHERE c.status = 'FAILED') AS failed,
       count(*) FILTER (WHERE c.status = 'IN_TROUBLESHOOTING_QUEUE') AS in_troubleshooting,
       count(*) FILTER (WHERE c.status = 'CANCELED') AS canceled
FROM cbus.batch b LEFT JOIN cbus.command c ON c.batch_id = b.batch_id
WHERE b.batch_id = %s
GROUP BY b.batch_id

-- The worker's transaction control, sent bare (libpq's PQexec, `_acompat.execute_bare`).

-- name: tx_begin
-- A batch's transaction, opened before its first statement.
BEGIN

-- name: tx_commit
-- A batch's transaction, committed after its acknowledgement.
COMMIT

-- name: tx_rollback
-- A batch's transaction, abandoned.
ROLLBACK

-- name: handler_savepoint
-- Before a later handler's first statement in a batch's transaction.
SAVEPOINT cbus_handler

-- name: handler_begin_savepoint
-- Before the first handler's first statement: the transaction and its savepoint, one round trip.
BEGIN; SAVEPOINT cbus_handler

-- name: handler_rollback_savepoint
-- A failing handler's writes undone, the batch's others kept.
ROLLBACK TO SAVEPOINT cbus_handler
-- ==== rate ====

-- name: rate_take
-- Rate limits (ADR 0012): right after a lease, for the leased commands of rate-limited
-- kinds only, take one start per command from its bucket (a GCRA row per domain and
-- bucket: one start allowed when `tat` is due, then `tat` moves one interval on; no
-- burst beyond that one, so at most rate x T + 1 start in any T seconds, whatever
-- the number of workers: the upsert holds the row's lock). The commands over the
-- limit go back to the queue, their read undone (read_ct - 1, and the log's attempts
-- for a command recorded on this receipt): not an attempt, still PENDING. One that
-- came a little early for its turn (the token due within half an interval) waits for
-- it at `tat`; the others take the slots from `queued_until` on, so a backlog is
-- spread over the slots to come, not read again at every token. Slots are 1.25
-- intervals apart: a command comes a few ms after its slot (its lease), and tokens
-- are spaced from when they are taken, so slots one interval apart ran ahead of the
-- tokens, and every command came early (a backlog drains at 80% of the limit, the
-- margin absorbing up to a quarter interval of lateness per start). Buckets are locked
-- in name order: two workers cannot deadlock. Returns the msg_ids held back and the
-- seconds until the first of them is due.
WITH g AS (
    SELECT * FROM unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[], %(command_ids)s::uuid[],
                         %(buckets)s::text[], %(intervals)s::float8[])
         WITH ORDINALITY AS g(msg_id, read_ct, command_id, bucket, interval_s, i)
),
want AS (
    SELECT bucket, min(interval_s) AS interval_s, count(*)::int AS n FROM g GROUP BY bucket
),
taken AS (
    INSERT INTO cbus.rate_bucket AS r (domain, bucket, interval_s, tat, queued_until, granted,
                                       updated_at)
    SELECT %(domain)s, w.bucket, w.interval_s,
           clock_timestamp() + make_interval(secs => w.interval_s),
           clock_timestamp() + make_interval(secs => w.interval_s + w.interval_s * 1.25 * (w.n - 1)),
           1,
           clock_timestamp()
    FROM want AS w ORDER BY w.bucket
    -- A new bucket starts one now; an existing one when its `tat` is due. queued_until:
    -- past the slots the held back take (all but the one started or waiting at tat).
    ON CONFLICT (domain, bucket) DO UPDATE SET
        -- One clock reading, taken once the row is locked (a reading from before a wait
        -- for another worker's take would be stale: two starts less than an interval
        -- apart), used by every column (SET expressions run in no set order).
        (interval_s, granted, tat, queued_until, updated_at) = (
            SELECT excluded.interval_s, d.go::int,
                   CASE WHEN d.go THEN c.now + make_interval(secs => excluded.interval_s)
                        ELSE r.tat END,
                   CASE WHEN d.go
                        THEN greatest(r.queued_until,
                                      c.now + make_interval(secs => excluded.interval_s))
                        WHEN r.tat - c.now < make_interval(secs => excluded.interval_s / 2)
                        THEN greatest(r.queued_until,
                                      r.tat + make_interval(secs => excluded.interval_s))
                        ELSE greatest(r.queued_until, r.tat)
                             + make_interval(secs => excluded.interval_s * 1.25)
                   END
                   + make_interval(secs => excluded.interval_s * 1.25 * (w.n - 1)),
                   c.now
            FROM (SELECT clock_timestamp() AS now) AS c
            CROSS JOIN LATERAL (SELECT r.tat <= c.now AS go) AS d
            JOIN want AS w ON w.bucket = excluded.bucket
        )
    RETURNING r.bucket, r.granted, r.interval_s, r.tat, r.queued_until,
              r.granted = 0 AND r.tat - r.updated_at < make_interval(secs => r.interval_s / 2)
                  AS early
),
ranked AS (
    SELECT g.*, row_number() OVER (PARTITION BY g.bucket ORDER BY g.i) AS rank FROM g
),
held AS (  -- the last held back of a bucket takes the slot before queued_until, and so on
    SELECT r.msg_id, r.read_ct, r.command_id,
           CASE WHEN t.early AND r.rank = 1 THEN t.tat
                ELSE t.queued_until - make_interval(secs => t.interval_s * 1.25 * (w.n - r.rank + 1))
           END AS due
    FROM ranked AS r JOIN taken AS t USING (bucket) JOIN want AS w USING (bucket)
    WHERE r.rank > t.granted
),
back AS (
    UPDATE {q} AS q SET vt = h.due, read_ct = q.read_ct - 1
    FROM held AS h
    WHERE q.msg_id = h.msg_id AND q.read_ct = h.read_ct
    RETURNING q.msg_id
),
unread AS (
    UPDATE cbus.command AS c SET attempts = h.read_ct - 1
    FROM held AS h
    WHERE c.domain = %(domain)s AND c.command_id = h.command_id AND c.attempts >= h.read_ct
      AND c.status IN ('PENDING', 'IN_PROGRESS')
)
SELECT h.msg_id,
       extract(epoch FROM h.due - clock_timestamp())::float8 AS wait
FROM held AS h
ORDER BY h.due

-- name: schedule_seen
-- A worker's scheduler at start: record a schedule first seen now (nothing from before
-- it is sent), or bring its cron, timezone, command and catch_up up to date.
INSERT INTO cbus.schedule AS s (domain, name, cron, timezone, command, catch_up, first_seen)
VALUES (%(domain)s, %(name)s, %(cron)s, %(timezone)s, %(command)s, %(catch_up)s, %(now)s)
ON CONFLICT (domain, name) DO UPDATE
    SET cron = excluded.cron, timezone = excluded.timezone, command = excluded.command,
        catch_up = excluded.catch_up
    WHERE (s.cron, s.timezone, s.command, s.catch_up)
          IS DISTINCT FROM (excluded.cron, excluded.timezone, excluded.command, excluded.catch_up)

-- name: schedule_lock
-- The schedule's row, locked for the transaction that sends its firings; no row when
-- another worker holds it (it fires them: this one looks again later).
SELECT first_seen, last_fired FROM cbus.schedule
WHERE domain = %(domain)s AND name = %(name)s
FOR UPDATE SKIP LOCKED

-- name: schedule_fired
-- The newest firing passed, sent or (beyond catch_up) skipped, in the sending transaction.
UPDATE cbus.schedule SET last_fired = %(fired)s WHERE domain = %(domain)s AND name = %(name)s

-- name: stats_schedules_present
-- `cbus stats` on a database installed before schema version 6 shows no schedules.
SELECT to_regclass('cbus.schedule') IS NOT NULL AS ok

-- name: stats_schedules
-- `cbus stats`: every schedule a worker has seen (the next firing is computed from its
-- cron by the caller).
SELECT domain, name, cron, timezone, command, catch_up, first_seen, last_fired
FROM cbus.schedule
WHERE %(domain)s::text IS NULL OR domain = %(domain)s
ORDER BY domain, name
-- ==== ordering and priority (contract section 13, ADR 0011) ====

-- name: lease_priority
-- The lease of `read` for a domain that uses priorities, in place of its first CTE
-- (`_queries` swaps it in; like every lease variant it returns `vt` and scans from the
-- head, without `read`'s %(after)s start): due messages, higher `priority` header first (no header:
-- 5), then earliest-due. Single digits sort as text, so the expression needs no cast
-- that a malformed header could fail; the queue's `cbus_prio` index serves it.
WITH leasable AS (
    SELECT msg_id, vt FROM {q}
    WHERE vt <= clock_timestamp()
    ORDER BY (coalesce(headers ->> 'priority', '5') COLLATE "C") DESC, vt
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
),

-- name: lease_keyed
-- The lease of `read` for a domain with an `ordering_key`: a keyed message is
-- leasable only as the head of its key, the one with the lowest msg_id in the queue
-- (a predecessor leased, backing off before a retry, delayed, or waiting for a newer
-- worker holds the key), and only while no archived message of its key has its
-- command in the troubleshooting queue. Each candidate costs two index probes (the
-- queue's and the archive's `cbus_key`); messages without a key lease as usual.
-- Consumers racing for one key cannot both win: the head is locked (SKIP LOCKED),
-- and its successors see it in their snapshot until its acknowledgement commits.
-- `_queries` derives `lease_keyed_priority` from it: higher priorities first, as
-- `lease_priority` orders.
WITH leasable AS (
    SELECT l.msg_id, l.vt FROM {q} AS l
    WHERE l.vt <= clock_timestamp()
      AND (l.headers ->> 'ordering_key' IS NULL OR (
          NOT EXISTS (
              SELECT 1 FROM {q} AS e
              WHERE e.headers ->> 'ordering_key' = l.headers ->> 'ordering_key'
                AND e.msg_id < l.msg_id)
          AND NOT EXISTS (
              SELECT 1 FROM {a} AS b
              JOIN cbus.command AS c
                ON c.domain = %(domain)s AND c.command_id = cbus.as_uuid(b.headers ->> 'command_id')
              WHERE b.headers ->> 'ordering_key' = l.headers ->> 'ordering_key'
                AND b.msg_id < l.msg_id AND c.status = 'IN_TROUBLESHOOTING_QUEUE')))
    ORDER BY l.vt
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
),

-- name: index_priority
-- The order of `lease_priority` (install_domain, for domains that use priorities).
CREATE INDEX IF NOT EXISTS {name}
    ON {q} ((coalesce(headers ->> 'priority', '5') COLLATE "C") DESC, vt)

-- name: index_ordering_key
-- A key's messages by msg_id: the head probe of `lease_keyed`.
CREATE INDEX IF NOT EXISTS {name}
    ON {q} ((headers ->> 'ordering_key'), msg_id)
    WHERE (headers ->> 'ordering_key') IS NOT NULL

-- name: index_ordering_key_archive
-- A key's archived messages by msg_id: `lease_keyed` asks whether an earlier one is
-- in troubleshooting (`b.msg_id < l.msg_id` keeps that a probe per candidate: a
-- hashed subplan would read the whole archive, which only grows).
CREATE INDEX IF NOT EXISTS {name}
    ON {a} ((headers ->> 'ordering_key'), msg_id)
    WHERE (headers ->> 'ordering_key') IS NOT NULL

-- name: stats_key_waiting
-- One queue's part of `cbus stats`'s second statement (UNION ALL, as stats_queue):
-- the messages held back because an earlier command of their key is in the
-- troubleshooting queue (a command set aside keeps its archived msg_id in the log).
-- Starts from the troubleshooting queue, so a domain without keys reads no queue row.
SELECT {domain} AS domain, count(*) AS key_waiting FROM {q} AS l
WHERE l.headers ->> 'ordering_key' IN (
    SELECT b.headers ->> 'ordering_key'
    FROM cbus.troubleshooting AS t
    JOIN cbus.command AS c ON c.domain = t.domain AND c.command_id = t.command_id
    JOIN {a} AS b ON b.msg_id = c.msg_id
    WHERE t.domain = {domain} AND b.headers ->> 'ordering_key' IS NOT NULL)

-- name: pending_keyed_condition
-- What `pending` also asks of a message in a keyed domain (`_queries` appends it):
-- not held back behind a command of its key in the troubleshooting queue, which only
-- an operator moves, so `run(until_idle=True)` does not wait for it.
      AND NOT (q.read_ct = 0 AND EXISTS (
          SELECT 1 FROM {a} AS b
          JOIN cbus.command AS c
            ON c.domain = %(domain)s AND c.command_id = cbus.as_uuid(b.headers ->> 'command_id')
          WHERE b.headers ->> 'ordering_key' = q.headers ->> 'ordering_key'
            AND b.msg_id < q.msg_id AND c.status = 'IN_TROUBLESHOOTING_QUEUE'))
-- ==== retention ====

-- name: record_retention
-- The retention in effect for a kind of a domain (kind '': the domain's own), in seconds.
INSERT INTO cbus.retention (domain, kind, completed, failed, canceled, audit, archive)
VALUES (%(domain)s, %(kind)s, %(completed)s, %(failed)s, %(canceled)s, %(audit)s, %(archive)s)
ON CONFLICT (domain, kind) DO UPDATE
    SET completed = excluded.completed, failed = excluded.failed, canceled = excluded.canceled,
        audit = excluded.audit, archive = excluded.archive, installed_at = clock_timestamp()

-- name: prune_try_lock
-- One pruner per database: a session lock on the pruner's own connection.
SELECT pg_try_advisory_lock(%(key)s)

-- name: prune_lock
-- `cbus db prune` waits for a worker's pass to end.
SELECT pg_advisory_lock(%(key)s)

-- name: prune_unlock
-- The pruner's lock given back, at the end of its pass.
SELECT pg_advisory_unlock(%(key)s)

-- name: prune_domains
-- The domains whose retention is recorded or whose queue exists.
SELECT domain FROM cbus.retention
UNION
SELECT left(queue_name, -10) FROM pgmq.meta WHERE right(queue_name, 10) = '__commands'
ORDER BY 1

-- name: prune_retention
-- The recorded retention of a domain, per kind ('' the domain's own).
SELECT kind, completed, failed, canceled, audit, archive FROM cbus.retention
WHERE domain = %(domain)s

-- name: prune_commands
-- One batch of a domain's command log, oldest first from the cursor (created_at,
-- command_id: a command ends after it was created, so none created after `before`
-- can be due); deletes the ended ones past their kind's retention (dry run: counts
-- them). The DELETE checks status and end again: a row that changed since is kept.
WITH batch AS (
    SELECT c.command_id, c.created_at, c.kind, c.status, c.finished_at
    FROM cbus.command AS c
    WHERE c.domain = %(domain)s AND c.created_at < now() - make_interval(secs => %(min_seconds)s)
      AND (c.created_at, c.command_id) > (%(after_at)s::timestamptz, %(after_id)s::uuid)
    ORDER BY c.created_at, c.command_id
    LIMIT {limit}
),
doomed AS (
    SELECT b.command_id, b.status, b.finished_at
    FROM batch AS b
    LEFT JOIN cbus.retention AS k ON k.domain = %(domain)s AND k.kind = b.kind
    LEFT JOIN cbus.retention AS d ON d.domain = %(domain)s AND d.kind = ''
    WHERE b.status IN ('COMPLETED', 'FAILED', 'CANCELED')
      AND b.finished_at < now() - make_interval(secs => CASE b.status
            WHEN 'COMPLETED' THEN coalesce(k.completed, d.completed, %(completed)s)
            WHEN 'FAILED' THEN coalesce(k.failed, d.failed, %(failed)s)
            ELSE coalesce(k.canceled, d.canceled, %(canceled)s) END)
),
gone AS (
    DELETE FROM cbus.command AS c
    USING doomed AS g
    WHERE NOT %(dry_run)s AND c.domain = %(domain)s AND c.command_id = g.command_id
      AND c.status = g.status AND c.finished_at = g.finished_at
    RETURNING c.status
),
counted AS (
    SELECT status FROM gone
    UNION ALL
    SELECT status FROM doomed WHERE %(dry_run)s
),
last AS (
    SELECT created_at, command_id FROM batch ORDER BY created_at DESC, command_id DESC LIMIT 1
)
SELECT (SELECT created_at FROM last), (SELECT command_id FROM last),
       (SELECT count(*) FROM batch),
       (SELECT count(*) FROM counted WHERE status = 'COMPLETED'),
       (SELECT count(*) FROM counted WHERE status = 'FAILED'),
       (SELECT count(*) FROM counted WHERE status = 'CANCELED')

-- name: prune_audit
-- One batch of audit rows, an id range from the first id after the cursor: the rows
-- of ended or pruned commands past their audit retention go (a pruned command's
-- kind is unknown: the longest of its domain's). Rows of pending, in-progress and
-- troubleshooting commands stay. `newest`: every row of the batch is too new for any
-- retention (ids follow time), so the walk ends.
WITH start AS (
    SELECT min(id) AS id FROM cbus.audit WHERE id > %(after)s
),
batch AS (
    SELECT a.id, a.domain, a.command_id, a.at
    FROM cbus.audit AS a, start AS s
    WHERE a.id >= s.id AND a.id < s.id + {limit}
),
doomed AS (
    SELECT b.id, b.domain
    FROM batch AS b
    LEFT JOIN cbus.command AS c ON c.domain = b.domain AND c.command_id = b.command_id
    LEFT JOIN cbus.retention AS k ON k.domain = b.domain AND k.kind = c.kind
    LEFT JOIN cbus.retention AS d ON d.domain = b.domain AND d.kind = ''
    LEFT JOIN (SELECT domain, max(audit) AS audit FROM cbus.retention GROUP BY domain) AS m
        ON m.domain = b.domain
    WHERE (%(domain)s::text IS NULL OR b.domain = %(domain)s)
      AND (c.status IS NULL OR c.status IN ('COMPLETED', 'FAILED', 'CANCELED'))
      AND b.at < now() - make_interval(secs => CASE WHEN c.status IS NULL
            THEN coalesce(m.audit, %(audit)s) ELSE coalesce(k.audit, d.audit, %(audit)s) END)
),
gone AS (
    DELETE FROM cbus.audit AS a USING doomed AS g
    WHERE NOT %(dry_run)s AND a.id = g.id
    RETURNING a.domain
),
counted AS (
    SELECT domain FROM gone
    UNION ALL
    SELECT domain FROM doomed WHERE %(dry_run)s
)
SELECT (SELECT max(id) FROM batch),
       coalesce((SELECT bool_and(at >= now() - make_interval(secs => %(min_seconds)s))
                 FROM batch), true),
       coalesce((SELECT jsonb_object_agg(domain, n)
                 FROM (SELECT domain, count(*) AS n FROM counted GROUP BY domain) AS x), jsonb_build_object())

-- name: prune_archive_exists
-- Whether a domain's PGMQ archive table exists (a queue dropped by hand has none).
SELECT to_regclass(%(a)s) IS NOT NULL

-- name: prune_archive
-- One batch of a domain's PGMQ archive ({a}), oldest first from the cursor: messages
-- past their kind's archive retention go, unless their command is pending, in
-- progress or in the troubleshooting queue.
WITH batch AS (
    SELECT a.msg_id, a.archived_at, a.headers
    FROM {a} AS a
    WHERE a.archived_at < now() - make_interval(secs => %(min_seconds)s)
      AND (a.archived_at, a.msg_id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)
    ORDER BY a.archived_at, a.msg_id
    LIMIT {limit}
),
doomed AS (
    SELECT b.msg_id
    FROM batch AS b
    LEFT JOIN cbus.command AS c
        ON c.domain = %(domain)s AND c.command_id = cbus.as_uuid(b.headers ->> 'command_id')
    LEFT JOIN cbus.retention AS k ON k.domain = %(domain)s AND k.kind = b.headers ->> 'kind'
    LEFT JOIN cbus.retention AS d ON d.domain = %(domain)s AND d.kind = ''
    WHERE (c.status IS NULL OR c.status IN ('COMPLETED', 'FAILED', 'CANCELED'))
      AND b.archived_at < now() - make_interval(secs => coalesce(k.archive, d.archive,
                                                                 %(archive)s))
),
gone AS (
    DELETE FROM {a} AS a USING doomed AS g
    WHERE NOT %(dry_run)s AND a.msg_id = g.msg_id
    RETURNING 1
),
last AS (
    SELECT archived_at, msg_id FROM batch ORDER BY archived_at DESC, msg_id DESC LIMIT 1
)
SELECT (SELECT archived_at FROM last), (SELECT msg_id FROM last), (SELECT count(*) FROM batch),
       CASE WHEN %(dry_run)s THEN (SELECT count(*) FROM doomed)
            ELSE (SELECT count(*) FROM gone) END
