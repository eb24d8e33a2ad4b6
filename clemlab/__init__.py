"""clemlab: correlative light and electron microscopy (CLEM) in Jupyter.

>>> import clemlab as cl
>>> sample = cl.synthetic_clem(seed=0)                       # doctest: +SKIP
>>> reg = cl.register(cl.Landmarks.from_points(sample.fiducials_lm, sample.fiducials_em))  # doctest: +SKIP
>>> corr = cl.correlate(sample.em, sample.lm, reg)           # doctest: +SKIP

Names load on first use (PEP 562), so ``import clemlab`` stays light: it imports neither
matplotlib, ipywidgets, dask.distributed nor the file-format libraries; it
does import xarray, to register the ``.clem`` accessor.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clemlab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# public name -> module that defines it
_EXPORTS = {
    "as_image": "image",
    "describe": "_repr",
    "progress": "progress",
    "is_image": "image",
    "check_image": "image",
    "open_image": "io",
    "list_images": "io",
    "write_ome_tiff": "io",
    "write_ome_zarr": "io",
    "read_navigator": "io",
    "write_navigator": "io",
    "stage_affine": "io.serialem",
    "targets_from_points": "targets",
    "targets_from_polygons": "targets",
    "targets_from_mask": "targets",
    "targets_from_spots": "targets",
    "map_targets": "targets",
    "stage_transform": "targets",
    "stage_placement": "stage",
    "plot_targets": "targets",
    "open_montage": "mosaic",
    "mosaic_from_tiles": "mosaic",
    "mosaic_multiscale": "mosaic",
    "refine_positions": "mosaic",
    "Identity": "transforms",
    "Translation": "transforms",
    "Rigid": "transforms",
    "Similarity": "transforms",
    "Affine": "transforms",
    "Composite": "transforms",
    "FailedEstimation": "transforms",
    "transform_from_dict": "transforms",
    "Landmarks": "landmarks",
    "register": "registration",
    "Registration": "registration",
    "compare_models": "registration",
    "error_vs_n": "registration",
    "Projective": "transforms",
    "Polynomial": "transforms",
    "ThinPlateSpline": "transforms",
    "RigidProjection": "transforms",
    "plot_residuals": "viz",
    "plot_error_map": "viz",
    "warp": "resample",
    "correlate": "correlate",
    "stack_channels": "correlate",
    "detect_fiducials": "fiducials",
    "match_fiducials": "fiducials",
    "FiducialMatch": "fiducials",
    "synthetic_clem": "datasets",
    "synthetic_clem_small": "datasets",
    "synthetic_cells": "datasets",
    "register_images": "imagereg",
    "ImageMatch": "imagereg",
    "coherent_point_drift": "imagereg",
    "plot_overlay": "viz",
    "LandmarkPicker": "widgets",
    "OverlayViewer": "widgets",
    "ClemlabError": "errors",
    "ImageError": "errors",
    "UnitError": "errors",
    "MissingPixelSizeError": "errors",
    "FileFormatError": "errors",
    "FileExistsRefusedError": "errors",
    "LandmarkError": "errors",
    "RegistrationError": "errors",
    "TransformError": "errors",
    "read_transform": "io.ngff_transforms",
    "map_ngff_points": "io.ngff_transforms",
    "write_registration": "io.ngff_transforms_write",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

# Registers the ``.clem`` DataArray accessor (xarray, numpy: light enough to load now).
from . import image as _image  # noqa: E402,F401

# ``correlate`` names both a module and its function. Python binds a submodule to its package
# (as the attribute ``clemlab.correlate``) on the submodule's first import only, so importing
# the (light) module here, and then binding the function over it, keeps ``clemlab.correlate``
# the function however the module is imported later (``from clemlab.correlate import ...``).
from .correlate import correlate, stack_channels  # noqa: E402,F401

_SUBMODULES = {"datasets", "errors", "fiducials", "image", "imagereg", "io", "landmarks", "mosaic", "registration",
               "resample", "stage", "targets", "transforms", "viz", "widgets"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clemlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
