-- mailslot PostgreSQL store, schema version 1 (docs/decisions/0003-postgres-store.md).
-- Applied by mailslot.storage.postgres._migrate inside one transaction, with search_path set to the
-- install's schema (--postgres-schema) and an advisory lock held, so names here are unqualified.
-- Never edit a released migration: add 0002_*.sql, and update schema.sql to match (a test checks).
--
-- Strings that come from peers (names, routing keys, store keys) are bytea holding UTF-8: AMQP
-- allows NUL in them and PostgreSQL text cannot hold NUL. Read them with convert_from(x, 'UTF8').

-- One row per broker process name. `epoch` is bumped by every start under that name: a batch
-- transaction updates its node row only WHERE epoch = its own, so an older process under the same
-- name (paused, then resumed) can no longer commit. `committed_batch` is the number of the last
-- batch committed: after a connection broke during COMMIT the node reads it back to learn whether
-- that batch is durable (an ambiguous commit) instead of writing it twice.
CREATE TABLE nodes (
    name            text        PRIMARY KEY,
    epoch           bigint      NOT NULL,
    committed_batch bigint      NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per message-log key (a queue, a priority lane, a delay store, a deduplication window: the
-- core's opaque store keys). Messages refer to it by a bigint id instead of repeating the key.
-- `owner` is the node that may write the log and `epoch` the fencing token of its ownership: every
-- batch transaction checks (id, epoch, owner) of the logs it writes under FOR SHARE (fence() below),
-- so a takeover (UPDATE ... SET owner, epoch = epoch + 1) waits for a batch in flight and every later
-- batch of the former owner fails. The scale-out adds the lease expiry here (0003's design).
-- `delivered`: the delivery watermark (MessageLog.stage_delivered): every message with seq <= it was
-- handed to a consumer, so read() reports it redelivered after a crash; 0 none.
CREATE TABLE logs (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key       bytea  NOT NULL UNIQUE,
    owner     text,
    epoch     bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0
);

-- Messages of every log, keyed (log_id, seq): read(key, after_seq, limit) is one range scan of the
-- primary key and an acknowledgement one index probe. No foreign key to logs: a per-row RI check
-- would lock the logs row once per message; fence() checks the logs once per batch instead.
-- `requeues`: 0 never redelivered, n requeued n times, -1 appended as redelivered with none counted
-- (as in the SQLite store). `deadline`: ms since the epoch, 0 none (StoredMessage.deadline).
-- Autovacuum: a message table churns (every row is inserted, then deleted) while holding few live
-- rows, so the default trigger (20% of the live rows) would vacuum after a handful of deletes and
-- the default cost limit would make each vacuum slow; vacuum every 10,000 dead rows, unthrottled.
CREATE TABLE messages (
    log_id      bigint  NOT NULL,
    seq         bigint  NOT NULL,
    persistent  boolean NOT NULL,
    requeues    integer NOT NULL DEFAULT 0,
    deadline    bigint  NOT NULL DEFAULT 0,
    exchange    bytea   NOT NULL,
    routing_key bytea   NOT NULL,
    properties  bytea   NOT NULL,
    body        bytea   NOT NULL,
    codec       text    NOT NULL DEFAULT 'amqp091',  -- which protocol's codec encoded `properties`
    PRIMARY KEY (log_id, seq)
) WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_vacuum_cost_delay = 0
);
-- Bodies are opaque and often compressed already: store large ones out of line without trying pglz.
ALTER TABLE messages ALTER COLUMN body SET STORAGE EXTERNAL;

-- Fencing, checked first in every batch transaction (docs/decisions/0003-postgres-store.md):
-- the node row must still carry this process's epoch (it records the batch number), and every log
-- the batch writes must still be owned by this node at the epoch the node claimed it with. FOR SHARE
-- holds those rows until COMMIT, so a concurrent takeover waits for this batch and sees its rows.
CREATE FUNCTION fence(node text, node_epoch bigint, batch bigint, log_ids bigint[], log_epochs bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    held integer;
BEGIN
    UPDATE nodes SET committed_batch = batch WHERE name = node AND epoch = node_epoch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'node % (epoch %) was superseded by a newer start under its name', node, node_epoch
            USING ERRCODE = 'MSF01';
    END IF;
    SELECT count(*) INTO held FROM (
        SELECT 1 FROM logs JOIN unnest(log_ids, log_epochs) AS mine(id, epoch)
            ON logs.id = mine.id AND logs.epoch = mine.epoch
        WHERE logs.owner = node
        FOR SHARE OF logs
    ) AS owned;
    IF held <> cardinality(log_ids) THEN
        RAISE EXCEPTION 'node % no longer owns % of the logs it writes', node, cardinality(log_ids) - held
            USING ERRCODE = 'MSF02';
    END IF;
END;
$$;

-- Metadata: exchanges, queues, bindings and runtime-configuration records. `id` keeps first-save
-- order for load() (an upsert keeps the row, hence its id). arguments/value: JSON as text (field
-- tables as tagged JSON, mailslot.storage.sqlite._codec): Python writes NaN and Infinity, which
-- neither json nor jsonb accept, and jsonb would not keep key order.
CREATE TABLE exchanges (
    id          bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vhost       bytea   NOT NULL,
    name        bytea   NOT NULL,
    type        text    NOT NULL,
    durable     boolean NOT NULL,
    auto_delete boolean NOT NULL,
    internal    boolean NOT NULL,
    arguments   text    NOT NULL,
    UNIQUE (vhost, name)
);

CREATE TABLE queues (
    id          bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vhost       bytea   NOT NULL,
    name        bytea   NOT NULL,
    durable     boolean NOT NULL,
    exclusive   boolean NOT NULL,
    auto_delete boolean NOT NULL,
    arguments   text    NOT NULL,
    UNIQUE (vhost, name)
);

CREATE TABLE bindings (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vhost            bytea  NOT NULL,
    source           bytea  NOT NULL,
    destination      bytea  NOT NULL,
    destination_kind text   NOT NULL,  -- 'queue' or 'exchange' (exchange-to-exchange)
    routing_key      bytea  NOT NULL,
    arguments_key    bytea  NOT NULL,  -- canonical JSON of the arguments, part of the identity
    arguments        text   NOT NULL,
    UNIQUE (vhost, source, destination, destination_kind, routing_key, arguments_key)
);

CREATE TABLE records (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind  text   NOT NULL,
    key   bytea  NOT NULL,
    value text   NOT NULL,
    UNIQUE (kind, key)
);
