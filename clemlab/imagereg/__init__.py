"""Registration from image content (no fiducials): :func:`register_images` and
:class:`ImageMatch`; point sets without correspondences: :func:`coherent_point_drift`.

See :mod:`clemlab.imagereg.api` for the pipeline and the verdict.
"""

from .api import ImageMatch, register_images

__all__ = ["ImageMatch", "register_images"]
