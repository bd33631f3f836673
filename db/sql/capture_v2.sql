-- rowcast capture, version 2: the 'coalesced' wake-up mode. Frozen once shipped.
-- Replaces the trigger function (capture_v2) and re-points enable_capture and capture_status at it;
-- capture_v1.sql stays as it was. capture_v2_down.sql undoes this file.

-- The doorbell: one row, unlogged (no WAL for a flag the notifier re-arms constantly). After a
-- crash an unlogged table is empty; the notifier re-inserts the row when it connects.
CREATE UNLOGGED TABLE rowcast.doorbell (
    id    integer PRIMARY KEY CHECK (id = 1),
    armed boolean NOT NULL
);
INSERT INTO rowcast.doorbell VALUES (1, true);

CREATE FUNCTION rowcast.capture_v2() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_row jsonb;
    old_row jsonb;
    old_out jsonb;
    key_val jsonb := '{}'::jsonb;
    col     text;
    ch      rowcast.changes%ROWTYPE;
    payload text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO rowcast.changes (schema_name, table_name, op)
        VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'truncate')
        RETURNING * INTO ch;
    ELSE
        IF TG_OP <> 'DELETE' THEN new_row := to_jsonb(NEW); END IF;
        IF TG_OP <> 'INSERT' THEN old_row := to_jsonb(OLD); END IF;
        FOREACH col IN ARRAY TG_ARGV LOOP
            key_val := key_val || jsonb_build_object(col, coalesce(new_row, old_row) -> col);
        END LOOP;
        IF TG_OP = 'UPDATE' THEN
            -- Only the old values of the columns that changed.
            SELECT coalesce(jsonb_object_agg(o.key, o.value), '{}'::jsonb) INTO old_out
              FROM jsonb_each(old_row) AS o
             WHERE new_row -> o.key IS DISTINCT FROM o.value;
            -- On a key change `pk` is the new key and `old` holds the old key's columns.
        ELSIF TG_OP = 'DELETE' THEN
            old_out := old_row;
        END IF;
        INSERT INTO rowcast.changes (schema_name, table_name, op, pk, "row", old)
        VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, lower(TG_OP), key_val, new_row, old_out)
        RETURNING * INTO ch;
    END IF;

    -- Wake-up mode (docs/DESIGN.md, invariant 2). In 'coalesced' mode a transaction NOTIFYs only if it
    -- claims the armed doorbell; the notifier re-arms it and reads the log. Everyone else skips the
    -- NOTIFY, and with it the cluster-wide commit lock that serialises notifying transactions.
    IF current_setting('rowcast.wake_mode', true) = 'coalesced' THEN
        IF current_setting('rowcast.rang', true) IS DISTINCT FROM '1' THEN
            PERFORM set_config('rowcast.rang', '1', true);  -- once per transaction
            UPDATE rowcast.doorbell SET armed = false
             WHERE id = (SELECT d.id FROM rowcast.doorbell d WHERE d.armed FOR UPDATE SKIP LOCKED);
            IF FOUND THEN
                PERFORM pg_notify('rowcast', '{"wake": true}');
            END IF;
        END IF;
        RETURN NULL;
    END IF;

    payload := jsonb_build_object(
        'id', ch.id, 'xid', ch.xid::text, 'at', ch.at,
        'schema', ch.schema_name, 'table', ch.table_name, 'op', ch.op,
        'pk', ch.pk, 'row', ch."row", 'old', ch.old,
        'actor', jsonb_build_object(
            'user', ch.db_user, 'app', ch.application_name, 'addr', host(ch.client_addr),
            'actor', ch.actor, 'request_id', ch.request_id)
    )::text;
    IF octet_length(payload) >= rowcast.notify_limit() THEN
        payload := jsonb_build_object('id', ch.id, 'ref', true)::text;
    END IF;
    PERFORM pg_notify('rowcast', payload);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION rowcast.enable_capture(tbl regclass) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pk   text[] := rowcast.pk_columns(tbl);
    nsp  text;
    rel  text;
    trg  text;
    kind "char";
BEGIN
    SELECT n.nspname, c.relname, c.relkind INTO nsp, rel, kind
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    IF nsp = 'rowcast' THEN
        RAISE EXCEPTION 'rowcast: % is rowcast''s own table and cannot be captured', tbl;
    END IF;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'rowcast: % is not a table', tbl;
    END IF;
    IF pk IS NULL THEN
        RAISE EXCEPTION 'rowcast: table % has no primary key', tbl
            USING HINT = 'capture identifies rows by their primary key; add one, e.g. ALTER TABLE ... ADD PRIMARY KEY (...)',
                  ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Replace any rowcast trigger (an older version, or a stale key list).
    FOR trg IN SELECT tgname FROM pg_trigger WHERE tgrelid = tbl AND tgname LIKE 'rowcast\_capture\_%' LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trg, tbl);
    END LOOP;
    EXECUTE format(
        'CREATE TRIGGER rowcast_capture_v2 AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION rowcast.capture_v2(%s)',
        tbl, (SELECT string_agg(quote_literal(c), ', ') FROM unnest(pk) AS c));
    EXECUTE format(
        'CREATE TRIGGER rowcast_capture_truncate_v2 AFTER TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture_v2()', tbl);
    INSERT INTO rowcast.captured (schema_name, table_name, pk_columns, version)
    VALUES (nsp, rel, pk, 2)
    ON CONFLICT (schema_name, table_name)
    DO UPDATE SET pk_columns = EXCLUDED.pk_columns, version = EXCLUDED.version, enabled_at = now();
    RETURN format('capture enabled on %I.%I (primary key: %s)', nsp, rel, array_to_string(pk, ', '));
END;
$$;

CREATE OR REPLACE FUNCTION rowcast.capture_status()
    RETURNS TABLE (schema_name text, table_name text, status text, detail text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH trig AS (
        SELECT n.nspname::text AS schema_name, c.relname::text AS table_name, c.oid AS relid,
               bool_or(t.tgname = 'rowcast_capture_v2') AS has_row,
               bool_or(t.tgname = 'rowcast_capture_truncate_v2') AS has_truncate,
               array_agg(t.tgname::text ORDER BY t.tgname) AS names,
               (array_agg(t.tgargs) FILTER (WHERE t.tgname = 'rowcast_capture_v2'))[1] AS args,
               (array_agg(t.tgnargs) FILTER (WHERE t.tgname = 'rowcast_capture_v2'))[1] AS nargs
          FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE t.tgname LIKE 'rowcast\_capture\_%'
         GROUP BY 1, 2, 3
    ), reg AS (
        SELECT r.schema_name, r.table_name, r.pk_columns,
               to_regclass(format('%I.%I', r.schema_name, r.table_name)) AS relid
          FROM rowcast.captured r
    )
    SELECT coalesce(reg.schema_name, trig.schema_name),
           coalesce(reg.table_name, trig.table_name),
           CASE
               WHEN reg.schema_name IS NOT NULL AND reg.relid IS NULL THEN 'table_missing'
               WHEN reg.schema_name IS NULL THEN 'untracked'
               WHEN trig.schema_name IS NULL THEN 'missing'
               WHEN NOT (trig.has_row AND trig.has_truncate) THEN
                    CASE WHEN EXISTS (SELECT 1 FROM unnest(trig.names) x WHERE x NOT LIKE '%\_v2')
                         THEN 'outdated' ELSE 'missing' END
               WHEN rowcast.pk_columns(reg.relid) IS DISTINCT FROM reg.pk_columns THEN 'key_changed'
               ELSE 'ok'
           END,
           CASE
               WHEN reg.schema_name IS NOT NULL AND reg.relid IS NULL THEN 'the table no longer exists'
               WHEN reg.schema_name IS NULL THEN 'has rowcast triggers but was not enabled with enable_capture'
               WHEN trig.schema_name IS NULL THEN 'no rowcast trigger: run rowcast.enable_capture again'
               WHEN NOT (trig.has_row AND trig.has_truncate) THEN
                    'triggers found: ' || array_to_string(trig.names, ', ') || '; expected rowcast_capture_v2 and rowcast_capture_truncate_v2'
               WHEN rowcast.pk_columns(reg.relid) IS DISTINCT FROM reg.pk_columns THEN
                    format('primary key is now (%s), trigger was made for (%s): run rowcast.enable_capture again',
                           array_to_string(rowcast.pk_columns(reg.relid), ', '), array_to_string(reg.pk_columns, ', '))
               ELSE format('capture v2 on (%s)', array_to_string(reg.pk_columns, ', '))
           END
      FROM reg FULL JOIN trig ON trig.relid = reg.relid
     ORDER BY 1, 2
$$;

-- Database-wide switch: new sessions use the new mode; running notifiers hear about it now.
CREATE FUNCTION rowcast.set_wake_mode(mode text) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF mode NOT IN ('notify', 'coalesced') THEN
        RAISE EXCEPTION 'rowcast: wake mode must be notify or coalesced, not %', mode
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('ALTER DATABASE %I SET rowcast.wake_mode = %L', current_database(), mode);
    PERFORM set_config('rowcast.wake_mode', mode, false);
    PERFORM pg_notify('rowcast', json_build_object('mode', mode)::text);
    RETURN format('wake mode of database %s is now %s (new sessions)', current_database(), mode);
END;
$$;

CREATE FUNCTION rowcast.wake_mode() RETURNS text
    LANGUAGE sql STABLE
AS $$ SELECT coalesce(nullif(current_setting('rowcast.wake_mode', true), ''), 'notify') $$;
