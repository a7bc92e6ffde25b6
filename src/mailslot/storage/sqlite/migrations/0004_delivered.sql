-- mailslot embedded store, schema version 4: delivery watermarks (MessageLog.stage_delivered).
-- Never edit a released migration: add 0005_*.sql instead.

-- Per queue, the highest seq handed to a consumer: messages at or below it are read back with
-- redelivered = true (after a crash too), as RabbitMQ's classic queues flag what was delivered.
-- One row per queue, upserted once per batch, so a delivery costs no write to its message row.
CREATE TABLE delivered (
    queue TEXT PRIMARY KEY,
    seq   INTEGER NOT NULL
) WITHOUT ROWID;
