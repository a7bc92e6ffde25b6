-- mailslot embedded store, schema version 5: StoredMessage.codec.
-- Never edit a released migration: add 0006_*.sql instead.

-- Which protocol's codec encoded the message's properties (the core's PropertiesCodec.name). Rows written
-- before this version all came from AMQP 0-9-1 (storage/api.py DEFAULT_CODEC).
ALTER TABLE messages ADD COLUMN codec TEXT NOT NULL DEFAULT 'amqp091';
