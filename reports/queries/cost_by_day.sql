-- title: Cost by day and tenant
-- about: Daily spend (UTC days, by call start) per tenant.
-- requires: request_log(started_at, tenant_id, cost_usd)
SELECT
    CAST(timezone('UTC', started_at) AS DATE)   AS day,
    tenant_id,
    count(*)                                    AS calls,
    sum(cost_usd)                               AS cost_usd
FROM request_log
GROUP BY ALL
ORDER BY day, tenant_id;
