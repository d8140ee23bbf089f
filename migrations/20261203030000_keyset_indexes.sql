-- Keyset pages (`WHERE <owner> = $1 AND id > <cursor> ORDER BY id LIMIT n`) read one index range in
-- order and stop after n rows: the owner column first, then the id. With the single-column indexes
-- PostgreSQL either walked the primary key filtering every row (a category's page at 100,000
-- products: ~30-50 ms, growing with the table) or fetched all the owner's rows and sorted them.
-- Each composite index replaces the single-column one it starts with (its prefix serves the same
-- look-ups and the foreign key checks), so writes maintain no extra index. The (sub_category_id,
-- category_id) index goes too: the planner preferred it for sub-category pages (then sorting), and
-- the composite foreign key's check on deleting a sub-category is served by (sub_category_id, id).
-- Checked by `api-server/tests/scale.rs` (EXPLAIN of the queries the API runs, generic and custom plans).
CREATE INDEX products_category_id_id_idx ON products (category_id, id);
DROP INDEX products_category_id_idx;
CREATE INDEX products_sub_category_id_id_idx ON products (sub_category_id, id);
DROP INDEX products_sub_category_id_idx;
CREATE INDEX orders_user_id_id_idx ON orders (user_id, id);
DROP INDEX orders_user_id_idx;
CREATE INDEX order_items_order_id_id_idx ON order_items (order_id, id);
DROP INDEX order_items_order_id_idx;
CREATE INDEX cart_items_user_id_id_idx ON cart_items (user_id, id);
DROP INDEX cart_items_user_id_idx;
CREATE INDEX addresses_user_id_id_idx ON addresses (user_id, id);
DROP INDEX addresses_user_id_idx;
CREATE INDEX sub_categories_category_id_id_idx ON sub_categories (category_id, id);
DROP INDEX sub_categories_category_id_idx;
