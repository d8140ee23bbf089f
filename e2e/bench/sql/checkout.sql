-- B3 peer: what POST /orders/detailed/add sends to PostgreSQL per checkout (3 items), run by pgbench.
-- Mirrors api-server/src/orders/mod.rs add_detailed_order: check_address and first_missing_product
-- read on the pool, then create_order: one transaction with the order, its items (one UNNEST
-- statement), the outbox row (events/outbox.rs append) and pg_notify. Variables: uid, addr (-D).
SELECT id, street, city, state, country, zip_code, user_id FROM addresses WHERE id = :addr;
SELECT id FROM products WHERE id = ANY('{1,2,3}'::bigint[]);
BEGIN;
INSERT INTO orders (user_id, address_id, total_price, status) VALUES (:uid, :addr, 75, 'pending') RETURNING id, user_id, address_id, total_price, created_at, status \gset o_
INSERT INTO order_items (order_id, product_id, quantity) SELECT :o_id::bigint, product_id, quantity FROM UNNEST('{1,2,3}'::bigint[], '{1,2,1}'::int[]) WITH ORDINALITY AS l(product_id, quantity, n) ORDER BY n RETURNING id, order_id, product_id, quantity;
INSERT INTO outbox (event_id, topic, event_key, event_type, payload, traceparent) VALUES (gen_random_uuid(), 'orders_updates', :uid, 'order_created', json_build_object('event_id', gen_random_uuid(), 'event_type', 'order_created', 'occurred_at', now(), 'user_id', :uid::text, 'order', json_build_object('id', :o_id::bigint, 'user_id', :uid::text, 'address_id', :addr::bigint, 'total_price', 75.0, 'created_at', :o_created_at::text, 'status', 'pending'), 'order_items', json_build_array(json_build_object('id', 0, 'order_id', :o_id::bigint, 'product_id', 1, 'quantity', 1), json_build_object('id', 0, 'order_id', :o_id::bigint, 'product_id', 2, 'quantity', 2), json_build_object('id', 0, 'order_id', :o_id::bigint, 'product_id', 3, 'quantity', 1))), NULL);
SELECT pg_notify('plamatio_outbox', left(key, 4000)) FROM UNNEST(ARRAY[:uid::text]) AS k(key);
COMMIT;
