-- S2 sender: one transaction commits :batch outbox events, each for a random streaming user, with
-- one NOTIFY per user, the way the API appends (events/outbox.rs); each payload carries the
-- commit-side clock for the latency. Batched because PostgreSQL serialises the commits of notifying
-- transactions (a lock held through the WAL flush): on this machine one event per transaction
-- tops out at ~350 commits/s, below S2's 1,000 events/s.
BEGIN;
WITH users AS (
    SELECT 'bench_sse_' || (1 + floor(random() * :streams))::int AS key
    FROM generate_series(1, :batch)
), inserted AS (
    INSERT INTO outbox (event_id, topic, event_key, event_type, payload)
    SELECT gen_random_uuid(), 'cart_updates', key, 'cart_item_added',
           jsonb_build_object('sent', extract(epoch FROM clock_timestamp()))
    FROM users
    RETURNING event_key
)
SELECT pg_notify('plamatio_outbox', key) FROM (SELECT DISTINCT event_key AS key FROM inserted) AS k;
COMMIT;
