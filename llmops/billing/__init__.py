"""Billing: Stripe meter setup, sync with a local ledger, and reconciliation."""
