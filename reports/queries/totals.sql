-- title: Totals
-- about: Calls, actions, spend and error rate over the whole warehouse.
-- requires: request_log(action_id, tenant_id, status, cost_usd, started_at)
SELECT
    count(*)                                                        AS calls,
    count(DISTINCT (tenant_id, action_id)) FILTER (WHERE action_id IS NOT NULL) AS actions,
    count(DISTINCT tenant_id)                                       AS tenants,
    coalesce(sum(cost_usd), 0)                                      AS cost_usd,
    count(*) FILTER (WHERE status <> 'ok')                          AS errors,
    min(started_at)                                                 AS first_call,
    max(started_at)                                                 AS last_call
FROM request_log
HAVING count(*) > 0;
