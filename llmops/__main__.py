"""``python -m llmops``: the same as the ``llmops`` command."""

from llmops.cli import main

main()
