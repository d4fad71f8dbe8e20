-- title: Budget burn against caps
-- about: Each spend cap's current window: spent and reserved against its limit. Hard caps reject calls at 100%; soft caps alert.
-- requires: spend_caps(id, scope_key, period, limit_usd, mode), budget_ledger(cap_id, window_start, spent_usd, reserved_usd)
WITH latest AS (  -- each cap's most recent window
    SELECT cap_id, max(window_start) AS window_start
    FROM budget_ledger
    GROUP BY cap_id
)
SELECT
    c.scope_key,
    c.period,
    c.mode,
    l.window_start,
    c.limit_usd,
    b.spent_usd,
    b.reserved_usd,
    CASE WHEN c.limit_usd > 0
         THEN round(CAST(b.spent_usd AS DOUBLE) / CAST(c.limit_usd AS DOUBLE), 4)
    END                                                         AS burn
FROM spend_caps c
JOIN latest l ON l.cap_id = c.id
JOIN budget_ledger b ON b.cap_id = l.cap_id AND b.window_start = l.window_start
ORDER BY burn DESC NULLS LAST, c.scope_key, c.period;
