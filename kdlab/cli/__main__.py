"""``python -m kdlab.cli``: the ``kdlab`` command without its console script."""

import sys

from kdlab.cli.main import main

sys.exit(main())
