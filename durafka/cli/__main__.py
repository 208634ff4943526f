"""``python -m durafka.cli``: the same as the ``durafka`` console script."""

from durafka.cli import main

main()
