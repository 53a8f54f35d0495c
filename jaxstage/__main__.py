"""``python -m jaxstage``: the ``jaxstage`` command line (see :mod:`jaxstage.cli`)."""

import sys

from jaxstage.cli import main

if __name__ == "__main__":
    sys.exit(main())
