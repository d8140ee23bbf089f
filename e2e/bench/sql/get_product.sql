-- B2 fallback peer (only when PostgREST cannot be installed): the API's product query, by pgbench.
\set id random(1, 25)
SELECT p.id, p.name, p.description, p.category_id, p.sub_category_id, p.image_url, p.price, p.previous_price, p.offered FROM products p WHERE p.id = :id;
