-- reservation_hold_totals (docs/api/enforcement.md): per (customer, budget feature), the sum of
-- the amounts of its reservation items with held = 1, kept in the transaction that inserts or
-- un-holds an item. What a reservation holds now is this total minus the held items already
-- past their expires_at (few: a sweep un-holds them), so a decision reads one row and a short
-- index range instead of summing every hold.
CREATE TABLE reservation_hold_totals (
    customer_id TEXT NOT NULL,
    feature_key TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    PRIMARY KEY (customer_id, feature_key)
);

INSERT INTO reservation_hold_totals (customer_id, feature_key, amount)
    SELECT customer_id, feature_key, sum(amount) FROM reservation_items
    WHERE held = 1 GROUP BY customer_id, feature_key;
