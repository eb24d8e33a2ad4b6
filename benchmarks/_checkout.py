"""Imported first by every benchmark: ``import clemlab`` then loads the package of the checkout
the benchmark sits in, not a copy installed earlier with ``pip install .`` (which would silently
measure old code).
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(ROOT, "clemlab", "__init__.py")) and ROOT not in sys.path[:1]:
    sys.path.insert(0, ROOT)
