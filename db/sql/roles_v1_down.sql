-- Undoes the grants of roles_v1.sql in this database. The roles themselves are cluster-wide and
-- may hold grants in other databases, so they are left in place.
REVOKE ALL ON SCHEMA rowcast FROM rowcast_notifier, rowcast_app;
REVOKE ALL ON rowcast.changes, rowcast.prune_state, rowcast.captured, rowcast.doorbell FROM rowcast_notifier;
REVOKE ALL ON FUNCTION rowcast.wake_mode() FROM rowcast_notifier;
REVOKE ALL ON public.books, public.authors FROM rowcast_app;
REVOKE USAGE ON SCHEMA public FROM rowcast_app;
GRANT EXECUTE ON FUNCTION rowcast.enable_capture(regclass), rowcast.disable_capture(regclass),
    rowcast.prune(interval), rowcast.set_wake_mode(text) TO PUBLIC;
