-- Every statement the PostgreSQL store runs, by name (mailslot.storage.postgres._queries loads them).
-- Unqualified names: each connection's search_path is the install's schema (--postgres-schema).

-- name: start_node
-- A process starts under a node name: a new epoch fences every older process under that name.
INSERT INTO nodes (name, epoch) VALUES (%(node)s, 1)
ON CONFLICT (name) DO UPDATE SET epoch = nodes.epoch + 1, started_at = now()
RETURNING epoch, committed_batch;

-- name: node_state
SELECT epoch, committed_batch FROM nodes WHERE name = %(node)s;

-- name: claim_logs
-- Take the write ownership of these keys (creating the ones that do not exist): epoch + 1 fences the
-- former owner. Single-node mode claims every key it writes; the scale-out claims under a lease.
INSERT INTO logs (key, owner, epoch) SELECT key, %(node)s, 1 FROM unnest(%(keys)s::bytea[]) AS key
ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, epoch = logs.epoch + 1
RETURNING id, key, epoch;

-- name: claim_all_logs
UPDATE logs SET owner = %(node)s, epoch = epoch + 1 RETURNING id, key, epoch;

-- name: find_log
SELECT id FROM logs WHERE key = %(key)s;

-- name: fence
SELECT fence(%(node)s, %(node_epoch)s, %(batch)s, %(log_ids)s::bigint[], %(log_epochs)s::bigint[]);

-- name: copy_messages
COPY messages (log_id, seq, persistent, requeues, deadline, exchange, routing_key, properties, body, codec)
FROM STDIN (FORMAT BINARY);

-- name: purge_logs
DELETE FROM messages WHERE log_id = ANY(%(log_ids)s::bigint[]);

-- name: forget_delivered
UPDATE logs SET delivered = 0 WHERE id = ANY(%(log_ids)s::bigint[]) AND delivered <> 0;

-- name: mark_delivered
-- One statement for every log the batch delivered from; a lower watermark changes nothing.
UPDATE logs SET delivered = marked.seq
FROM unnest(%(log_ids)s::bigint[], %(seqs)s::bigint[]) AS marked(id, seq)
WHERE logs.id = marked.id AND logs.delivered < marked.seq;

-- name: mark_redelivered
-- requeues: -1 (flagged, none counted) and 0 both become n; seqs/counts are parallel arrays.
UPDATE messages SET requeues = greatest(messages.requeues, 0) + marked.n
FROM unnest(%(seqs)s::bigint[], %(counts)s::integer[]) AS marked(seq, n)
WHERE messages.log_id = %(log_id)s AND messages.seq = marked.seq;

-- name: remove_messages
DELETE FROM messages WHERE log_id = %(log_id)s AND seq = ANY(%(seqs)s::bigint[]);

-- name: read_messages
-- redelivered: requeued (requeues <> 0) or at or below the log's delivery watermark.
SELECT seq, persistent, requeues, deadline, exchange, routing_key, properties, body, codec,
    requeues <> 0 OR seq <= (SELECT delivered FROM logs WHERE id = %(log_id)s)
FROM messages WHERE log_id = %(log_id)s AND seq > %(after_seq)s ORDER BY seq LIMIT %(limit)s;

-- name: drop_transient
DELETE FROM messages WHERE NOT persistent;

-- name: clamp_delivered
-- The core numbers a queue's new messages from its highest seq: no watermark may reach above it.
UPDATE logs SET delivered = coalesce((SELECT max(seq) FROM messages WHERE log_id = logs.id), 0)
WHERE delivered > coalesce((SELECT max(seq) FROM messages WHERE log_id = logs.id), 0);

-- name: count_messages
SELECT logs.key, count(*), max(messages.seq) FROM messages JOIN logs ON logs.id = messages.log_id
GROUP BY logs.key ORDER BY logs.key;

-- name: drop_empty_logs
-- Keys with no message left (deleted queues, drained windows) go; a later write claims them again.
DELETE FROM logs WHERE NOT EXISTS (SELECT 1 FROM messages WHERE messages.log_id = logs.id);

-- name: save_exchange
INSERT INTO exchanges (vhost, name, type, durable, auto_delete, internal, arguments)
VALUES (%(vhost)s, %(name)s, %(type)s, %(durable)s, %(auto_delete)s, %(internal)s, %(arguments)s)
ON CONFLICT (vhost, name) DO UPDATE SET type = excluded.type, durable = excluded.durable,
    auto_delete = excluded.auto_delete, internal = excluded.internal, arguments = excluded.arguments;

-- name: delete_exchange
DELETE FROM exchanges WHERE vhost = %(vhost)s AND name = %(name)s;

-- name: load_exchanges
SELECT vhost, name, type, durable, auto_delete, internal, arguments FROM exchanges ORDER BY id;

-- name: save_queue
INSERT INTO queues (vhost, name, durable, exclusive, auto_delete, arguments)
VALUES (%(vhost)s, %(name)s, %(durable)s, %(exclusive)s, %(auto_delete)s, %(arguments)s)
ON CONFLICT (vhost, name) DO UPDATE SET durable = excluded.durable, exclusive = excluded.exclusive,
    auto_delete = excluded.auto_delete, arguments = excluded.arguments;

-- name: delete_queue
DELETE FROM queues WHERE vhost = %(vhost)s AND name = %(name)s;

-- name: load_queues
SELECT vhost, name, durable, exclusive, auto_delete, arguments FROM queues ORDER BY id;

-- name: save_binding
INSERT INTO bindings (vhost, source, destination, destination_kind, routing_key, arguments_key, arguments)
VALUES (%(vhost)s, %(source)s, %(destination)s, %(destination_kind)s, %(routing_key)s, %(arguments_key)s,
    %(arguments)s)
ON CONFLICT (vhost, source, destination, destination_kind, routing_key, arguments_key)
DO UPDATE SET arguments = excluded.arguments;

-- name: delete_binding
DELETE FROM bindings WHERE vhost = %(vhost)s AND source = %(source)s AND destination = %(destination)s
    AND destination_kind = %(destination_kind)s AND routing_key = %(routing_key)s
    AND arguments_key = %(arguments_key)s;

-- name: load_bindings
SELECT vhost, source, destination, destination_kind, routing_key, arguments_key, arguments
FROM bindings ORDER BY id;

-- name: save_record
INSERT INTO records (kind, key, value) VALUES (%(kind)s, %(key)s, %(value)s)
ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value;

-- name: delete_record
DELETE FROM records WHERE kind = %(kind)s AND key = %(key)s;

-- name: load_records
SELECT key, value FROM records WHERE kind = %(kind)s ORDER BY id;
