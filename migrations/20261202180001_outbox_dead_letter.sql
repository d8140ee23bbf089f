-- Outbox rows the broker refused for a reason no retry can fix (a message larger than the
-- producer's or the broker's limit, an invalid topic name, a record the broker rejects), taken off
-- the `outbox_pending` queue by the relay together with the error, so they never block the later
-- events of their key or fill the relay's claim. A copy of the row is kept here (the outbox row
-- itself is pruned after the retention) for inspection or a manual replay once the cause is fixed:
--   INSERT INTO outbox (event_id, topic, event_key, event_type, payload, traceparent)
--   SELECT gen_random_uuid(), topic, event_key, event_type, payload, traceparent
--   FROM outbox_dead_letter WHERE id = …;
CREATE TABLE outbox_dead_letter (
    -- the outbox row's id
    id               bigint      PRIMARY KEY,
    event_id         uuid        NOT NULL,
    topic            text        NOT NULL,
    event_key        text        NOT NULL,
    event_type       text        NOT NULL,
    payload          json        NOT NULL,
    traceparent      text,
    created_at       timestamptz NOT NULL,
    error            text        NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_dead_letter_dead_lettered_at_idx ON outbox_dead_letter (dead_lettered_at);
