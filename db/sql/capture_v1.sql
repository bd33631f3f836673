-- rowcast capture, version 1. A shipped file is frozen: change capture in capture_v2.sql.
-- Executed by an Alembic revision; every statement is idempotent-free on purpose (run once).

CREATE SCHEMA rowcast;
COMMENT ON SCHEMA rowcast IS 'rowcast change capture: log, triggers and helpers';

-- The durable change log. `id` orders changes of one row (docs/DESIGN.md, invariant 5); `xid` is what
-- cursors are built on, since ids are handed out at INSERT time, not at COMMIT.
CREATE TABLE rowcast.changes (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid              xid8        NOT NULL DEFAULT pg_current_xact_id(),
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    schema_name      text        NOT NULL,
    table_name       text        NOT NULL,
    op               text        NOT NULL CHECK (op IN ('insert', 'update', 'delete', 'truncate')),
    pk               jsonb,
    "row"            jsonb,
    old              jsonb,
    db_user          text        NOT NULL DEFAULT session_user,
    application_name text        DEFAULT nullif(current_setting('application_name', true), ''),
    client_addr      inet        DEFAULT inet_client_addr(),
    actor            text        DEFAULT nullif(current_setting('rowcast.actor', true), ''),
    request_id       text        DEFAULT nullif(current_setting('rowcast.request_id', true), '')
);
CREATE INDEX changes_xid_idx ON rowcast.changes (xid);
CREATE INDEX changes_at_idx ON rowcast.changes (at);

-- The highest xid ever pruned: a cursor at or below it can no longer be replayed gap-free.
CREATE TABLE rowcast.prune_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_xid xid8        NOT NULL,
    pruned_at  timestamptz NOT NULL DEFAULT now(),
    removed    bigint      NOT NULL DEFAULT 0
);

-- Which tables are meant to be captured, so `verify` can tell a dropped trigger from a table
-- that was never enabled.
CREATE TABLE rowcast.captured (
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    pk_columns  text[] NOT NULL,
    version     integer NOT NULL,
    enabled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name)
);

-- Bounded NOTIFY payloads: Postgres refuses payloads of 8000 bytes or more, which would fail the
-- writer's transaction. Larger events are announced by reference and read from the log.
CREATE FUNCTION rowcast.notify_limit() RETURNS integer
    LANGUAGE sql IMMUTABLE AS 'SELECT 7900';

-- The generic capture trigger. SECURITY DEFINER so writers need no privilege on the log, with a
-- pinned search_path so a writer cannot redirect it. Consequence: current_user is the owner
-- here, so the writer is recorded as session_user (the login role).
-- TG_ARGV holds the primary-key column names, fixed when capture was enabled.
CREATE FUNCTION rowcast.capture_v1() RETURNS trigger
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

-- Every writer bumps `version` (optimistic concurrency), psql included.
CREATE FUNCTION rowcast.bump_version_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END;
$$;

CREATE FUNCTION rowcast.pk_columns(tbl regclass) RETURNS text[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_agg(a.attname::text ORDER BY k.ord)
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = tbl AND i.indisprimary
$$;

CREATE FUNCTION rowcast.enable_capture(tbl regclass) RETURNS text
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

CREATE FUNCTION rowcast.disable_capture(tbl regclass) RETURNS text
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
    FOR trg IN SELECT tgname FROM pg_trigger WHERE tgrelid = tbl AND tgname LIKE 'rowcast\_capture\_%' LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trg, tbl);
    END LOOP;
    DELETE FROM rowcast.captured WHERE schema_name = nsp AND table_name = rel;
    RETURN format('capture disabled on %I.%I', nsp, rel);
END;
$$;

-- One row per table that is captured or has a rowcast trigger: status is
-- ok | missing (enabled, trigger gone) | outdated (older trigger version) |
-- key_changed (primary key differs from the trigger's) | untracked (trigger, not registered) |
-- table_missing (registered, table dropped).
CREATE FUNCTION rowcast.capture_status()
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

-- Retention: remove log rows older than `older_than`, remembering the highest xid removed so a
-- cursor from before it gets resync_required instead of a silent gap.
CREATE FUNCTION rowcast.prune(older_than interval DEFAULT '24 hours')
    RETURNS TABLE (removed bigint, pruned_xid xid8)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n   bigint;
    top xid8;
BEGIN
    WITH gone AS (
        DELETE FROM rowcast.changes WHERE at < now() - older_than RETURNING xid
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
