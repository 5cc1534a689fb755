-- The catalogue as the latest snapshot of a day has it: price and stock per item.
-- Parameter: the day ('YYYY-MM-DD').
SELECT item_id, title, category, brand, price, in_stock, active, updated_at
FROM catalogue_snapshots
WHERE snapshot_date = ?
    AND snapshot_id = (
        SELECT max(snapshot_id) FROM catalogue_snapshots WHERE snapshot_date = ?
    )
ORDER BY item_id
