-- Undo presence_v1.sql.
DROP TABLE rowcast.presence;
