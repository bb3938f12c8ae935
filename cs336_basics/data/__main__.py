"""``python -m cs336_basics.data ...``: same as the ``cs336-data`` command."""

import sys

from cs336_basics.data.cli import main

sys.exit(main())
