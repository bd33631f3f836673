-- Undoes capture_v2.sql: back to the version-1 trigger, enable_capture and capture_status.

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
        'CREATE TRIGGER rowcast_capture_v1 AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION rowcast.capture_v1(%s)',
        tbl, (SELECT string_agg(quote_literal(c), ', ') FROM unnest(pk) AS c));
    EXECUTE format(
        'CREATE TRIGGER rowcast_capture_truncate_v1 AFTER TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture_v1()', tbl);
    INSERT INTO rowcast.captured (schema_name, table_name, pk_columns, version)
    VALUES (nsp, rel, pk, 1)
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
               bool_or(t.tgname = 'rowcast_capture_v1') AS has_row,
               bool_or(t.tgname = 'rowcast_capture_truncate_v1') AS has_truncate,
               array_agg(t.tgname::text ORDER BY t.tgname) AS names,
               (array_agg(t.tgargs) FILTER (WHERE t.tgname = 'rowcast_capture_v1'))[1] AS args,
               (array_agg(t.tgnargs) FILTER (WHERE t.tgname = 'rowcast_capture_v1'))[1] AS nargs
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
                    CASE WHEN EXISTS (SELECT 1 FROM unnest(trig.names) x WHERE x NOT LIKE '%\_v1')
                         THEN 'outdated' ELSE 'missing' END
               WHEN rowcast.pk_columns(reg.relid) IS DISTINCT FROM reg.pk_columns THEN 'key_changed'
               ELSE 'ok'
           END,
           CASE
               WHEN reg.schema_name IS NOT NULL AND reg.relid IS NULL THEN 'the table no longer exists'
               WHEN reg.schema_name IS NULL THEN 'has rowcast triggers but was not enabled with enable_capture'
               WHEN trig.schema_name IS NULL THEN 'no rowcast trigger: run rowcast.enable_capture again'
               WHEN NOT (trig.has_row AND trig.has_truncate) THEN
                    'triggers found: ' || array_to_string(trig.names, ', ') || '; expected rowcast_capture_v1 and rowcast_capture_truncate_v1'
               WHEN rowcast.pk_columns(reg.relid) IS DISTINCT FROM reg.pk_columns THEN
                    format('primary key is now (%s), trigger was made for (%s): run rowcast.enable_capture again',
                           array_to_string(rowcast.pk_columns(reg.relid), ', '), array_to_string(reg.pk_columns, ', '))
               ELSE format('capture v1 on (%s)', array_to_string(reg.pk_columns, ', '))
           END
      FROM reg FULL JOIN trig ON trig.relid = reg.relid
     ORDER BY 1, 2
$$;

SELECT rowcast.enable_capture(to_regclass(format('%I.%I', schema_name, table_name)))
  FROM rowcast.captured WHERE to_regclass(format('%I.%I', schema_name, table_name)) IS NOT NULL;
DROP FUNCTION rowcast.capture_v2();
DROP FUNCTION rowcast.set_wake_mode(text);
DROP FUNCTION rowcast.wake_mode();
DROP TABLE rowcast.doorbell;
