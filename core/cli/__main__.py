"""``python -m sluiceway.cli``: the ``sluiceway`` command, without its script."""

from .main import main

main()
