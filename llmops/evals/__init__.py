"""The eval engine: datasets, scorers, suites, the cached runner, comparison and the gate.

Prefect-free: ``flows/evals.py`` and ``llmops eval`` call into it. Every model call goes
through the gateway core as tenant ``eval``, one feature per suite, under its spend cap.
"""
