"""``python -m experiments.reproduce``: see :mod:`experiments.reproduce.cli`."""

import sys

from experiments.reproduce import cli

if __name__ == "__main__":
    sys.exit(cli.main())
