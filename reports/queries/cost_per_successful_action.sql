-- title: Cost per successful action by feature
-- about: Everything a feature spent on its actions, divided by the actions whose recorded outcome is a success (POST /v1/actions/{id}/outcome). Failed and unresolved actions still cost money, so this is what one success really costs.
-- requires: request_log(tenant_id, feature_id, action_id, cost_usd), action_outcomes(tenant_id, action_id, outcome, recorded_at)
WITH actions AS (
    SELECT tenant_id, feature_id, action_id, sum(cost_usd) AS cost_usd
    FROM request_log
    WHERE action_id IS NOT NULL
    GROUP BY ALL
),
outcomes AS (  -- the latest outcome recorded for each action
    SELECT tenant_id, action_id, arg_max(outcome, recorded_at) AS outcome
    FROM action_outcomes
    GROUP BY ALL
),
by_feature AS (
    SELECT
        a.feature_id,
        count(*)                                         AS actions,
        count(o.outcome)                                 AS with_outcome,
        count(*) FILTER (WHERE o.outcome = 'success')    AS successful_actions,
        sum(a.cost_usd)                                  AS cost_usd
    FROM actions a
    LEFT JOIN outcomes o USING (tenant_id, action_id)
    GROUP BY a.feature_id
)
SELECT
    feature_id,
    actions,
    with_outcome,
    successful_actions,
    round(successful_actions / with_outcome, 4)         AS success_rate,
    cost_usd,
    CASE WHEN successful_actions > 0 THEN
        CAST(CAST(cost_usd * 1000000000000 AS HUGEINT) // successful_actions AS DECIMAL(38, 0))
            * CAST(0.000000000001 AS DECIMAL(38, 12))
    END                                                 AS cost_per_successful_action
FROM by_feature
WHERE with_outcome > 0
ORDER BY cost_per_successful_action DESC NULLS LAST, feature_id;
