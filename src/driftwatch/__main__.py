"""``python -m driftwatch``: the same command line as the ``driftwatch`` script."""

from driftwatch.cli import main

main()
