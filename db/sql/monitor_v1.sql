-- rowcast monitoring, version 1. Frozen once shipped; monitor_v1_down.sql undoes it.
--
-- What `rowcast status`, the notifier's /status.json and the /status page show.
--
-- rowcast.notifiers: each notifier process (every replica, every `--workers` process) upserts
-- its own row every couple of seconds with what only it knows (clients, subscriptions, delivery
-- lag, age of its last read of the log, listener state) and deletes it when it stops. Whoever
-- reads the table sees every replica, whichever one (or the CLI) answers. A row whose seen_at
-- stops moving is a notifier that died without cleaning up: readers show it as down, and any
-- notifier deletes rows an hour old. UNLOGGED: these facts live for seconds, a crash empties the
-- table and no WAL is written for heartbeats.
CREATE UNLOGGED TABLE rowcast.notifiers (
    notifier_id text        PRIMARY KEY,  -- host:pid:random, unique per process start
    host        text        NOT NULL,
    pid         integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    stats       jsonb       NOT NULL DEFAULT '{}'::jsonb
);
COMMENT ON TABLE rowcast.notifiers IS 'rowcast notifiers: one heartbeat row per running notifier process';
GRANT SELECT, INSERT, UPDATE, DELETE ON rowcast.notifiers TO rowcast_notifier;

-- Per captured table: changes per minute over the last `minutes` minutes (oldest first; the last
-- element is the 60 seconds up to now), and the table's share of the log: rows, bytes (the sum of
-- its rows' sizes on disk, before compression of the whole page), oldest and newest change. The
-- per-minute counts read the last minutes through the log's index on `at`; the totals read the
-- whole log once (a few hundred ms per million rows). Invoker's rights: the notifier role and the
-- owner may read the log, nobody else learns anything from it.
CREATE FUNCTION rowcast.table_activity(minutes integer DEFAULT 15)
RETURNS TABLE (schema_name text, table_name text, per_minute bigint[], log_rows bigint,
               log_bytes bigint, oldest_at timestamptz, newest_at timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH totals AS MATERIALIZED (
        SELECT c.relid, count(*) AS n, sum(pg_column_size(c.*))::bigint AS bytes,
               min(c.at) AS oldest, max(c.at) AS newest
          FROM rowcast.changes c
         GROUP BY c.relid
    ), recent AS MATERIALIZED (
        SELECT c.relid, floor(extract(epoch FROM statement_timestamp() - c.at) / 60)::integer AS ago,
               count(*) AS n
          FROM rowcast.changes c
         WHERE c.at > statement_timestamp() - make_interval(mins => greatest(minutes, 1))
         GROUP BY 1, 2
    ), series AS (
        SELECT r.relid, array_agg(coalesce(x.n, 0) ORDER BY m.ago DESC) AS per_minute
          FROM rowcast.captured r
         CROSS JOIN generate_series(0, greatest(minutes, 1) - 1) AS m(ago)
          LEFT JOIN recent x ON x.relid = r.relid AND x.ago = m.ago
         GROUP BY r.relid
    )
    SELECT r.schema_name, r.table_name, s.per_minute,
           coalesce(t.n, 0), coalesce(t.bytes, 0), t.oldest, t.newest
      FROM rowcast.captured r
      JOIN series s ON s.relid = r.relid
      LEFT JOIN totals t ON t.relid = r.relid
     ORDER BY 1, 2
$$;
