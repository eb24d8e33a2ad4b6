"""``python -m clemlab.cli``: the ``clemlab`` command."""

import sys

from . import main

sys.exit(main())
