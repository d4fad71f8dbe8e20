-- title: Stripe drift
-- about: For each reconciled window, what Stripe reports minus what the local ledger sent, per tenant and meter (latest check of each window). Zero is in sync.
-- requires: stripe_reconciliation(tenant_id, meter, window_start, ledger_value, stripe_value, checked_at)
SELECT
    tenant_id,
    meter,
    window_start,
    arg_max(ledger_value, checked_at)                               AS ledger_value,
    arg_max(stripe_value, checked_at)                               AS stripe_value,
    arg_max(stripe_value, checked_at) - arg_max(ledger_value, checked_at) AS drift,
    max(checked_at)                                                 AS checked_at
FROM stripe_reconciliation
GROUP BY ALL
ORDER BY window_start, tenant_id, meter;
