"""``python -m miprun``: the ``miprun`` command."""

import sys

from .cli import main

sys.exit(main())
