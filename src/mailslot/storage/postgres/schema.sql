-- mailslot PostgreSQL store: the whole schema as all migrations together leave it (version 3).
-- For reading and for tests/storage/test_postgres.py, which checks that migrations/*.sql produce
-- exactly this. mailslot itself always applies the migrations. Update it with every new migration.
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
    started_at      timestamptz NOT NULL DEFAULT now(),
    seen_at         timestamptz,               -- cluster: last heartbeat of the node's lease poller
    link            text        NOT NULL DEFAULT ''  -- cluster: where its link listens ('' none)
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
    delivered bigint NOT NULL DEFAULT 0,
    lease_group bytea  -- cluster: the lease (a queue's store key) covering this log; NULL none
);
CREATE INDEX logs_lease_group ON logs (lease_group);

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

-- Several nodes (migrations/0002_cluster.sql, docs/cluster.md).
-- One lease per shared queue (a durable, non-exclusive queue), keyed by the queue's store key: the
-- node that holds it owns the queue (its messages, its consumers' deliveries). Taken and renewed on
-- the database's clock (expires_at = now() + the lease TTL); another node may take it once it has
-- expired, bumping `epoch`. Expiry only decides when a takeover may happen; safety comes from the
-- epoch, which every batch of the owner checks under FOR SHARE (check_leases below).
CREATE TABLE leases (
    queue      bytea       PRIMARY KEY,
    owner      text        NOT NULL,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Metadata revision: one row, bumped by every statement that changes exchanges, queues, bindings
-- or records, in the same transaction. Nodes poll it (no LISTEN/NOTIFY: a notifying commit takes
-- a cluster-wide lock) and reload the metadata when it moved.
CREATE TABLE metadata_revision (
    id       integer PRIMARY KEY CHECK (id = 1),
    revision bigint  NOT NULL
);
INSERT INTO metadata_revision VALUES (1, 0);

CREATE FUNCTION bump_metadata_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE metadata_revision SET revision = revision + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER exchanges_revision AFTER INSERT OR UPDATE OR DELETE ON exchanges
    FOR EACH STATEMENT EXECUTE FUNCTION bump_metadata_revision();
CREATE TRIGGER queues_revision AFTER INSERT OR UPDATE OR DELETE ON queues
    FOR EACH STATEMENT EXECUTE FUNCTION bump_metadata_revision();
CREATE TRIGGER bindings_revision AFTER INSERT OR UPDATE OR DELETE ON bindings
    FOR EACH STATEMENT EXECUTE FUNCTION bump_metadata_revision();
CREATE TRIGGER records_revision AFTER INSERT OR UPDATE OR DELETE ON records
    FOR EACH STATEMENT EXECUTE FUNCTION bump_metadata_revision();

-- Every lease in `groups` that has a row must be held by `node` at the epoch in `group_epochs`
-- (SQLSTATE MSF03 otherwise). FOR SHARE holds the rows until COMMIT: a takeover's UPDATE waits
-- for this transaction, then bumps the epoch, so every later transaction of the former owner
-- fails here. Groups without a row (node-local queues) are not checked.
CREATE FUNCTION check_leases(node text, groups bytea[], group_epochs bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    lost integer;
BEGIN
    -- FILTER, not WHERE: a WHERE on the subquery would be pushed below its row locks, and the rows
    -- that pass the check (the ones that matter) would not be locked at all.
    SELECT count(*) FILTER (WHERE NOT checked.held) INTO lost FROM (
        SELECT leases.owner = node AND leases.epoch = mine.epoch AS held
        FROM leases JOIN unnest(groups, group_epochs) AS mine(queue, epoch) ON leases.queue = mine.queue
        FOR SHARE OF leases
    ) AS checked;
    IF lost > 0 THEN
        RAISE EXCEPTION 'node % lost the lease of % queue(s) it writes', node, lost USING ERRCODE = 'MSF03';
    END IF;
END;
$$;

-- fence() for a node of a cluster: its node row at its epoch (MSF01, as fence()), then its leases.
CREATE FUNCTION fence_leased(node text, node_epoch bigint, batch bigint, groups bytea[], group_epochs bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE nodes SET committed_batch = batch WHERE name = node AND epoch = node_epoch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'node % (epoch %) was superseded by a newer start under its name', node, node_epoch
            USING ERRCODE = 'MSF01';
    END IF;
    PERFORM check_leases(node, groups, group_epochs);
END;
$$;

-- Each shared queue's figures as its owner last wrote them (at each lease poll, only the rows that
-- changed): the management API of a node that does not own a queue shows these. `node` is the
-- writer: a row is believed only while that node holds the queue's lease.
CREATE TABLE queue_stats (
    queue      bytea       PRIMARY KEY,
    node       text        NOT NULL,
    messages   bigint      NOT NULL,
    ready      bigint      NOT NULL,
    unacked    bigint      NOT NULL,
    consumers  integer     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
