-- mailslot embedded store, schema version 1.
-- Applied by mailslot.storage.sqlite._schema.migrate() inside one transaction, which then sets
-- PRAGMA user_version = 1. Never edit a released migration: add 0002_*.sql instead.

-- One row per message per queue. Keyed by (queue, seq) so read(queue, after_seq, limit) is one
-- range scan of the primary-key B-tree. WITHOUT ROWID: one B-tree per insert instead of two
-- (table + unique index); rows of typical size (< ~1 KiB) stay inline in the leaf pages and larger
-- bodies spill to overflow pages, which a range scan only touches for the rows it returns.
CREATE TABLE messages (
    queue       TEXT    NOT NULL,           -- opaque queue key chosen by the core (encodes the vhost)
    seq         INTEGER NOT NULL,           -- queue-local position assigned by the core
    persistent  INTEGER NOT NULL,           -- 0: transient (paged out), deleted by recover()
    redelivered INTEGER NOT NULL DEFAULT 0,
    exchange    TEXT    NOT NULL,
    routing_key TEXT    NOT NULL,
    properties  BLOB    NOT NULL,           -- raw AMQP 0-9-1 content-header property block
    body        BLOB    NOT NULL,
    PRIMARY KEY (queue, seq)
) WITHOUT ROWID;

-- Metadata. Rowid tables so load() lists rows in first-save order (upserts keep the rowid).
-- arguments: field tables as tagged JSON (see _codec.py).
CREATE TABLE exchanges (
    vhost       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    durable     INTEGER NOT NULL,
    auto_delete INTEGER NOT NULL,
    internal    INTEGER NOT NULL,
    arguments   TEXT    NOT NULL,
    UNIQUE (vhost, name)
);

CREATE TABLE queues (
    vhost       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    durable     INTEGER NOT NULL,
    exclusive   INTEGER NOT NULL,
    auto_delete INTEGER NOT NULL,
    arguments   TEXT    NOT NULL,
    UNIQUE (vhost, name)
);

CREATE TABLE bindings (
    vhost            TEXT NOT NULL,
    source           TEXT NOT NULL,
    destination      TEXT NOT NULL,
    destination_kind TEXT NOT NULL,         -- 'queue' or 'exchange' (exchange-to-exchange)
    routing_key      TEXT NOT NULL,
    arguments_key    TEXT NOT NULL,         -- canonical JSON of the arguments, part of the identity
    arguments        TEXT NOT NULL,
    UNIQUE (vhost, source, destination, destination_kind, routing_key, arguments_key)
);
