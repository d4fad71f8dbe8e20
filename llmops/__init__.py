"""llmops: the production layer around LLM features (engine package, Prefect-free)."""

__version__ = "0.1.0"
