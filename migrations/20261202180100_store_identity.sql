-- The store's identity: one random id, generated when the database is first migrated and never
-- changed afterwards. Every cache key starts with it (after `PLAMATIO_CACHE_PREFIX`), so two stores
-- sharing one Redis, or a database recreated while Redis still holds the old one's entries, never
-- read each other's entries: a new database is a new store with an empty namespace.
CREATE TABLE store_identity (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    store_id   uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO store_identity DEFAULT VALUES;
