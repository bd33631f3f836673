-- Undoes capture_v3.sql. The migration first restores version 2's trigger and helper functions
-- from their frozen files (capture_v1.sql, capture_v2.sql); this file does the rest.

-- Version 2 kept the wake-up mode as a database default.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET rowcast.wake_mode = %L',
                   current_database(), (SELECT wake_mode FROM rowcast.config));
END
$$;

-- Back onto the version-2 triggers (enable_capture is version 2's again by now).
SELECT rowcast.enable_capture(c.relid::regclass)
  FROM rowcast.captured c WHERE EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = c.relid);

DROP FUNCTION rowcast.capture_v3();
DROP FUNCTION rowcast.forget_capture(text);
REVOKE ALL ON rowcast.changes, rowcast.captured, rowcast.config, rowcast.doorbell FROM rowcast_capture;
REVOKE ALL ON FUNCTION rowcast.pk_columns(regclass) FROM rowcast_capture;
REVOKE ALL ON SCHEMA rowcast FROM rowcast_capture;
DROP TABLE rowcast.config;
DROP INDEX rowcast.captured_relid_idx;
ALTER TABLE rowcast.captured DROP COLUMN relid;
ALTER TABLE rowcast.changes DROP COLUMN relid;
