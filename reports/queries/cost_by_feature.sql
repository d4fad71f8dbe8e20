-- title: Cost by feature
-- about: Spend per product feature, largest first.
-- requires: request_log(feature_id, status, cost_usd)
SELECT
    feature_id,
    count(*)                                AS calls,
    count(*) FILTER (WHERE status = 'ok')   AS ok_calls,
    sum(cost_usd)                           AS cost_usd
FROM request_log
GROUP BY feature_id
ORDER BY cost_usd DESC, feature_id;
