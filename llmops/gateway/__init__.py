"""The gateway core: routing through LiteLLM, pricing, and the request log."""
