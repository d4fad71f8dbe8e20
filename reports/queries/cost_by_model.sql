-- title: Cost and calls by model (model mix)
-- about: Spend, calls and their shares per model that answered; '(none)' is calls that failed before any model answered.
-- requires: request_log(model, input_tokens, output_tokens, cost_usd)
SELECT
    coalesce(model, '(none)')                                   AS model,
    count(*)                                                    AS calls,
    sum(input_tokens)                                           AS input_tokens,
    sum(output_tokens)                                          AS output_tokens,
    sum(cost_usd)                                               AS cost_usd,
    round(count(*) / sum(count(*)) OVER (), 4)                  AS call_share,
    CASE WHEN sum(sum(cost_usd)) OVER () > 0
         THEN round(CAST(sum(cost_usd) AS DOUBLE) / CAST(sum(sum(cost_usd)) OVER () AS DOUBLE), 4)
    END                                                         AS cost_share
FROM request_log
GROUP BY ALL
ORDER BY cost_usd DESC, calls DESC, model;
