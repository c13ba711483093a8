"""``python -m metaleap``: the same as the ``metaleap`` command."""

import sys

from metaleap.cli import main

sys.exit(main())
