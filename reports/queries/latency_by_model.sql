-- title: Latency by model (p50 / p95)
-- about: End-to-end latency of successful calls per model, cache hits left out (they never reach the model).
-- requires: request_log(model, status, cache_hit, latency_ms)
SELECT
    model,
    count(*)                                            AS calls,
    CAST(quantile_cont(latency_ms, 0.5) AS BIGINT)      AS p50_ms,
    CAST(quantile_cont(latency_ms, 0.95) AS BIGINT)     AS p95_ms
FROM request_log
WHERE status = 'ok' AND NOT cache_hit AND model IS NOT NULL
GROUP BY model
ORDER BY p95_ms DESC, model;
