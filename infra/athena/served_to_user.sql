-- What user U was served at time T: the lists recorded for U up to T, most recent first
-- (fallbacks included: the variant and version say what answered).
-- Parameters: the user hash (`shelfwise models served` computes it: hex BLAKE2b-128 of the user
-- id), the day before T and the day of T ('YYYY-MM-DD'), and T (a timestamp).
SELECT served_at, recommendation_id, variant, model_version, endpoint, items
FROM served_lists
WHERE user_hash = ?
    AND event_date BETWEEN ? AND ?
    AND served_at <= ?
ORDER BY served_at DESC
LIMIT 10
