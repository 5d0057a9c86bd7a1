"""``python -m miprun``: the ``miprun`` command."""

import sys

from miprun.cli.main import main

sys.exit(main())
