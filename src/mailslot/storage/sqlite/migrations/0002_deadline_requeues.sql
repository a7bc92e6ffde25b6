-- mailslot embedded store, schema version 2: StoredMessage.deadline and .requeues.
-- Never edit a released migration: add 0003_*.sql instead.

-- When the message expires (queue TTL) or is due (delay store), in ms since the epoch; 0: none.
ALTER TABLE messages ADD COLUMN deadline INTEGER NOT NULL DEFAULT 0;

-- The `redelivered` column keeps its name but now holds the requeue count (StoredMessage.requeues):
--   0   never redelivered
--   n   requeued n times (stage_mark_redelivered sets it to max(redelivered, 0) + 1)
--   -1  appended with redelivered = true but no requeue counted
-- redelivered is reported as `redelivered <> 0`. A version-1 row flagged 1 reads as one requeue.
