-- Every statement mailslot.cluster runs, by name (loaded like storage/postgres/queries.sql).
-- Unqualified names: each connection's search_path is the install's schema. Times are the
-- database's (now()), never a node's clock: nodes may disagree about the time, not about now().

-- name: lease_table
SELECT queue, owner, epoch, expires_at < now() FROM leases;

-- name: take_leases
-- Take these queues' leases: create the missing ones, take over the expired ones and those held
-- under this node's name by a former process. epoch + 1 fences the former holder.
INSERT INTO leases (queue, owner, epoch, expires_at)
SELECT queue, %(node)s, 1, now() + make_interval(secs => %(ttl)s) FROM unnest(%(queues)s::bytea[]) AS queue
ON CONFLICT (queue) DO UPDATE SET owner = excluded.owner, epoch = leases.epoch + 1, expires_at = excluded.expires_at
WHERE leases.expires_at < now() OR leases.owner = excluded.owner
RETURNING queue, epoch;

-- name: renew_leases
-- One statement for all of a node's leases, each only at the epoch it holds.
UPDATE leases SET expires_at = now() + make_interval(secs => %(ttl)s)
FROM unnest(%(queues)s::bytea[], %(epochs)s::bigint[]) AS mine(queue, epoch)
WHERE leases.queue = mine.queue AND leases.owner = %(node)s AND leases.epoch = mine.epoch
RETURNING leases.queue;

-- name: release_leases
-- A clean stop: the leases expire now, so another node takes them over at its next poll.
UPDATE leases SET expires_at = '-infinity'
FROM unnest(%(queues)s::bytea[], %(epochs)s::bigint[]) AS mine(queue, epoch)
WHERE leases.queue = mine.queue AND leases.owner = %(node)s AND leases.epoch = mine.epoch;

-- name: drop_lease
DELETE FROM leases WHERE queue = %(queue)s;

-- name: queue_row
SELECT durable, exclusive FROM queues WHERE vhost = %(vhost)s AND name = %(name)s;

-- name: delete_transient_queue
-- A non-durable or exclusive queue deleted (transient.py): its row and every binding to it, whichever
-- node made the binding, in one statement, so no node keeps routing to it.
WITH unbound AS (
    DELETE FROM bindings WHERE vhost = %(vhost)s AND destination = %(name)s AND destination_kind = 'queue'
)
DELETE FROM queues WHERE vhost = %(vhost)s AND name = %(name)s;

-- name: drop_transient_exchanges
-- A node starts and no other node runs (none whose heartbeat is within the lease TTL, nor started
-- within it and not beaten since): the cluster stopped, so its non-durable exchanges are gone, as in
-- RabbitMQ; their rows and every binding from or to them go in one statement. Returns how many went.
WITH gone AS (
    DELETE FROM exchanges WHERE NOT durable AND NOT EXISTS (
        SELECT 1 FROM nodes WHERE name <> %(node)s AND (seen_at > now() - make_interval(secs => %(ttl)s)
            OR (started_at > now() - make_interval(secs => %(ttl)s) AND (seen_at IS NULL OR seen_at < started_at))))
    RETURNING vhost, name
),
unbound AS (
    DELETE FROM bindings USING gone WHERE bindings.vhost = gone.vhost
        AND (bindings.source = gone.name OR (bindings.destination_kind = 'exchange' AND bindings.destination = gone.name))
)
SELECT count(*) FROM gone;

-- name: drop_lost_transient
-- Non-durable and exclusive queues (transient.py) whose owner lost them: their leases expired or
-- left by a former process of this node are deleted; returned with those that have no lease at all.
WITH wanted AS (SELECT unnest(%(queues)s::bytea[]) AS queue),
lost AS (
    DELETE FROM leases WHERE queue IN (SELECT queue FROM wanted) AND (expires_at < now() OR owner = %(node)s)
    RETURNING queue
)
SELECT queue FROM lost
UNION
SELECT queue FROM wanted WHERE NOT EXISTS (SELECT 1 FROM leases WHERE leases.queue = wanted.queue);

-- name: drop_empty_leases
-- Leases of logs that hold no row any more (a former node process's delayed-message schedule, all
-- released): dropped, so they are not renewed for ever. A row still there (a release not committed
-- yet) keeps its lease, so no row is ever left without one.
DELETE FROM leases
WHERE queue = ANY(%(queues)s::bytea[]) AND owner = %(node)s
    AND NOT EXISTS (SELECT 1 FROM logs JOIN messages ON messages.log_id = logs.id WHERE logs.key = leases.queue)
RETURNING queue;

-- name: heartbeat
UPDATE nodes SET seen_at = now(), link = %(link)s WHERE name = %(node)s AND epoch = %(epoch)s;

-- name: cluster_nodes
SELECT name, epoch, started_at, seen_at, link,
    coalesce(seen_at > now() - make_interval(secs => %(ttl)s), false)
FROM nodes ORDER BY name;

-- name: ensure_logs
-- Ids of these logs, created if need be, with the lease that covers each (no ownership change:
-- in a cluster, leases fence the writes, not logs.owner).
INSERT INTO logs (key, lease_group)
SELECT key, grp FROM unnest(%(keys)s::bytea[], %(groups)s::bytea[]) AS wanted(key, grp)
ON CONFLICT (key) DO UPDATE SET lease_group = excluded.lease_group
RETURNING id, key;

-- name: group_logs
SELECT id, key FROM logs WHERE lease_group = ANY(%(groups)s::bytea[]);

-- name: check_leases
SELECT check_leases(%(node)s, %(groups)s::bytea[], %(epochs)s::bigint[]);

-- name: fence_leased
SELECT fence_leased(%(node)s, %(node_epoch)s, %(batch)s, %(groups)s::bytea[], %(epochs)s::bigint[]);

-- name: drop_transient_of
DELETE FROM messages WHERE log_id = ANY(%(log_ids)s::bigint[]) AND NOT persistent;

-- name: clamp_delivered_of
UPDATE logs SET delivered = coalesce((SELECT max(seq) FROM messages WHERE log_id = logs.id), 0)
WHERE id = ANY(%(log_ids)s::bigint[])
    AND delivered > coalesce((SELECT max(seq) FROM messages WHERE log_id = logs.id), 0);

-- name: count_of
SELECT log_id, count(*), max(seq) FROM messages WHERE log_id = ANY(%(log_ids)s::bigint[]) GROUP BY log_id;

-- name: shared_queues
SELECT vhost, name FROM queues WHERE NOT exclusive;

-- name: metadata_revision
SELECT revision FROM metadata_revision WHERE id = 1;

-- name: all_records
SELECT kind, key, value FROM records ORDER BY id;

-- name: write_queue_stats
-- The figures of the queues this node owns that changed since its last write (stats.py), one statement.
INSERT INTO queue_stats (queue, node, messages, ready, unacked, consumers, updated_at)
SELECT queue, %(node)s, ready + unacked, ready, unacked, consumers, now()
FROM unnest(%(queues)s::bytea[], %(ready)s::bigint[], %(unacked)s::bigint[], %(consumers)s::integer[])
    AS mine(queue, ready, unacked, consumers)
ON CONFLICT (queue) DO UPDATE SET node = excluded.node, messages = excluded.messages, ready = excluded.ready,
    unacked = excluded.unacked, consumers = excluded.consumers, updated_at = excluded.updated_at;

-- name: drop_queue_stats
-- Rows this node wrote for queues it no longer owns (deleted, or lost: then the new owner writes its own).
DELETE FROM queue_stats WHERE queue = ANY(%(queues)s::bytea[]) AND node = %(node)s;

-- name: queue_stats
-- The rows written since `since` (the database's time; '-infinity': all of them).
SELECT queue, node, ready, unacked, consumers FROM queue_stats WHERE updated_at > %(since)s;

-- name: database_now
SELECT now();
