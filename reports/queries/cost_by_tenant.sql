-- title: Cost by tenant
-- about: Spend per tenant over the whole warehouse, largest first (every call, failed ones cost what the provider billed).
-- requires: request_log(tenant_id, status, cost_usd)
SELECT
    tenant_id,
    count(*)                                AS calls,
    count(*) FILTER (WHERE status = 'ok')   AS ok_calls,
    sum(cost_usd)                           AS cost_usd
FROM request_log
GROUP BY tenant_id
ORDER BY cost_usd DESC, tenant_id;
