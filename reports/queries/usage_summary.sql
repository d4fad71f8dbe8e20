-- title: Usage summary
-- about: Calls, tokens, cost and latency by tenant, feature and model (all time).
-- requires: request_log(tenant_id, feature_id, model, status, input_tokens, output_tokens, cost_usd, latency_ms)
-- Used by `llmops demo`; open the warehouse in a notebook to run it yourself:
--   duckdb.connect(".llmops/warehouse.duckdb", read_only=True).sql(open(...).read())
SELECT
    tenant_id,
    feature_id,
    coalesce(model, '(none)')                                   AS model,
    count(*)                                                    AS calls,
    count(*) FILTER (WHERE status = 'ok')                       AS ok,
    sum(input_tokens)                                           AS input_tokens,
    sum(output_tokens)                                          AS output_tokens,
    sum(cost_usd)                                               AS cost_usd,
    CAST(quantile_cont(latency_ms, 0.5) AS BIGINT)              AS p50_ms,
    CAST(quantile_cont(latency_ms, 0.95) AS BIGINT)             AS p95_ms
FROM request_log
GROUP BY ALL
ORDER BY tenant_id, feature_id, model;
