-- Named statements against the schema rowcast, for the code outside the migrations. Loaded by
-- rowcast.db.queries: each statement starts with a `-- name: NAME` line; the comment lines
-- after it say what it does. Parameters use psycopg's %(name)s style.

-- name: prune_lock
-- One prune at a time across the CLI and every notifier replica: a transaction-scoped advisory
-- lock. The notifier tries it and skips the round when it is taken; `rowcast prune` waits.
SELECT pg_try_advisory_xact_lock(1919907683) AS locked;

-- name: prune_lock_wait
SELECT pg_advisory_xact_lock(1919907683);

-- name: prune
-- Remove the log rows older than the age that every running snapshot already sees; the highest
-- xid ever pruned comes back so that older cursors get resync_required.
SELECT removed, pruned_xid::text AS pruned_xid FROM rowcast.prune(make_interval(secs => %(seconds)s));

-- name: wake_mode
SELECT rowcast.wake_mode() AS mode;

-- name: set_wake_mode
-- Only the owner may change it (the function checks); returns the mode now in force.
SELECT rowcast.set_wake_mode(%(mode)s) AS mode;

-- The notifier's statements. {{log_columns}} stands for the named fragment log_columns.

-- name: log_columns
-- What a read selects of a change (LogRow in rowcast/notifier/events.py, in this order).
id, xid::text, schema_name, table_name, op, pk::text, json_build_object('id', id, 'xid', xid::text, 'at', at, 'schema', schema_name, 'table', table_name, 'op', op, 'pk', pk, 'row', "row", 'old', old, 'actor', json_build_object('user', db_user, 'app', application_name, 'addr', host(client_addr), 'actor', actor, 'request_id', request_id))::text, to_json(at)::text

-- name: presence_upsert
-- (notifier/presence.py: was _UPSERT)
INSERT INTO rowcast.presence (session_id, notifier_id, subject, schema_name, table_name, pk, state, expires_at) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, clock_timestamp() + %s * interval '1 second') ON CONFLICT (session_id, schema_name, table_name, pk) DO UPDATE SET since = CASE WHEN rowcast.presence.state = EXCLUDED.state AND rowcast.presence.subject = EXCLUDED.subject THEN rowcast.presence.since ELSE EXCLUDED.since END, subject = EXCLUDED.subject, state = EXCLUDED.state, expires_at = EXCLUDED.expires_at

-- name: presence_delete_row
-- (notifier/presence.py: was _DELETE_ROW)
DELETE FROM rowcast.presence WHERE session_id = %s AND schema_name = %s AND table_name = %s AND pk = %s::jsonb

-- name: presence_delete_session
-- (notifier/presence.py: was _DELETE_SESSION)
DELETE FROM rowcast.presence WHERE session_id = %s

-- name: presence_delete_notifier
-- (notifier/presence.py: was _DELETE_NOTIFIER)
DELETE FROM rowcast.presence WHERE notifier_id = %s

-- name: presence_move
-- (notifier/presence.py: was _MOVE)
WITH moved AS (DELETE FROM rowcast.presence WHERE session_id = %s AND schema_name = %s AND table_name = %s AND pk = %s::jsonb RETURNING *) INSERT INTO rowcast.presence (session_id, notifier_id, subject, schema_name, table_name, pk, state, since, expires_at) SELECT session_id, notifier_id, subject, schema_name, table_name, %s::jsonb, state, since, expires_at FROM moved ON CONFLICT (session_id, schema_name, table_name, pk) DO UPDATE SET state = CASE WHEN 'editing' IN (rowcast.presence.state, EXCLUDED.state) THEN 'editing' ELSE 'viewing' END, since = least(rowcast.presence.since, EXCLUDED.since), expires_at = greatest(rowcast.presence.expires_at, EXCLUDED.expires_at)

-- name: presence_refresh
-- (notifier/presence.py: was _REFRESH)
UPDATE rowcast.presence SET expires_at = clock_timestamp() + %s * interval '1 second' WHERE session_id = ANY(%s)

-- name: presence_read
-- (notifier/presence.py: was _READ)
SELECT session_id, subject, schema_name, table_name, pk::text, state, since FROM rowcast.presence WHERE expires_at > clock_timestamp()

-- name: presence_purge
-- (notifier/presence.py: was _PURGE)
DELETE FROM rowcast.presence WHERE expires_at < clock_timestamp() - interval '1 minute'

-- name: presence_row_image
-- (notifier/presence.py: was _IMAGE)
SELECT "row"::text FROM rowcast.changes WHERE schema_name = %s AND table_name = %s AND (pk = %s::jsonb OR op = 'truncate') ORDER BY id DESC LIMIT 1

-- name: catalog_columns
-- (notifier/catalog.py: was _QUERY)
SELECT c.schema_name, c.table_name, c.pk_columns, a.attname::text, t.typcategory::text
  FROM rowcast.captured c
  JOIN pg_attribute a
    ON a.attrelid = to_regclass(format('%I.%I', c.schema_name, c.table_name))
   AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
 ORDER BY c.schema_name, c.table_name, a.attnum

-- name: standby_primary_snapshot
-- (notifier/standby.py: was PRIMARY_SNAPSHOT)
SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text, (SELECT pruned_xid::text FROM rowcast.prune_state), (SELECT wake_mode FROM rowcast.config)

-- name: standby_replayed
-- (notifier/standby.py: was _REPLAYED)
SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn, pg_last_wal_replay_lsn()::text

-- name: standby_flushed
-- (notifier/standby.py: was _FLUSHED)
SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn

-- name: standby_nudge
-- (notifier/standby.py: was _NUDGE)
SELECT set_config('synchronous_commit', 'local', true), pg_current_xact_id()

-- name: window_page
-- (notifier/source.py: was _WINDOW)
-- ORDER BY id + 0, in the three window statements: never the primary key's order. Snapshots are
-- cluster-wide, so on a busy server xip lists many transactions and the planner, guessing a
-- sizeable share of the log matches, walked the key in id order filtering every row to satisfy
-- ORDER BY id LIMIT (tests/integration/test_read_cost.py). The xid index finds the window's rows.
SELECT {{log_columns}} FROM rowcast.changes WHERE (xid = ANY(%(xip)s::text[]::xid8[]) OR (xid >= %(xmax)s::text::xid8 AND xid < %(xmax_hi)s::text::xid8)) AND id > %(after)s AND pg_visible_in_snapshot(xid, %(snap)s::pg_snapshot) ORDER BY id + 0 LIMIT %(limit)s

-- name: window_first
-- (notifier/source.py: was _FIRST)
WITH s AS (SELECT pg_current_snapshot()::text AS snap, (SELECT pruned_xid::text FROM rowcast.prune_state) AS pruned, (SELECT wake_mode FROM rowcast.config) AS mode) SELECT s.snap, s.pruned, s.mode, c.* FROM s LEFT JOIN LATERAL (SELECT {{log_columns}} FROM rowcast.changes WHERE (xid = ANY(%(xip)s::text[]::xid8[]) OR (xid >= %(xmax)s::text::xid8 AND xid < %(xmax_hi)s::text::xid8)) ORDER BY id + 0 LIMIT %(limit)s) c ON true

-- name: window_first_on_standby
-- (notifier/source.py: was _STANDBY_FIRST)
WITH s AS (SELECT (SELECT pruned_xid::text FROM rowcast.prune_state) AS pruned) SELECT s.pruned, c.* FROM s LEFT JOIN LATERAL (SELECT {{log_columns}} FROM rowcast.changes WHERE (xid = ANY(%(xip)s::text[]::xid8[]) OR (xid >= %(xmax)s::text::xid8 AND xid < %(xmax_hi)s::text::xid8)) AND id > %(after)s AND pg_visible_in_snapshot(xid, %(snap)s::pg_snapshot) ORDER BY id + 0 LIMIT %(limit)s) c ON true

-- name: reader_start
-- (notifier/source.py: was _START)
SELECT pg_current_snapshot()::text, (SELECT pruned_xid::text FROM rowcast.prune_state), (SELECT wake_mode FROM rowcast.config)

-- name: doorbell_rearm
-- (notifier/source.py: was _REARM)
UPDATE rowcast.doorbell SET armed = true WHERE id = (SELECT id FROM rowcast.doorbell WHERE NOT armed FOR UPDATE SKIP LOCKED)

-- name: doorbell_restore
-- (notifier/source.py: was _DOORBELL)
INSERT INTO rowcast.doorbell SELECT 1, true WHERE NOT EXISTS (SELECT FROM rowcast.doorbell) ON CONFLICT (id) DO NOTHING

-- name: replay_first
-- (notifier/replay.py: was _REPLAY_FIRST)
WITH s AS (SELECT pg_current_snapshot()::text AS snap, (SELECT pruned_xid::text FROM rowcast.prune_state) AS pruned) SELECT s.snap, s.pruned, c.* FROM s LEFT JOIN LATERAL (SELECT {{log_columns}} FROM rowcast.changes WHERE changes.id = ANY(ARRAY(SELECT changes.id FROM rowcast.changes WHERE changes.xid >= %(xmin)s::text::xid8 AND NOT pg_visible_in_snapshot(changes.xid, %(since)s::pg_snapshot) AND schema_name = %(schema)s AND table_name = %(table)s ORDER BY changes.id LIMIT %(limit)s)) ORDER BY changes.id) c ON true

-- name: replay_next
-- (notifier/replay.py: was _REPLAY_NEXT)
WITH s AS (SELECT NULL::text AS snap, (SELECT pruned_xid::text FROM rowcast.prune_state) AS pruned) SELECT s.snap, s.pruned, c.* FROM s LEFT JOIN LATERAL (SELECT {{log_columns}} FROM rowcast.changes WHERE changes.id = ANY(ARRAY(SELECT changes.id FROM rowcast.changes WHERE NOT pg_visible_in_snapshot(changes.xid, %(since)s::pg_snapshot) AND schema_name = %(schema)s AND table_name = %(table)s AND pg_visible_in_snapshot(changes.xid, %(now)s::pg_snapshot) AND changes.id > %(after)s ORDER BY changes.id LIMIT %(limit)s)) ORDER BY changes.id) c ON true

-- name: scan_first
-- (notifier/replay.py: was _SCAN_FIRST)
WITH s AS (SELECT pg_current_snapshot()::text AS snap, (SELECT pruned_xid::text FROM rowcast.prune_state) AS pruned) SELECT s.snap, s.pruned, c.* FROM s LEFT JOIN LATERAL (SELECT {{log_columns}} FROM rowcast.changes WHERE changes.id = ANY(ARRAY(SELECT changes.id FROM rowcast.changes WHERE changes.xid >= %(xmin)s::text::xid8 AND NOT pg_visible_in_snapshot(changes.xid, %(since)s::pg_snapshot) AND schema_name = %(schema)s AND table_name = %(table)s ORDER BY changes.xid, changes.id LIMIT %(limit)s))) c ON true

-- name: scan_next
-- (notifier/replay.py: was _SCAN_NEXT)
WITH s AS (SELECT NULL::text AS snap, (SELECT pruned_xid::text FROM rowcast.prune_state) AS pruned) SELECT s.snap, s.pruned, c.* FROM s LEFT JOIN LATERAL (SELECT {{log_columns}} FROM rowcast.changes WHERE changes.id = ANY(ARRAY(SELECT changes.id FROM rowcast.changes WHERE NOT pg_visible_in_snapshot(changes.xid, %(since)s::pg_snapshot) AND schema_name = %(schema)s AND table_name = %(table)s AND pg_visible_in_snapshot(changes.xid, %(now)s::pg_snapshot) AND (changes.xid, changes.id) > (%(after_xid)s::text::xid8, %(after)s::bigint) ORDER BY changes.xid, changes.id LIMIT %(limit)s))) c ON true

-- name: replay_first_on_standby
-- (notifier/replay.py) A first replay page on a standby: `now` comes from the primary, fixed explicitly.
WITH s AS (SELECT NULL::text AS snap, (SELECT pruned_xid::text FROM rowcast.prune_state) AS pruned) SELECT s.snap, s.pruned, c.* FROM s LEFT JOIN LATERAL (SELECT {{log_columns}} FROM rowcast.changes WHERE changes.id = ANY(ARRAY(SELECT changes.id FROM rowcast.changes WHERE changes.xid >= %(xmin)s::text::xid8 AND NOT pg_visible_in_snapshot(changes.xid, %(since)s::pg_snapshot) AND schema_name = %(schema)s AND table_name = %(table)s AND pg_visible_in_snapshot(changes.xid, %(now)s::pg_snapshot) ORDER BY changes.id LIMIT %(limit)s)) ORDER BY changes.id) c ON true

-- name: scan_first_on_standby
-- (notifier/replay.py) A first long-poll page on a standby, the same way.
WITH s AS (SELECT NULL::text AS snap, (SELECT pruned_xid::text FROM rowcast.prune_state) AS pruned) SELECT s.snap, s.pruned, c.* FROM s LEFT JOIN LATERAL (SELECT {{log_columns}} FROM rowcast.changes WHERE changes.id = ANY(ARRAY(SELECT changes.id FROM rowcast.changes WHERE changes.xid >= %(xmin)s::text::xid8 AND NOT pg_visible_in_snapshot(changes.xid, %(since)s::pg_snapshot) AND schema_name = %(schema)s AND table_name = %(table)s AND pg_visible_in_snapshot(changes.xid, %(now)s::pg_snapshot) ORDER BY changes.xid, changes.id LIMIT %(limit)s))) c ON true

-- name: notifier_database_facts
-- (notifier/status.py) The gauges that come from the database: NOTIFY queue usage, log size, age
-- of the oldest change (through the index on `at`).
SELECT pg_notification_queue_usage(), pg_total_relation_size('rowcast.changes'),
       extract(epoch FROM statement_timestamp() - (SELECT min(at) FROM rowcast.changes))::float8

-- name: notifier_heartbeat
-- (notifier/status.py) Each notifier process's row, every HEARTBEAT seconds.
INSERT INTO rowcast.notifiers (notifier_id, host, pid, started_at, stats)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT (notifier_id) DO UPDATE
SET seen_at = clock_timestamp(), stats = EXCLUDED.stats

-- name: notifier_forget_old
DELETE FROM rowcast.notifiers WHERE seen_at < clock_timestamp() - make_interval(secs => %s)

-- name: notifier_leave
DELETE FROM rowcast.notifiers WHERE notifier_id = %s

-- name: demo_books_ever_written
-- (rowcast up --demo) Seed only a books table that is empty and never had a change logged.
SELECT (SELECT count(*) FROM books), (SELECT count(*) FROM rowcast.changes WHERE table_name = 'books')
