-- The relay's queue of unpublished outbox rows, kept apart from the outbox itself.
--
-- Until now the relay marked a published row with `UPDATE outbox SET published_at = now()`. The
-- outbox row is wide (payload) and `published_at` appeared in two partial-index predicates, so
-- every mark wrote a new copy of the row plus an entry in each of the four indexes (no HOT update
-- possible): the database half of every relay round (B4: ~7 ms per 500 rows). Now an outbox row is
-- pending exactly while its id is in `outbox_pending`, publishing deletes that narrow row (no index
-- write at all), and the outbox rows are never updated after their insert.
--
-- A statement trigger enqueues every inserted outbox row, so every writer — including a replica of
-- an earlier release during a rolling upgrade — gets its events published.
CREATE TABLE outbox_pending (
    id bigint PRIMARY KEY REFERENCES outbox (id) ON DELETE CASCADE
);

INSERT INTO outbox_pending (id) SELECT id FROM outbox WHERE published_at IS NULL;

CREATE FUNCTION outbox_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_pending (id) SELECT id FROM inserted_rows;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_enqueue AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_enqueue();

-- `published_at` goes: a relay of an earlier release now fails its rounds (and retries) instead
-- of re-reading every row the new relay published as unpublished, so an upgrade delays events for
-- the length of the rollout and loses none (a round such a relay had in flight while this ran may
-- be published again; consumers dedupe by event_id).
DROP INDEX outbox_pending_idx;
DROP INDEX outbox_published_at_idx;
ALTER TABLE outbox DROP COLUMN published_at;

-- The payload is stored as `json`: the exact text the API wrote (compact, keys in its order), so
-- the relay and the live streams pass it on without parsing and re-serialising it, and an append
-- no longer converts it to jsonb's binary form. (Existing rows keep jsonb's text rendering.)
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;

-- Retention deletes by age; rows are appended in time order, so a BRIN index stays tiny.
CREATE INDEX outbox_created_at_brin ON outbox USING brin (created_at);
