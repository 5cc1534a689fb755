-- CTR per variant: served lists and the share of them with at least one click that echoed their
-- recommendation id (clicks may come a day later: the click range reaches one day further).
-- Parameters: first day, last day of the lists; first day, last day of the clicks.
WITH lists AS (
    SELECT recommendation_id, variant
    FROM served_lists
    WHERE event_date BETWEEN ? AND ?
),
clicked AS (
    SELECT DISTINCT recommendation_id
    FROM events
    WHERE event_date BETWEEN ? AND ?
        AND event_type = 'click'
        AND recommendation_id IS NOT NULL
)
SELECT
    l.variant,
    count(*) AS lists,
    count(c.recommendation_id) AS clicked_lists,
    CAST(count(c.recommendation_id) AS double) / count(*) AS ctr
FROM lists AS l
LEFT JOIN clicked AS c ON l.recommendation_id = c.recommendation_id
GROUP BY l.variant
ORDER BY l.variant
