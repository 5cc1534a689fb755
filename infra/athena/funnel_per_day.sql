-- Funnel per day: events of each type, visitors, and the share of visitors who carted and bought.
-- Parameters: first day, last day ('YYYY-MM-DD'; the partition filter keeps the scan to those days).
SELECT
    event_date,
    count(DISTINCT coalesce(user_id, session_id)) AS visitors,
    count_if(event_type = 'view') AS views,
    count_if(event_type = 'click') AS clicks,
    count_if(event_type = 'add_to_cart') AS carts,
    count_if(event_type = 'purchase') AS purchases,
    CAST(count(DISTINCT CASE WHEN event_type = 'add_to_cart' THEN coalesce(user_id, session_id) END) AS double)
        / count(DISTINCT coalesce(user_id, session_id)) AS cart_rate,
    CAST(count(DISTINCT CASE WHEN event_type = 'purchase' THEN coalesce(user_id, session_id) END) AS double)
        / count(DISTINCT coalesce(user_id, session_id)) AS purchase_rate
FROM events
WHERE event_date BETWEEN ? AND ?
    AND event_type IN ('view', 'click', 'add_to_cart', 'purchase')
GROUP BY event_date
ORDER BY event_date
