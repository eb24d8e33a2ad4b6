"""Fitting landmarks and saying how far to trust the fit.

:func:`register` fits a transform model to landmark pairs and returns a
:class:`Registration`: the transform, per-pair residuals (their RMS is the fiducial
registration error, FRE), leave-one-out errors, an estimate of the fiducial localisation
error (FLE), and the predicted target registration error (TRE) anywhere in the field.
:func:`compare_models` says which model the data support; :func:`error_vs_n` whether there
are enough landmarks.

The package, one job per module (each module's ``__all__`` lists what users see; other
names without an underscore are shared between these modules):

``models``
    Model names, their transform classes and parameter counts (:data:`MODEL_ORDER`).
``fitting``
    :func:`register`: checks, weighting, leave-one-out refits.
``robust``
    RANSAC: which pairs a model explains (``register(..., robust=True)``).
``noise``
    The landmark noise model: per-pair variances, known or estimated from residuals.
``error_prediction``
    From landmark noise to the error of mapped points (delta method, bootstrap) and
    :class:`MappedPoints`.
``result``
    :class:`Registration`: residuals, leave-one-out errors, error prediction, diagnostics.
``lack_of_fit``
    Is the model too simple for the landmarks? (chi-square or F test; for an exact
    thin-plate spline, its left-out errors against the noise; error inflation).
``report``
    Plain-language warnings and the text/HTML summary.
``comparison``
    :func:`compare_models` and :func:`error_vs_n`.
``serialisation``
    Saving and loading a registration as versioned JSON.
"""

from .comparison import ModelComparison, compare_models, error_vs_n
from .error_prediction import MappedPoints
from .fitting import register
from .models import MODEL_ORDER
from .result import Registration

# The thresholds of the warnings and outlier flags, documented in register() and reachable
# as clemlab.registration.SCALE_RANGE etc.
from .lack_of_fit import LACK_OF_FIT_P, SPLINE_MISFIT_RATIO  # noqa: F401, E402
from .noise import OUTLIER_P  # noqa: F401, E402
from .report import MAX_CONDITION, MAX_STRETCH, SCALE_RANGE  # noqa: F401, E402

__all__ = ["register", "Registration", "MappedPoints", "compare_models", "ModelComparison",
           "error_vs_n", "MODEL_ORDER"]
