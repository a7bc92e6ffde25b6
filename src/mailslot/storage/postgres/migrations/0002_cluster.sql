-- mailslot PostgreSQL store, schema version 2: several nodes sharing queues (docs/cluster.md).
-- Applied after 0001 in the same way (one transaction, search_path = the install's schema).

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

-- The lease a log belongs to: a queue's own log, its priority lanes and its deduplication window
-- move together. NULL: a log no lease covers (a node-local queue, an exchange's feature rows).
ALTER TABLE logs ADD COLUMN lease_group bytea;
CREATE INDEX logs_lease_group ON logs (lease_group);

-- Cluster membership: when each node was last seen (its lease poller writes it every TTL/3) and
-- where its cluster link listens ('' none), for /api/nodes and for forwarding.
ALTER TABLE nodes ADD COLUMN seen_at timestamptz;
ALTER TABLE nodes ADD COLUMN link text NOT NULL DEFAULT '';

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
