-- Undoes capture_v4.sql. The migration first restores version 3's capture_status() and row
-- trigger body from their frozen file (capture_v3.sql); this file does the rest.

CREATE INDEX changes_xid_idx ON rowcast.changes (xid);
DROP INDEX rowcast.changes_xid_id_idx;
-- Version 3 captures per row only.
SELECT rowcast.capture_per_statement(r.relid, false) FROM rowcast.captured r
 WHERE r.per_statement AND EXISTS (SELECT FROM pg_class c WHERE c.oid = r.relid);
DROP FUNCTION rowcast.capture_per_statement(regclass, boolean);
ALTER TABLE rowcast.captured DROP COLUMN per_statement;
DROP FUNCTION rowcast.capture_rows();
DROP TRIGGER changes_ring ON rowcast.changes;
DROP FUNCTION rowcast.ring();
DROP TRIGGER captured_virtual ON rowcast.captured;
DROP FUNCTION rowcast.captured_virtual();
ALTER TABLE rowcast.captured DROP COLUMN virtual_columns;
DROP FUNCTION rowcast.virtual_columns(oid);

-- Dropping an event trigger needs its owner (a superuser); a non-superuser install never had them.
DROP EVENT TRIGGER IF EXISTS rowcast_ddl_v4;
DROP EVENT TRIGGER IF EXISTS rowcast_drop_v4;
DROP FUNCTION rowcast.track_ddl();
DROP FUNCTION rowcast.capture_ddl_v4();
REVOKE UPDATE (schema_name, table_name, pk_columns), DELETE ON rowcast.captured FROM rowcast_capture;

-- Version 3 knows only row changes: schema changes leave the log with the ops they used.
DELETE FROM rowcast.changes WHERE op IN ('schema', 'drop');
ALTER TABLE rowcast.changes
    DROP CONSTRAINT changes_op_check,
    ADD CONSTRAINT changes_op_check CHECK (op IN ('insert', 'update', 'delete', 'truncate'));
