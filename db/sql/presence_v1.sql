-- rowcast presence, version 1. Frozen once shipped.
--
-- Who is viewing or editing which row right now. Each notifier writes the rows of its own
-- WebSocket sessions (upsert on announce, refresh of expires_at every ~1.5 s, delete when the
-- session ends) and every notifier (replicas, `--workers` processes) reads the table to tell its
-- own subscribers. The NOTIFY channel never carries any of it: any login can read and forge that.
--
-- UNLOGGED: presence lives for seconds. A crash empties the table, which is what expiry would do
-- anyway, and no WAL is written for refreshes. Rows of a notifier that died without cleaning up
-- stop counting at expires_at (readers filter on it) and are deleted by any notifier later.
-- Presence is not a change: it never goes to rowcast.changes.
CREATE UNLOGGED TABLE rowcast.presence (
    session_id  text        NOT NULL,  -- one client connection (random, unique)
    notifier_id text        NOT NULL,  -- the notifier process serving that connection
    subject     text        NOT NULL,  -- the token's sub, or the display name in open mode
    schema_name text        NOT NULL,
    table_name  text        NOT NULL,
    pk          jsonb       NOT NULL,
    state       text        NOT NULL CHECK (state IN ('viewing', 'editing')),
    since       timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (session_id, schema_name, table_name, pk)
);
COMMENT ON TABLE rowcast.presence IS 'rowcast presence: who views or edits which row (seconds-lived)';

-- The notifier role (roles_v1.sql) maintains its own sessions' rows and reads everyone's.
GRANT SELECT, INSERT, UPDATE, DELETE ON rowcast.presence TO rowcast_notifier;
