DROP FUNCTION rowcast.table_activity(integer);
DROP TABLE rowcast.notifiers;
