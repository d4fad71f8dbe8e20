-- title: Cost per action by feature
-- about: An action is one user-visible operation (X-LLMOps-Action-Id): all its calls, retries and fallbacks included. Calls without an action id are left out.
-- requires: request_log(tenant_id, feature_id, action_id, cost_usd)
-- Money stays DECIMAL: DuckDB divides decimals as DOUBLE, so the mean is an integer
-- division in units of 1e-12 USD (exact, rounded down to the last unit).
WITH actions AS (
    SELECT tenant_id, feature_id, action_id, count(*) AS calls, sum(cost_usd) AS cost_usd
    FROM request_log
    WHERE action_id IS NOT NULL
    GROUP BY ALL
)
SELECT
    feature_id,
    count(*)                                                    AS actions,
    sum(calls)                                                  AS calls,
    sum(cost_usd)                                               AS cost_usd,
    CAST(CAST(sum(cost_usd) * 1000000000000 AS HUGEINT) // count(*) AS DECIMAL(38, 0))
        * CAST(0.000000000001 AS DECIMAL(38, 12))               AS cost_per_action,
    CAST(quantile_cont(CAST(cost_usd AS DOUBLE), 0.95) AS DOUBLE) AS p95_action_cost_usd
FROM actions
GROUP BY feature_id
ORDER BY cost_per_action DESC, feature_id;
