-- The server's own total of an order: the sum of quantity × catalog price of its items, in the
-- catalog's price unit, computed in the transaction that writes the items. `total_price` stays what
-- the payment provider charged (sent by the frontend, in cents); the API counts the orders where
-- the two disagree (`orders_total_mismatch_total`), so the server, not the client, is the
-- reference for what was bought.
ALTER TABLE orders ADD COLUMN items_total bigint NOT NULL DEFAULT 0;

-- Existing orders get the total of their items at today's prices (the closest value known).
UPDATE orders o SET items_total = t.total
FROM (SELECT i.order_id, sum(i.quantity::bigint * p.price) AS total
      FROM order_items i JOIN products p ON p.id = i.product_id
      GROUP BY i.order_id) t
WHERE t.order_id = o.id;
