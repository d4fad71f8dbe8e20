"""PII and secret detectors behind :mod:`llmops.gateway.redaction` (which is the public API)."""
