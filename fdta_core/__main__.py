"""``python -m fdta_core`` is the ``fdta`` command."""

import sys

from .cli import main

sys.exit(main())
