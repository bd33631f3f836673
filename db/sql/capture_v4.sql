-- rowcast capture, version 4: schema changes of captured tables are recorded. Frozen once shipped;
-- capture_v4_down.sql undoes it. The row trigger stays capture_v3().
--
-- What changed, and why:
--   * DDL on a captured table (any ALTER TABLE: columns, key, RENAME, SET SCHEMA, partitions; a
--     schema's RENAME; a table's DROP, also by DROP SCHEMA ... CASCADE or DROP OWNED) appends one
--     row per affected captured table and command to rowcast.changes, in the DDL's transaction,
--     with op 'schema' (the table's columns and key after the command) or 'drop'. The notifier
--     reads schema changes from the log like any change, so they reach it without a restart.
--   * The registry follows: a rename updates rowcast.captured's names, a key change its
--     pk_columns (the row trigger reads the key from there: a renamed key column never logs a null
--     key), a dropped table is forgotten. `capture verify` stays clean after renames and drops.
--   * The doorbell rings at COMMIT (rowcast.ring(), a deferred constraint trigger on the log that
--     queues one event per transaction), so the NOTIFY queue check sits next to the point where
--     Postgres adds the notification: a queue that fills while a transaction runs can no longer
--     make its COMMIT fail. The row trigger function keeps its name (every captured table's
--     triggers point at it); its body is this version's.
--   * Virtual generated columns (Postgres 18) are null in a trigger's NEW and OLD: the row trigger
--     computes them from their expressions (registered in rowcast.captured.virtual_columns), so
--     events carry their values.
--   * A write to a table whose key column was dropped logs an empty key instead of failing.
--   * Event triggers need a superuser. A migration run by anyone else installs everything but the
--     event triggers, says so with a WARNING, and capture_status() reports ddl_untracked until a
--     superuser runs rowcast.track_ddl().
--
-- Row shape of a 'schema' change ("row"; pk and old are NULL):
--   {"columns": [{"name", "type" (format_type), "category" (pg_type.typcategory)}, ...] in attnum
--    order, "pk": [key columns, empty when the table has none], "renamed_from": {"schema",
--    "table"} or null}
-- A 'drop' carries the table's last names and {"columns": [], "pk": [], "renamed_from": null}.

ALTER TABLE rowcast.changes
    DROP CONSTRAINT changes_op_check,
    ADD CONSTRAINT changes_op_check
        CHECK (op IN ('insert', 'update', 'delete', 'truncate', 'schema', 'drop'));

-- One function for both events. SECURITY DEFINER as rowcast_capture for the same reason as the
-- row trigger: whoever runs the DDL needs no right on the log or the registry. It reads only the
-- catalog (names, format_type, typcategory: built-in output, no cast a table owner could define)
-- and never converts a row or a value of a user's type.
CREATE FUNCTION rowcast.capture_ddl_v4() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    touched oid[];
    logged  boolean := false;
    renamed boolean;
    pk      text[];
    t       record;
BEGIN
    IF TG_EVENT = 'sql_drop' THEN
        -- The catalog rows are gone by now: the last names come from the dropped-object list.
        FOR t IN SELECT d.objid, d.schema_name, d.object_name
                   FROM pg_event_trigger_dropped_objects() d
                   JOIN rowcast.captured r ON r.relid = d.objid
                  WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.object_type = 'table'
                  ORDER BY d.objid LOOP
            INSERT INTO rowcast.changes (relid, schema_name, table_name, op, "row")
            VALUES (t.objid, t.schema_name, t.object_name, 'drop',
                    '{"columns": [], "pk": [], "renamed_from": null}'::jsonb);
            DELETE FROM rowcast.captured WHERE relid = t.objid;
            logged := true;
        END LOOP;
        -- A column dropped as a side effect (DROP TYPE ... CASCADE) changes its table's shape.
        -- ALTER TABLE ... DROP COLUMN is recorded once, at ddl_command_end, like any ALTER TABLE.
        IF TG_TAG <> 'ALTER TABLE' THEN
            SELECT array_agg(DISTINCT coalesce(pg_partition_root(d.objid), d.objid)) INTO touched
              FROM pg_event_trigger_dropped_objects() d
             WHERE d.classid = 'pg_class'::regclass AND d.object_type = 'table column';
        END IF;
    ELSE
        -- ALTER TABLE names its table (and, for some subcommands, indexes and sequences: an index
        -- stands for its table, a partition for its root); ALTER SCHEMA names the schema.
        SELECT array_agg(DISTINCT coalesce(pg_partition_root(rel), rel)) INTO touched
          FROM (SELECT coalesce(i.indrelid, d.objid) AS rel
                  FROM pg_event_trigger_ddl_commands() d
                  LEFT JOIN pg_index i ON i.indexrelid = d.objid
                 WHERE d.classid = 'pg_class'::regclass
                UNION ALL
                SELECT c.oid
                  FROM pg_event_trigger_ddl_commands() d
                  JOIN pg_class c ON c.relnamespace = d.objid
                 WHERE d.classid = 'pg_namespace'::regclass) AS cmd;
    END IF;

    FOR t IN SELECT r.relid, r.schema_name AS was_schema, r.table_name AS was_table, r.pk_columns,
                    n.nspname::text AS nsp, c.relname::text AS rel
               FROM rowcast.captured r
               JOIN pg_class c ON c.oid = r.relid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE r.relid = ANY (touched)
              ORDER BY r.relid LOOP
        renamed := (t.was_schema, t.was_table) IS DISTINCT FROM (t.nsp, t.rel);
        -- Other ALTER SCHEMA commands (OWNER TO) leave the tables as they were.
        CONTINUE WHEN TG_TAG = 'ALTER SCHEMA' AND NOT renamed;
        pk := rowcast.pk_columns(t.relid);
        IF pk IS NULL THEN
            -- Allowed (the key may come back in the next command), but the DDL's author should know.
            RAISE WARNING 'rowcast: captured table %.% has no primary key now', quote_ident(t.nsp), quote_ident(t.rel)
                USING DETAIL = format('Changes keep the registered key (%s); writes fail once a column of it is dropped.',
                                      array_to_string(t.pk_columns, ', ')),
                      HINT = 'add a primary key again, or disable capture on the table';
        END IF;
        INSERT INTO rowcast.changes (relid, schema_name, table_name, op, "row")
        SELECT t.relid, t.nsp, t.rel, 'schema', jsonb_build_object(
                   'columns', coalesce(jsonb_agg(jsonb_build_object(
                                  'name', a.attname::text,
                                  'type', format_type(a.atttypid, a.atttypmod),
                                  'category', ty.typcategory::text) ORDER BY a.attnum), '[]'::jsonb),
                   'pk', coalesce(to_jsonb(pk), '[]'::jsonb),
                   'renamed_from', CASE WHEN renamed THEN
                                       jsonb_build_object('schema', t.was_schema, 'table', t.was_table)
                                   END)
          FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
         WHERE a.attrelid = t.relid AND a.attnum > 0 AND NOT a.attisdropped;
        -- Follow the table: its names, and its key (the row trigger builds `pk` from it). A table
        -- left without a key keeps the registered one, and capture_status() reports key_changed.
        -- The names may still be registered for a table dropped while DDL was not tracked (verify
        -- reports it as table_missing): the name is this table's now, so that row goes.
        DELETE FROM rowcast.captured r
         WHERE (r.schema_name, r.table_name) = (t.nsp, t.rel) AND r.relid IS DISTINCT FROM t.relid
           AND NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = r.relid);
        UPDATE rowcast.captured
           SET schema_name = t.nsp, table_name = t.rel, pk_columns = coalesce(pk, t.pk_columns)
         WHERE relid = t.relid;
        logged := true;
    END LOOP;

    -- The doorbell rings at commit (rowcast.ring()): its trigger queued one event with the first
    -- log row of this transaction, and this mark keeps it at one.
    IF logged THEN
        PERFORM set_config('rowcast.rang', 'y', true);
    END IF;
END;
$$;

-- Turn DDL tracking on (the migration calls it; a superuser may call it later). Creating an event
-- trigger needs a superuser: anyone else gets a WARNING and tracking stays off.
CREATE FUNCTION rowcast.track_ddl() RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
        RAISE WARNING 'rowcast: DDL on captured tables is not tracked: creating an event trigger needs a superuser'
            USING HINT = 'a superuser runs SELECT rowcast.track_ddl(); until then capture verify reports ddl_untracked';
        RETURN 'DDL tracking is off';
    END IF;
    -- Catch up with what happened while DDL was not tracked (renames, key changes): from here on
    -- the event triggers keep the registry current.
    UPDATE rowcast.captured r
       SET schema_name = n.nspname, table_name = c.relname,
           pk_columns = coalesce(rowcast.pk_columns(r.relid), r.pk_columns)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = r.relid
       AND (r.schema_name, r.table_name, r.pk_columns)
           IS DISTINCT FROM (n.nspname::text, c.relname::text, coalesce(rowcast.pk_columns(r.relid), r.pk_columns));
    DROP EVENT TRIGGER IF EXISTS rowcast_ddl_v4;
    DROP EVENT TRIGGER IF EXISTS rowcast_drop_v4;
    -- Only these tags can change a table's columns, key or names without dropping it: any other
    -- DDL never calls the function.
    CREATE EVENT TRIGGER rowcast_ddl_v4 ON ddl_command_end WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA')
        EXECUTE FUNCTION rowcast.capture_ddl_v4();
    -- Untagged: tables and columns are dropped by many commands (DROP TABLE, DROP SCHEMA, DROP
    -- OWNED, DROP TYPE ... CASCADE, ...); the function returns after one lookup for the others.
    CREATE EVENT TRIGGER rowcast_drop_v4 ON sql_drop
        EXECUTE FUNCTION rowcast.capture_ddl_v4();
    RETURN 'DDL tracking is on';
END;
$$;

-- As version 3, plus ddl_untracked (capture works, schema changes are not recorded) and a clear
-- word for a table left without a primary key.
CREATE OR REPLACE FUNCTION rowcast.capture_status()
    RETURNS TABLE (schema_name text, table_name text, status text, detail text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH trig AS (
        SELECT n.nspname::text AS schema_name, c.relname::text AS table_name, c.oid AS relid,
               bool_or(t.tgname = 'rowcast_capture_v3') AS has_row,
               -- INSERT and DELETE: by the row trigger, or by the two statement triggers.
               bool_or(t.tgname = 'rowcast_capture_v3' AND t.tgtype & 12 = 12)
                   OR count(*) FILTER (WHERE t.tgname IN ('rowcast_capture_insert_v4', 'rowcast_capture_delete_v4')) = 2
                   AS has_rows,
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
               r.pk_columns, c.oid AS relid, r.relid AS registered,
               rowcast.pk_columns(c.oid) AS pk_now
          FROM rowcast.captured r
          LEFT JOIN pg_class c ON c.oid = r.relid
          LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
    ), ddl AS (
        SELECT count(*) = 2 AS tracked FROM pg_event_trigger
         WHERE evtname IN ('rowcast_ddl_v4', 'rowcast_drop_v4') AND evtenabled <> 'D'
    )
    SELECT coalesce(reg.schema_name, trig.schema_name),
           coalesce(reg.table_name, trig.table_name),
           CASE
               WHEN reg.registered IS NOT NULL AND reg.relid IS NULL THEN 'table_missing'
               WHEN reg.registered IS NULL THEN 'untracked'
               WHEN trig.relid IS NULL THEN 'missing'
               WHEN NOT (trig.has_row AND trig.has_truncate AND trig.has_rows) THEN
                    CASE WHEN EXISTS (SELECT 1 FROM unnest(trig.names) x WHERE x NOT LIKE '%\_v3' AND x NOT LIKE '%\_v4')
                         THEN 'outdated' ELSE 'missing' END
               WHEN reg.pk_now IS DISTINCT FROM reg.pk_columns THEN 'key_changed'
               WHEN NOT ddl.tracked THEN 'ddl_untracked'
               ELSE 'ok'
           END,
           CASE
               WHEN reg.registered IS NOT NULL AND reg.relid IS NULL THEN
                    'the table no longer exists: run rowcast.forget_capture(' || quote_literal(reg.schema_name || '.' || reg.table_name) || ')'
               WHEN reg.registered IS NULL THEN 'has rowcast triggers but was not enabled with enable_capture'
               WHEN trig.relid IS NULL THEN 'no rowcast trigger: run rowcast.enable_capture again'
               WHEN NOT (trig.has_row AND trig.has_truncate AND trig.has_rows) THEN
                    'triggers found: ' || array_to_string(trig.names, ', ') || '; expected rowcast_capture_v3, '
                    || 'rowcast_capture_truncate_v3 and, on a plain table, rowcast_capture_insert_v4 and rowcast_capture_delete_v4'
               WHEN reg.pk_now IS NULL THEN
                    format('the table has no primary key now (registered as (%s)): add one',
                           array_to_string(reg.pk_columns, ', '))
               WHEN reg.pk_now IS DISTINCT FROM reg.pk_columns THEN
                    format('primary key is now (%s), registered as (%s): run rowcast.enable_capture again',
                           array_to_string(reg.pk_now, ', '), array_to_string(reg.pk_columns, ', '))
               WHEN NOT ddl.tracked THEN
                    'capture works, but schema changes (renames, drops, columns, key) are not recorded: '
                    || 'a superuser runs SELECT rowcast.track_ddl()'
               ELSE format('capture v4 on (%s)', array_to_string(reg.pk_columns, ', '))
                    || CASE WHEN EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = reg.relid)
                            THEN ', partitions included' ELSE '' END
           END
      FROM reg FULL JOIN trig ON trig.relid = reg.relid CROSS JOIN ddl
     ORDER BY 1, 2
$$;

-- Long-poll pages walk the log in (xid, id) order, whole transactions at a time: with the key on
-- both, a transaction larger than a page is read in index order instead of sorted on every page.
-- It serves the window reads' xid lookups as the xid index did, so it replaces it.
CREATE INDEX changes_xid_id_idx ON rowcast.changes (xid, id);
DROP INDEX rowcast.changes_xid_idx;

-- Virtual generated columns: the select list that computes them from a row's other columns
-- ("expr AS name, ..."), or null. Postgres 18 allows only built-in functions and types in their
-- expressions, so evaluating one runs no code a table owner wrote.
CREATE FUNCTION rowcast.virtual_columns(rel oid) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%s AS %I', pg_get_expr(d.adbin, d.adrelid), a.attname), ', ' ORDER BY a.attnum)
      FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = rel AND a.attgenerated = 'v' AND NOT a.attisdropped
$$;

-- Kept current by whoever writes the registry: enable_capture, and the DDL event trigger (which
-- updates every captured table it sees altered).
ALTER TABLE rowcast.captured ADD COLUMN virtual_columns text;
CREATE FUNCTION rowcast.captured_virtual() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.virtual_columns := rowcast.virtual_columns(NEW.relid);
    RETURN NEW;
END;
$$;
CREATE TRIGGER captured_virtual BEFORE INSERT OR UPDATE ON rowcast.captured
    FOR EACH ROW EXECUTE FUNCTION rowcast.captured_virtual();
UPDATE rowcast.captured SET relid = relid;

-- The doorbell, rung at COMMIT. A deferred constraint trigger on the log: its WHEN clause is
-- evaluated as each log row is written, before the row trigger marks the transaction, so exactly
-- one event is queued per transaction (a bulk load pays for one call, not one per row), and it
-- fires after everything else the transaction did, next to the point where Postgres queues the
-- notification. A writer can still opt out (SET LOCAL rowcast.wake = off, for PREPARE
-- TRANSACTION) or mark itself rung (its own change then waits for the notifier's timer).
CREATE FUNCTION rowcast.ring() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER changes_ring AFTER INSERT ON rowcast.changes
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (current_setting('rowcast.rang', true) IS DISTINCT FROM 'y')
    EXECUTE FUNCTION rowcast.ring();

-- The row trigger, version 4's body under version 3's name.
CREATE OR REPLACE FUNCTION rowcast.capture_v3() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    root    oid := coalesce(pg_partition_root(TG_RELID), TG_RELID);
    keys    text[];
    virt    text;     -- the virtual columns' select list, then the query computing them
    computed jsonb;
    nsp     text := TG_TABLE_SCHEMA;
    rel     text := TG_TABLE_NAME;
    new_row jsonb;
    old_row jsonb;
    old_out jsonb;
    key_val jsonb := '{}'::jsonb;
    col     text;
    stale   boolean := false;
BEGIN
    SELECT c.pk_columns, c.virtual_columns INTO keys, virt FROM rowcast.captured c WHERE c.relid = root;
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
        IF virt IS NOT NULL THEN
            -- Never computed for triggers (null in NEW and OLD): compute them from the row.
            virt := format('SELECT to_jsonb(v.*) FROM (SELECT %s FROM (SELECT ($1).*) AS t) AS v', virt);
            IF new_row IS NOT NULL THEN
                EXECUTE virt INTO computed USING NEW;
                new_row := new_row || computed;
            END IF;
            IF old_row IS NOT NULL THEN
                EXECUTE virt INTO computed USING OLD;
                old_row := old_row || computed;
            END IF;
        END IF;
        FOREACH col IN ARRAY keys LOOP
            stale := stale OR NOT coalesce(new_row, old_row) ? col;
            key_val := key_val || jsonb_build_object(col, coalesce(new_row, old_row) -> col);
        END LOOP;
        IF stale THEN
            -- A key column renamed or dropped while DDL was not tracked: read the key from the
            -- catalog, so the change never carries a null key (an empty one if the table has none).
            key_val := '{}'::jsonb;
            FOREACH col IN ARRAY coalesce(rowcast.pk_columns(root), '{}'::text[]) LOOP
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

    -- The log row just written queued the doorbell for COMMIT (rowcast.ring()) unless this
    -- transaction already did: mark it, so it stays one.
    IF current_setting('rowcast.rang', true) IS DISTINCT FROM 'y' THEN
        PERFORM set_config('rowcast.rang', 'y', true);
    END IF;
    RETURN NULL;
END;
$$;

-- Bulk statements captured per statement, for tables that ask for it
-- (rowcast.capture_per_statement(table)): an INSERT or DELETE of many rows is logged from the
-- statement's transition table with one set-based INSERT instead of one trigger call per row
-- (a 100,000-row INSERT ... SELECT ran the row trigger 100,000 times), with the same events.
-- Opt-in because a statement trigger with a transition table costs a single-row INSERT more than
-- the row trigger does (measured: about 20% per durable single-row insert). UPDATE stays a row
-- trigger: a transition table does not pair an old row with its new one when the key changes.
-- Only plain tables: a partitioned root's statement trigger does not fire for a statement that
-- names a partition.
CREATE FUNCTION rowcast.capture_rows() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys  text[];
    virt  text;
    n     bigint;
BEGIN
    SELECT c.pk_columns, c.virtual_columns INTO keys, virt FROM rowcast.captured c WHERE c.relid = TG_RELID;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rowcast: table % is not registered for capture', TG_RELID::regclass
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the owner enables capture with rowcast.enable_capture(...)';
    END IF;
    IF virt IS NOT NULL THEN
        EXECUTE format(
            'INSERT INTO rowcast.changes (relid, schema_name, table_name, op, pk, "row", old) '
            'SELECT $1, $2, $3, $4, (SELECT coalesce(jsonb_object_agg(k, j -> k), ''{}''::jsonb) '
            'FROM unnest(CASE WHEN j ?& $5 THEN $5 ELSE coalesce(rowcast.pk_columns($1), ''{}''::text[]) END) AS k), %s, %s '
            'FROM (SELECT to_jsonb(rowcast_r.*) || (SELECT to_jsonb(v.*) FROM (SELECT %s FROM (SELECT rowcast_r.*) AS t) AS v) AS j FROM %I AS rowcast_r) AS s',
            CASE TG_OP WHEN 'INSERT' THEN 'j' ELSE 'NULL' END,
            CASE TG_OP WHEN 'DELETE' THEN 'j' ELSE 'NULL' END,
            virt,
            CASE TG_OP WHEN 'INSERT' THEN 'rowcast_new' ELSE 'rowcast_old' END)
        USING TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, lower(TG_OP), keys;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO rowcast.changes (relid, schema_name, table_name, op, pk, "row")
        SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'insert',
               -- The registered key, or the catalog's if a key column is gone (DDL untracked): never null.
               (SELECT coalesce(jsonb_object_agg(k, j -> k), '{}'::jsonb) FROM unnest(CASE WHEN j ?& keys THEN keys ELSE coalesce(rowcast.pk_columns(TG_RELID), '{}'::text[]) END) AS k), j
          FROM (SELECT to_jsonb(rowcast_r.*) AS j FROM rowcast_new AS rowcast_r) AS s;
    ELSE
        INSERT INTO rowcast.changes (relid, schema_name, table_name, op, pk, old)
        SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'delete',
               (SELECT coalesce(jsonb_object_agg(k, j -> k), '{}'::jsonb) FROM unnest(CASE WHEN j ?& keys THEN keys ELSE coalesce(rowcast.pk_columns(TG_RELID), '{}'::text[]) END) AS k), j
          FROM (SELECT to_jsonb(rowcast_r.*) AS j FROM rowcast_old AS rowcast_r) AS s;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 AND current_setting('rowcast.rang', true) IS DISTINCT FROM 'y' THEN
        PERFORM set_config('rowcast.rang', 'y', true);
    END IF;
    RETURN NULL;
END;
$$;

ALTER TABLE rowcast.captured ADD COLUMN per_statement boolean NOT NULL DEFAULT false;

-- Switch a captured plain table between per-statement (true) and per-row (false) capture of
-- INSERT and DELETE. enable_capture() always installs per-row capture (and resets this).
CREATE FUNCTION rowcast.capture_per_statement(tbl regclass, per_statement boolean DEFAULT true) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind "char";
BEGIN
    IF NOT EXISTS (SELECT FROM rowcast.captured r WHERE r.relid = tbl) THEN
        RAISE EXCEPTION 'rowcast: table % is not captured', tbl
            USING HINT = 'enable capture first: SELECT rowcast.enable_capture(...)',
                  ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = tbl;
    IF per_statement AND (kind <> 'r' OR EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = tbl OR i.inhparent = tbl)) THEN
        RAISE EXCEPTION 'rowcast: % is partitioned or in an inheritance tree: it is captured per row', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS rowcast_capture_v3 ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS rowcast_capture_insert_v4 ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS rowcast_capture_delete_v4 ON %s', tbl);
    IF per_statement THEN
        EXECUTE format('CREATE TRIGGER rowcast_capture_v3 AFTER UPDATE ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION rowcast.capture_v3()', tbl);
        EXECUTE format('CREATE TRIGGER rowcast_capture_insert_v4 AFTER INSERT ON %s '
                       'REFERENCING NEW TABLE AS rowcast_new FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture_rows()', tbl);
        EXECUTE format('CREATE TRIGGER rowcast_capture_delete_v4 AFTER DELETE ON %s '
                       'REFERENCING OLD TABLE AS rowcast_old FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture_rows()', tbl);
    ELSE
        EXECUTE format('CREATE TRIGGER rowcast_capture_v3 AFTER INSERT OR UPDATE OR DELETE ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION rowcast.capture_v3()', tbl);
    END IF;
    UPDATE rowcast.captured r SET per_statement = capture_per_statement.per_statement WHERE r.relid = tbl;
    RETURN format('%s: INSERT and DELETE captured per %s', tbl, CASE WHEN per_statement THEN 'statement' ELSE 'row' END);
END;
$$;



-- Least privilege, as for the row trigger (capture_v3.sql): owned by rowcast_capture, which may
-- now also follow the registry (names and key; forget a dropped table), nothing else of it.
REVOKE ALL ON FUNCTION rowcast.capture_ddl_v4() FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.track_ddl() FROM PUBLIC;
GRANT CREATE ON SCHEMA rowcast TO rowcast_capture;
ALTER FUNCTION rowcast.capture_ddl_v4() OWNER TO rowcast_capture;
REVOKE CREATE ON SCHEMA rowcast FROM rowcast_capture;
GRANT UPDATE (schema_name, table_name, pk_columns), DELETE ON rowcast.captured TO rowcast_capture;
REVOKE ALL ON FUNCTION rowcast.ring() FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.capture_rows() FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.capture_per_statement(regclass, boolean) FROM PUBLIC;

REVOKE ALL ON FUNCTION rowcast.virtual_columns(oid) FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.captured_virtual() FROM PUBLIC;
GRANT CREATE ON SCHEMA rowcast TO rowcast_capture;
ALTER FUNCTION rowcast.ring() OWNER TO rowcast_capture;
ALTER FUNCTION rowcast.capture_rows() OWNER TO rowcast_capture;
REVOKE CREATE ON SCHEMA rowcast FROM rowcast_capture;
GRANT EXECUTE ON FUNCTION rowcast.virtual_columns(oid) TO rowcast_capture;

SELECT rowcast.track_ddl();
