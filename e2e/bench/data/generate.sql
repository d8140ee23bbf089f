-- Real store sizes for benchmarks (issue: performance at real store sizes). Adds, on top of a migrated
-- database (the seed catalog stays):
--   plamatio.products   products spread over every sub-category (default 100000)
--   plamatio.users      users, each with one address (default 200000)
--   plamatio.orders     orders of those users (default 1000000), each with
--   plamatio.order_items_per_order items (default 3)
--   plamatio.cart_rows  cart rows of those users (default 500000)
-- Set them as custom settings before running the file, e.g.
--   PGOPTIONS='-c plamatio.products=100000 -c plamatio.orders=0' psql -v ON_ERROR_STOP=1 -f generate.sql DB
-- or `SET plamatio.products = 100000` in the same session. Generated rows are recognisable: user ids
-- start with `bench_user_`, product names end with their number, and every description carries a
-- unique 12-hex-digit token (`tok` + md5 prefix), so a search for one token is a rare-word search with
-- exactly one match. Deterministic: the same settings give the same rows.

CREATE TEMPORARY TABLE bench_settings AS
SELECT coalesce(nullif(current_setting('plamatio.products', true), ''), '100000')::int AS products,
       coalesce(nullif(current_setting('plamatio.users', true), ''), '200000')::int AS users,
       coalesce(nullif(current_setting('plamatio.orders', true), ''), '1000000')::int AS orders,
       coalesce(nullif(current_setting('plamatio.order_items_per_order', true), ''), '3')::int AS items_per_order,
       coalesce(nullif(current_setting('plamatio.cart_rows', true), ''), '500000')::int AS cart_rows;

CREATE TEMPORARY TABLE bench_sub_categories AS
SELECT row_number() OVER (ORDER BY id) - 1 AS position, id, category_id FROM sub_categories;

INSERT INTO products (name, description, category_id, sub_category_id, image_url, price, previous_price, offered)
SELECT initcap(adjective) || ' Llama ' || initcap(thing) || ' ' || g,
       'A ' || adjective || ' llama ' || thing || ' in ' || colour || ' tones, token tok'
         || left(md5(g::text), 12) || '.',
       sc.category_id,
       sc.id,
       'https://images.example.com/products/' || g || '.png',
       price,
       price + (g % 3) * 5,
       g % 17 <> 0
FROM bench_settings s,
     generate_series(1, s.products) AS g,
     LATERAL (SELECT (ARRAY['alpine', 'woolly', 'sleepy', 'dancing', 'royal', 'tiny', 'grand', 'misty'])[1 + g % 8] AS adjective,
                     (ARRAY['mug', 'scarf', 'hoodie', 'poster', 'tote', 'cap', 'sock', 'pin', 'tee', 'bottle'])[1 + (g / 8) % 10] AS thing,
                     (ARRAY['sand', 'moss', 'dusk', 'snow', 'clay', 'sky'])[1 + (g / 80) % 6] AS colour,
                     10 + (g * 7919) % 190 AS price) AS words,
     bench_sub_categories sc
WHERE sc.position = g % (SELECT count(*) FROM bench_sub_categories);

INSERT INTO users (id, first_name, last_name, email)
SELECT 'bench_user_' || g, 'First' || g, 'Last' || g, 'bench.user.' || g || '@example.com'
FROM bench_settings s, generate_series(1, s.users) AS g;

INSERT INTO addresses (street, city, state, country, zip_code, user_id)
SELECT g || ' Llama Lane', 'Cusco', 'Cusco', 'Peru', lpad((g % 100000)::text, 5, '0'), 'bench_user_' || g
FROM bench_settings s, generate_series(1, s.users) AS g;

CREATE TEMPORARY TABLE bench_ranges AS
SELECT (SELECT min(id) FROM addresses WHERE user_id LIKE 'bench\_user\_%') AS first_address,
       (SELECT min(id) FROM products) AS first_product,
       (SELECT max(id) FROM products) AS last_product;

-- Addresses were inserted in user order in one statement, so user g's address is first_address + g - 1.
INSERT INTO orders (user_id, address_id, total_price, created_at, status)
SELECT 'bench_user_' || u, r.first_address + u - 1, 25 + (g % 400), now() - make_interval(mins => g % 525600),
       (ARRAY['paid', 'shipped', 'delivered', 'cancelled'])[1 + g % 4]
FROM bench_settings s, bench_ranges r, generate_series(1, s.orders) AS g,
     LATERAL (SELECT 1 + (g * 7) % greatest(s.users, 1) AS u) AS owner
WHERE s.users > 0;

INSERT INTO order_items (order_id, product_id, quantity)
SELECT o.id, r.first_product + (o.id * 31 + k * 7919) % (r.last_product - r.first_product + 1), 1 + k % 3
FROM bench_settings s, bench_ranges r, orders o, generate_series(1, s.items_per_order) AS k
WHERE o.user_id LIKE 'bench\_user\_%';

-- The server's own total of each generated order (quantity x catalog price of its items).
UPDATE orders o SET items_total = t.total
FROM (SELECT i.order_id, sum(i.quantity::bigint * p.price) AS total
      FROM order_items i JOIN products p ON p.id = i.product_id
      JOIN orders bench ON bench.id = i.order_id AND bench.user_id LIKE 'bench\_user\_%'
      GROUP BY i.order_id) t
WHERE t.order_id = o.id;

INSERT INTO cart_items (product_id, quantity, user_id)
SELECT r.first_product + (g::bigint * 104729) % (r.last_product - r.first_product + 1), 1 + g % 4,
       'bench_user_' || (1 + g % greatest(s.users, 1))
FROM bench_settings s, bench_ranges r, generate_series(1, s.cart_rows) AS g
WHERE s.users > 0;

ANALYZE;
