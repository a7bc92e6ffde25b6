-- mailslot PostgreSQL store, schema version 3: each queue's figures as its owner last wrote them.
-- Applied after 0002 in the same way (one transaction, search_path = the install's schema).

-- The owner of a shared queue writes its depths and consumers here at each lease poll (only the
-- rows that changed, one statement); every node reads the table at its poll, so the management API
-- of a node that does not own a queue shows the owner's figures (docs/cluster.md). `node` is the
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
