-- mailslot embedded store, schema version 3: runtime configuration records.
-- Never edit a released migration: add 0004_*.sql instead.

-- Users, vhosts, permissions, policies, limits, parameters: one JSON value per (kind, key)
-- (MetadataStore.save_record). A rowid table so load_records() lists them in first-save order.
CREATE TABLE records (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    UNIQUE (kind, key)
);
