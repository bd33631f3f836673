-- rowcast capture, version 5: a bulk statement queues the doorbell once. Frozen once shipped;
-- the migration's downgrade restores version 4's capture_rows() from capture_v4.sql.
--
-- What changed, and why:
--   * rowcast.ring() is queued for COMMIT by a constraint trigger on the log whose WHEN clause is
--     evaluated as each log row is written (capture_v4.sql). The row trigger marks the transaction
--     rung after its first log row, so a transaction queues one call. capture_rows() logs a
--     whole statement with one INSERT and marked the transaction only after it: every row of a
--     first bulk statement passed the WHEN clause, and a 100,000-row INSERT queued 100,000 ring()
--     calls for COMMIT (each a pg_notify; in coalesced mode each also tried the doorbell row),
--     about a third of the statement's capture cost and memory in the after-trigger queue.
--     Now, while the transaction is not rung yet, the statement's first row is logged alone
--     (queueing the one call), the transaction is marked, then the other rows are logged. Both
--     INSERTs read the transition table in its stored order (a tuplestore read from its start),
--     so the log keeps the statement's row order and every row once.
--   * The key of each row is its jsonb minus the other columns (one operator call) instead of a
--     per-row subquery aggregating the key columns; a row whose key columns are not all there
--     (a key column renamed or dropped while DDL was not tracked) still gets the catalog's key.
--   * Unchanged: the log rows themselves (tests/integration/test_bulk_capture.py compares them
--     with the row trigger's).

CREATE OR REPLACE FUNCTION rowcast.capture_rows() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys  text[];
    virt  text;
    n     bigint;
    total bigint := 0;
    lim   bigint;   -- NULL: no limit
    skip  bigint;
    pass  int;
    passes int;
    others text[];  -- the columns outside the key: the key of a row is its jsonb minus these
BEGIN
    SELECT c.pk_columns, c.virtual_columns INTO keys, virt FROM rowcast.captured c WHERE c.relid = TG_RELID;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rowcast: table % is not registered for capture', TG_RELID::regclass
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the owner enables capture with rowcast.enable_capture(...)';
    END IF;
    others := ARRAY(SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
                       AND a.attname::text <> ALL (keys));
    -- Pass 1 (only while not rung): the first row, which queues the doorbell. Then the rest.
    passes := CASE WHEN current_setting('rowcast.rang', true) IS DISTINCT FROM 'y' THEN 2 ELSE 1 END;
    FOR pass IN 1 .. passes LOOP
        IF passes = 2 AND pass = 1 THEN
            lim := 1; skip := 0;
        ELSE
            lim := NULL; skip := passes - 1;
        END IF;
        IF virt IS NOT NULL THEN
            EXECUTE format(
                'INSERT INTO rowcast.changes (relid, schema_name, table_name, op, pk, "row", old) '
                'SELECT $1, $2, $3, $4, (SELECT coalesce(jsonb_object_agg(k, j -> k), ''{}''::jsonb) '
                'FROM unnest(CASE WHEN j ?& $5 THEN $5 ELSE coalesce(rowcast.pk_columns($1), ''{}''::text[]) END) AS k), %s, %s '
                'FROM (SELECT to_jsonb(rowcast_r.*) || (SELECT to_jsonb(v.*) FROM (SELECT %s FROM (SELECT rowcast_r.*) AS t) AS v) AS j '
                'FROM (SELECT * FROM %I LIMIT $6 OFFSET $7) AS rowcast_r) AS s',
                CASE TG_OP WHEN 'INSERT' THEN 'j' ELSE 'NULL' END,
                CASE TG_OP WHEN 'DELETE' THEN 'j' ELSE 'NULL' END,
                virt,
                CASE TG_OP WHEN 'INSERT' THEN 'rowcast_new' ELSE 'rowcast_old' END)
            USING TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, lower(TG_OP), keys, lim, skip;
        ELSIF TG_OP = 'INSERT' THEN
            INSERT INTO rowcast.changes (relid, schema_name, table_name, op, pk, "row")
            SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'insert',
                   -- The registered key, or the catalog's if a key column is gone (DDL untracked): never null.
                   CASE WHEN j ?& keys THEN j - others
                        ELSE (SELECT coalesce(jsonb_object_agg(k, j -> k), '{}'::jsonb) FROM unnest(coalesce(rowcast.pk_columns(TG_RELID), '{}'::text[])) AS k) END, j
              FROM (SELECT to_jsonb(rowcast_r.*) AS j FROM rowcast_new AS rowcast_r LIMIT lim OFFSET skip) AS s;
        ELSE
            INSERT INTO rowcast.changes (relid, schema_name, table_name, op, pk, old)
            SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'delete',
                   CASE WHEN j ?& keys THEN j - others
                        ELSE (SELECT coalesce(jsonb_object_agg(k, j -> k), '{}'::jsonb) FROM unnest(coalesce(rowcast.pk_columns(TG_RELID), '{}'::text[])) AS k) END, j
              FROM (SELECT to_jsonb(rowcast_r.*) AS j FROM rowcast_old AS rowcast_r LIMIT lim OFFSET skip) AS s;
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        EXIT WHEN n = 0;  -- an empty statement logs nothing and leaves the transaction unrung
        IF pass = 1 AND passes = 2 THEN
            PERFORM set_config('rowcast.rang', 'y', true);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
