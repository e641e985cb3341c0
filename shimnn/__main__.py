"""``python -m shimnn ...`` is the ``shimnn`` command."""

import sys

from .cli import main

sys.exit(main())
