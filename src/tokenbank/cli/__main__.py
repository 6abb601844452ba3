"""``python -m tokenbank.cli``: the same as the ``tokenbank`` console script."""

from tokenbank.cli import main

main()
