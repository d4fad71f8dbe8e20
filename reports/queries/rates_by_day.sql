-- title: Error, fallback and cache-hit rates by day
-- about: Share of calls per UTC day that failed, that were answered by a fallback deployment, and that were served from the cache.
-- requires: request_log(started_at, status, fallbacks_used, cache_hit)
SELECT
    CAST(timezone('UTC', started_at) AS DATE)                           AS day,
    count(*)                                                            AS calls,
    round(count(*) FILTER (WHERE status <> 'ok') / count(*), 4)         AS error_rate,
    round(count(*) FILTER (WHERE fallbacks_used > 0) / count(*), 4)     AS fallback_rate,
    round(count(*) FILTER (WHERE cache_hit) / count(*), 4)              AS cache_hit_rate
FROM request_log
GROUP BY ALL
ORDER BY day;
