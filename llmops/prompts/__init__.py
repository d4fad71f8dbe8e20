"""Prompts as code: prompt files and the versioned store."""
