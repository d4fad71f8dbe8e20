-- title: Stripe drift
-- about: Hours where Stripe's meter summary differs from what the sync ledger sent (latest reconciliation of each window), per tenant and meter. Empty when everything reconciles.
-- requires: reconciliation_drifts(tenant_id, meter, window_start, metered, ledger_sent, stripe, drift, created_at)
SELECT
    tenant_id,
    meter,
    window_start,
    arg_max(metered, created_at)                                    AS metered,
    arg_max(ledger_sent, created_at)                                AS ledger_value,
    arg_max(stripe, created_at)                                     AS stripe_value,
    arg_max(stripe, created_at) - arg_max(ledger_sent, created_at)  AS drift,
    max(created_at)                                                 AS checked_at
FROM reconciliation_drifts
GROUP BY ALL
ORDER BY window_start, tenant_id, meter;
