-- mailslot embedded store, schema version 6: a body that several queues got in one batch (one message
-- routed to several queues) is stored once. Never edit a released migration: add 0007_*.sql instead.

-- One row per shared body; `refs` counts the `messages` rows that point at it.
CREATE TABLE bodies (
    id   INTEGER PRIMARY KEY,
    refs INTEGER NOT NULL,
    body BLOB    NOT NULL
);

-- NULL: the body is in messages.body (every unshared message). Otherwise messages.body is empty and
-- the body is bodies.body of this id.
ALTER TABLE messages ADD COLUMN body_id INTEGER;

-- Deleting a row (ack, purge, recovery's transient sweep, INSERT OR REPLACE with recursive_triggers)
-- releases its reference in the same transaction, so a crash can neither leak a body nor free one
-- that a queue still points at.
CREATE TRIGGER messages_release_body AFTER DELETE ON messages
WHEN old.body_id IS NOT NULL
BEGIN
    UPDATE bodies SET refs = refs - 1 WHERE id = old.body_id;
    DELETE FROM bodies WHERE id = old.body_id AND refs <= 0;
END;
