"""``python -m experiments.mnist``: see :mod:`experiments.mnist.cli`."""

import sys

from experiments.mnist import cli

if __name__ == "__main__":
    sys.exit(cli.main())
