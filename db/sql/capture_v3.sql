-- rowcast capture, version 3. Frozen once shipped; capture_v3_down.sql undoes it.
--
-- What changed from version 2, and why:
--   * The log is the only truth. NOTIFY carries a constant, empty payload: it is a doorbell any
--     login can ring or hear, so it must carry no row data, no id, no table and no instruction.
--     The notifier reads every change from rowcast.changes. The by-reference path is gone.
--   * Least privilege. The trigger function is SECURITY DEFINER only so that writers need no right
--     on the log; it is owned by the NOLOGIN role rowcast_capture, which may append to the log and
--     read the registry and the wake-up mode, nothing else. EXECUTE is revoked from PUBLIC (a
--     trigger's function is checked when the trigger is created, not when it fires), and the
--     function refuses any table that is not registered. Whatever a writer controls (a column
--     type's cast to json, session settings) runs, at worst, with rowcast_capture's rights.
--   * Tables are followed by identity (oid) in the registry; a partitioned table is captured once
--     at its root and its partitions' changes (present and future) are logged under the root.
--   * The wake-up mode lives in rowcast.config, which only the owner may change. No session
--     setting decides what is logged; a writer can only opt its own transaction out of the
--     wake-up (SET LOCAL rowcast.wake = off, for PREPARE TRANSACTION), delaying its change by at
--     most one poll interval of the notifier.
--   * Capture stops ringing while the NOTIFY queue is half full, so a stuck listener never makes
--     writers fail with "too many notifications in the NOTIFY queue".
--   * Prune never removes a change that a running snapshot may still miss.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rowcast_capture') THEN
        CREATE ROLE rowcast_capture NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE rowcast_capture IS 'rowcast: owns the capture trigger; may only append to rowcast.changes';

-- The registry, by identity. Names stay for display and for verify's reports.
ALTER TABLE rowcast.captured ADD COLUMN relid oid;
UPDATE rowcast.captured SET relid = to_regclass(format('%I.%I', schema_name, table_name));
CREATE UNIQUE INDEX captured_relid_idx ON rowcast.captured (relid);

-- The log records which table (by identity) a change belongs to.
ALTER TABLE rowcast.changes ADD COLUMN relid oid;

-- Settings only the owner may change (never a session setting).
CREATE TABLE rowcast.config (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    wake_mode text NOT NULL DEFAULT 'notify' CHECK (wake_mode IN ('notify', 'coalesced'))
);
-- Carry over the mode version 2 kept in a database default (read here as this session's value).
INSERT INTO rowcast.config (wake_mode)
VALUES (CASE WHEN current_setting('rowcast.wake_mode', true) = 'coalesced' THEN 'coalesced' ELSE 'notify' END);

CREATE FUNCTION rowcast.capture_v3() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    root    oid := coalesce(pg_partition_root(TG_RELID), TG_RELID);
    keys    text[];
    nsp     text := TG_TABLE_SCHEMA;
    rel     text := TG_TABLE_NAME;
    new_row jsonb;
    old_row jsonb;
    old_out jsonb;
    key_val jsonb := '{}'::jsonb;
    col     text;
    stale   boolean := false;
BEGIN
    SELECT c.pk_columns INTO keys FROM rowcast.captured c WHERE c.relid = root;
    IF NOT FOUND THEN
        -- Someone attached this function to a table of their own: refuse, log nothing.
        RAISE EXCEPTION 'rowcast: table % is not registered for capture', TG_RELID::regclass
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the owner enables capture with rowcast.enable_capture(...)';
    END IF;
    IF root <> TG_RELID THEN  -- a partition: log under the root's current name
        SELECT n.nspname, c.relname INTO nsp, rel
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = root;
    END IF;

    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO rowcast.changes (relid, schema_name, table_name, op)
        VALUES (root, nsp, rel, 'truncate');
    ELSE
        IF TG_OP <> 'DELETE' THEN new_row := to_jsonb(NEW); END IF;
        IF TG_OP <> 'INSERT' THEN old_row := to_jsonb(OLD); END IF;
        FOREACH col IN ARRAY keys LOOP
            stale := stale OR NOT coalesce(new_row, old_row) ? col;
            key_val := key_val || jsonb_build_object(col, coalesce(new_row, old_row) -> col);
        END LOOP;
        IF stale THEN
            -- A key column renamed since the registry was written (key columns are NOT NULL):
            -- read the key from the catalog, so the change never carries a null key.
            key_val := '{}'::jsonb;
            FOREACH col IN ARRAY rowcast.pk_columns(root) LOOP
                key_val := key_val || jsonb_build_object(col, coalesce(new_row, old_row) -> col);
            END LOOP;
        END IF;
        IF TG_OP = 'UPDATE' THEN
            -- Only the old values of the columns that changed.
            SELECT coalesce(jsonb_object_agg(o.key, o.value), '{}'::jsonb) INTO old_out
              FROM jsonb_each(old_row) AS o
             WHERE new_row -> o.key IS DISTINCT FROM o.value;
            -- On a key change `pk` is the new key and `old` holds the old key's columns.
        ELSIF TG_OP = 'DELETE' THEN
            old_out := old_row;
        END IF;
        INSERT INTO rowcast.changes (relid, schema_name, table_name, op, pk, "row", old)
        VALUES (root, nsp, rel, lower(TG_OP), key_val, new_row, old_out);
    END IF;

    -- The doorbell, at most once per transaction. It carries nothing: the notifier reads the log.
    IF current_setting('rowcast.rang', true) IS DISTINCT FROM 'y' THEN
        PERFORM set_config('rowcast.rang', 'y', true);
        IF current_setting('rowcast.wake', true) IS DISTINCT FROM 'off'
           -- A stuck listener must never make writers fail: past half full, stop ringing; the
           -- notifier's timer still reads every change.
           AND pg_notification_queue_usage() < 0.5 THEN
            IF (SELECT f.wake_mode FROM rowcast.config f) = 'coalesced' THEN
                -- Ring only when this transaction claims the armed doorbell (docs/DESIGN.md).
                UPDATE rowcast.doorbell SET armed = false
                 WHERE id = (SELECT d.id FROM rowcast.doorbell d WHERE d.armed FOR UPDATE SKIP LOCKED);
                IF FOUND THEN
                    PERFORM pg_notify('rowcast', '');
                END IF;
            ELSE
                PERFORM pg_notify('rowcast', '');
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION rowcast.enable_capture(tbl regclass) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pk      text[] := rowcast.pk_columns(tbl);
    nsp     text;
    rel     text;
    trg     text;
    kind    "char";
    is_part boolean;
BEGIN
    SELECT n.nspname, c.relname, c.relkind, c.relispartition INTO nsp, rel, kind, is_part
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    IF nsp = 'rowcast' THEN
        RAISE EXCEPTION 'rowcast: % is rowcast''s own table and cannot be captured', tbl;
    END IF;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'rowcast: % is not a table', tbl;
    END IF;
    IF is_part THEN
        RAISE EXCEPTION 'rowcast: % is a partition of %', tbl, pg_partition_root(tbl)::regclass
            USING HINT = 'capture the partitioned table at its root: its partitions are included',
                  ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF pk IS NULL THEN
        RAISE EXCEPTION 'rowcast: table % has no primary key', tbl
            USING HINT = 'capture identifies rows by their primary key; add one, e.g. ALTER TABLE ... ADD PRIMARY KEY (...)',
                  ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Replace any rowcast trigger (an older version). On a partitioned table the row trigger is
    -- cloned onto every partition, present and future, by Postgres itself.
    FOR trg IN SELECT tgname FROM pg_trigger
                WHERE tgrelid = tbl AND tgname LIKE 'rowcast\_capture\_%' AND tgparentid = 0 LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trg, tbl);
    END LOOP;
    -- Register first: the trigger refuses unregistered tables.
    DELETE FROM rowcast.captured WHERE relid = tbl OR (schema_name, table_name) = (nsp, rel);
    INSERT INTO rowcast.captured (schema_name, table_name, pk_columns, version, relid)
    VALUES (nsp, rel, pk, 3, tbl);
    EXECUTE format(
        'CREATE TRIGGER rowcast_capture_v3 AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION rowcast.capture_v3()', tbl);
    EXECUTE format(
        'CREATE TRIGGER rowcast_capture_truncate_v3 AFTER TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture_v3()', tbl);
    RETURN format('capture enabled on %I.%I (primary key: %s)', nsp, rel, array_to_string(pk, ', '));
END;
$$;

CREATE OR REPLACE FUNCTION rowcast.disable_capture(tbl regclass) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nsp text;
    rel text;
    trg text;
BEGIN
    SELECT n.nspname, c.relname INTO nsp, rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    FOR trg IN SELECT tgname FROM pg_trigger
                WHERE tgrelid = tbl AND tgname LIKE 'rowcast\_capture\_%' AND tgparentid = 0 LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trg, tbl);
    END LOOP;
    DELETE FROM rowcast.captured WHERE relid = tbl OR (schema_name, table_name) = (nsp, rel);
    RETURN format('capture disabled on %I.%I', nsp, rel);
END;
$$;

-- One row per table that is captured or has a rowcast trigger of its own: status is
-- ok | missing (enabled, trigger gone) | outdated (older trigger version) |
-- key_changed (primary key differs from the registry's) | untracked (trigger, not registered) |
-- table_missing (registered, table dropped). Triggers Postgres cloned onto partitions belong to
-- their root and are not reported; names are the tables' current ones (a rename is followed).
CREATE OR REPLACE FUNCTION rowcast.capture_status()
    RETURNS TABLE (schema_name text, table_name text, status text, detail text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH trig AS (
        SELECT n.nspname::text AS schema_name, c.relname::text AS table_name, c.oid AS relid,
               bool_or(t.tgname = 'rowcast_capture_v3') AS has_row,
               bool_or(t.tgname = 'rowcast_capture_truncate_v3') AS has_truncate,
               array_agg(t.tgname::text ORDER BY t.tgname) AS names
          FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE t.tgname LIKE 'rowcast\_capture\_%' AND t.tgparentid = 0
         GROUP BY 1, 2, 3
    ), reg AS (
        SELECT coalesce(n.nspname::text, r.schema_name) AS schema_name,
               coalesce(c.relname::text, r.table_name) AS table_name,
               r.pk_columns, c.oid AS relid, r.relid AS registered
          FROM rowcast.captured r
          LEFT JOIN pg_class c ON c.oid = r.relid
          LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
    )
    SELECT coalesce(reg.schema_name, trig.schema_name),
           coalesce(reg.table_name, trig.table_name),
           CASE
               WHEN reg.registered IS NOT NULL AND reg.relid IS NULL THEN 'table_missing'
               WHEN reg.registered IS NULL THEN 'untracked'
               WHEN trig.relid IS NULL THEN 'missing'
               WHEN NOT (trig.has_row AND trig.has_truncate) THEN
                    CASE WHEN EXISTS (SELECT 1 FROM unnest(trig.names) x WHERE x NOT LIKE '%\_v3')
                         THEN 'outdated' ELSE 'missing' END
               WHEN rowcast.pk_columns(reg.relid) IS DISTINCT FROM reg.pk_columns THEN 'key_changed'
               ELSE 'ok'
           END,
           CASE
               WHEN reg.registered IS NOT NULL AND reg.relid IS NULL THEN
                    'the table no longer exists: run rowcast.forget_capture(' || quote_literal(reg.schema_name || '.' || reg.table_name) || ')'
               WHEN reg.registered IS NULL THEN 'has rowcast triggers but was not enabled with enable_capture'
               WHEN trig.relid IS NULL THEN 'no rowcast trigger: run rowcast.enable_capture again'
               WHEN NOT (trig.has_row AND trig.has_truncate) THEN
                    'triggers found: ' || array_to_string(trig.names, ', ') || '; expected rowcast_capture_v3 and rowcast_capture_truncate_v3'
               WHEN rowcast.pk_columns(reg.relid) IS DISTINCT FROM reg.pk_columns THEN
                    format('primary key is now (%s), registered as (%s): run rowcast.enable_capture again',
                           array_to_string(rowcast.pk_columns(reg.relid), ', '), array_to_string(reg.pk_columns, ', '))
               ELSE format('capture v3 on (%s)', array_to_string(reg.pk_columns, ', '))
                    || CASE WHEN EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = reg.relid)
                            THEN ', partitions included' ELSE '' END
           END
      FROM reg FULL JOIN trig ON trig.relid = reg.relid
     ORDER BY 1, 2
$$;

-- A registered table that no longer exists (dropped): remove it from the registry by name.
CREATE FUNCTION rowcast.forget_capture(qualified text) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone integer;
BEGIN
    DELETE FROM rowcast.captured r
     WHERE r.schema_name || '.' || r.table_name = qualified
       AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = r.relid);
    GET DIAGNOSTICS gone = ROW_COUNT;
    IF gone = 0 THEN
        RAISE EXCEPTION 'rowcast: % is not a registered table that was dropped', qualified
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN format('forgot %s', qualified);
END;
$$;

-- The database's wake-up mode, kept in rowcast.config; running notifiers pick it up on their next
-- read (the NOTIFY below only makes that sooner).
CREATE OR REPLACE FUNCTION rowcast.set_wake_mode(mode text) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF mode IS NULL OR mode NOT IN ('notify', 'coalesced') THEN
        RAISE EXCEPTION 'rowcast: wake mode must be notify or coalesced, not %', mode
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE rowcast.config SET wake_mode = mode;
    PERFORM pg_notify('rowcast', '');
    RETURN format('wake mode of database %s is now %s', current_database(), mode);
END;
$$;

CREATE OR REPLACE FUNCTION rowcast.wake_mode() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT wake_mode FROM rowcast.config $$;

-- Retention: remove log rows older than `older_than`, but only those of transactions every running
-- snapshot already sees (xid below the current snapshot's xmin): a transaction open across a prune
-- keeps its changes, and every snapshot taken from now on has an xmin above the recorded
-- pruned_xid, so a freshly loaded snapshot never needs a resync.
CREATE OR REPLACE FUNCTION rowcast.prune(older_than interval DEFAULT '24 hours')
    RETURNS TABLE (removed bigint, pruned_xid xid8)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n   bigint;
    top xid8;
BEGIN
    WITH gone AS (
        DELETE FROM rowcast.changes
         WHERE at < now() - older_than AND xid < pg_snapshot_xmin(pg_current_snapshot())
        RETURNING xid
    )
    SELECT count(*), max(xid) INTO n, top FROM gone;
    IF top IS NOT NULL THEN
        INSERT INTO rowcast.prune_state AS s (pruned_xid, removed) VALUES (top, n)
        ON CONFLICT (singleton) DO UPDATE
           SET pruned_xid = greatest(s.pruned_xid, EXCLUDED.pruned_xid),
               pruned_at = now(), removed = s.removed + EXCLUDED.removed;
    END IF;
    RETURN QUERY SELECT n, (SELECT p.pruned_xid FROM rowcast.prune_state p);
END;
$$;

-- Move every registered table to the version-3 triggers, then retire the old functions (their
-- triggers are gone) and the NOTIFY size limit of the by-reference path.
SELECT rowcast.enable_capture(relid::regclass)
  FROM rowcast.captured WHERE relid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = relid);
DROP FUNCTION rowcast.capture_v1();
DROP FUNCTION rowcast.capture_v2();
DROP FUNCTION rowcast.notify_limit();

-- Least privilege. ALTER ... OWNER needs the new owner to hold CREATE on the schema: granted for
-- that statement only.
REVOKE ALL ON FUNCTION rowcast.capture_v3() FROM PUBLIC;
GRANT USAGE ON SCHEMA rowcast TO rowcast_capture;
GRANT CREATE ON SCHEMA rowcast TO rowcast_capture;
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT rowcast_capture TO %I', current_user);
    END IF;
END
$$;
ALTER FUNCTION rowcast.capture_v3() OWNER TO rowcast_capture;
REVOKE CREATE ON SCHEMA rowcast FROM rowcast_capture;
-- The owner of the function keeps EXECUTE; whoever runs enable_capture needs it to create triggers.
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION rowcast.capture_v3() TO %I', current_user);
END
$$;
GRANT INSERT ON rowcast.changes TO rowcast_capture;
GRANT SELECT ON rowcast.captured, rowcast.config TO rowcast_capture;
GRANT SELECT, UPDATE ON rowcast.doorbell TO rowcast_capture;
GRANT EXECUTE ON FUNCTION rowcast.pk_columns(regclass) TO rowcast_capture;

GRANT SELECT ON rowcast.config TO rowcast_notifier;
REVOKE EXECUTE ON FUNCTION rowcast.forget_capture(text) FROM PUBLIC;
