-- Least-privilege roles, version 1. Roles are cluster-wide (created once, kept on downgrade);
-- the grants are per database. Give a login role one of them: GRANT rowcast_notifier TO my_login.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rowcast_notifier') THEN
        CREATE ROLE rowcast_notifier NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rowcast_app') THEN
        CREATE ROLE rowcast_app NOLOGIN;
    END IF;
END
$$;

-- The notifier LISTENs (no privilege needed) and reads the change log; in coalesced mode it also
-- re-arms the doorbell. It cannot read or write the captured tables, nor write the log.
GRANT USAGE ON SCHEMA rowcast TO rowcast_notifier;
GRANT SELECT ON rowcast.changes, rowcast.prune_state, rowcast.captured TO rowcast_notifier;
GRANT SELECT, INSERT, UPDATE ON rowcast.doorbell TO rowcast_notifier;
GRANT EXECUTE ON FUNCTION rowcast.wake_mode() TO rowcast_notifier;

-- The app (the API) reads and writes the demo tables; the capture trigger writes the log on its
-- behalf (SECURITY DEFINER), so the app has no privilege on rowcast.changes at all.
GRANT USAGE ON SCHEMA public TO rowcast_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.books, public.authors TO rowcast_app;
GRANT USAGE ON SCHEMA rowcast TO rowcast_app;  -- to reach the trigger functions, nothing else

-- Administrative functions stay with the owner (the DBA / migrations).
REVOKE EXECUTE ON FUNCTION rowcast.enable_capture(regclass), rowcast.disable_capture(regclass),
    rowcast.prune(interval), rowcast.set_wake_mode(text) FROM PUBLIC;
