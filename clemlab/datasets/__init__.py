"""Synthetic samples with known ground truth, rendered on the fly (no files, no network).

- :func:`synthetic_clem` (and the small, fast :func:`synthetic_clem_small`): an LM/EM pair
  of one cell layer with fiducial beads, the true LM -> EM transform and held-out targets
  (:mod:`clemlab.datasets.clem`);
- :func:`synthetic_cryo`: a 3-D LM stack and a tilted 2-D FIB view, related by a rigid
  projection (:mod:`clemlab.datasets.cryo`);
- :func:`matching_trial`: two bead point sets with extras on both sides and the true pairing,
  for automatic matching (:mod:`clemlab.datasets.matching`).

Every sample is deterministic for a given seed and arguments. Geometry conventions
(``design.md`` section 2): images are :class:`xarray.DataArray` built with
:func:`clemlab.image.as_image`, coords in µm at pixel centres (pixel ``i`` has its centre at
``origin + i * pixel_size``); points are ``(N, D)`` arrays in µm with columns ``(x, y[, z])``.

The private modules hold what the samples share: argument checks (``_checks``), point
placement (``_placement``), drawing primitives (``_drawing``), the cell layer
(``_specimen``) and the LM and EM image models (``_render_lm``, ``_render_em``).
"""

from .clem import LM_CHANNELS, LM_COLORS, SyntheticCLEM, synthetic_clem, synthetic_clem_small
from .cells import SyntheticCells, synthetic_cells
from .cryo import SyntheticCryo, synthetic_cryo
from .matching import MatchingTrial, matching_trial

__all__ = ["SyntheticCells", "synthetic_cells", "SyntheticCLEM", "synthetic_clem", "synthetic_clem_small", "LM_CHANNELS", "LM_COLORS",
           "SyntheticCryo", "synthetic_cryo", "MatchingTrial", "matching_trial"]
