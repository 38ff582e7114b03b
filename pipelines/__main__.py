"""``python -m pipelines`` is the ``sanitize`` command."""

from pipelines.cli import main

main()
