"""``python -m gapkit``: the same as the ``gapkit`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
