-- S2 sender: one committed outbox event of a random streaming user, with its NOTIFY, the way the API
-- appends (events/outbox.rs); the payload carries the commit-side clock for the latency.
\set u random(1, :streams)
BEGIN;
INSERT INTO outbox (event_id, topic, event_key, event_type, payload)
VALUES (gen_random_uuid(), 'cart_updates', 'bench_sse_' || :u, 'cart_item_added',
        jsonb_build_object('sent', extract(epoch FROM clock_timestamp())));
SELECT pg_notify('plamatio_outbox', 'bench_sse_' || :u);
COMMIT;
