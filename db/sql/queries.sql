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
