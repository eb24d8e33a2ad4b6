"""Registration from image content (no fiducials): :func:`register_images` and
:class:`ImageMatch`; point sets without correspondences: :func:`coherent_point_drift`.

See :mod:`clemlab.imagereg.api` for the pipeline and the verdict.
"""

from .api import ImageMatch, register_images
from .cpd import CPDResult, coherent_point_drift

__all__ = ["CPDResult", "ImageMatch", "coherent_point_drift", "register_images"]
