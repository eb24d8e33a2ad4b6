"""Resampling an image onto another grid, lazily and chunk by chunk: :func:`warp`.

``warp(image, transform, like=target)`` puts ``image`` (in the transform's source frame) onto
the pixel grid of ``target`` (in the transform's target frame). The transform maps points
forward (source -> target); the resampler pulls each output pixel from the source through the
inverse, so users never choose a direction.

One module per job:

- :mod:`~clemlab.resample.api`: :func:`warp` itself (arguments, output grid and chunks, attrs).
- :mod:`~clemlab.resample.graph`: the dask graph, one task per output chunk fed only the source
  blocks under its footprint, and one planning task per group of chunks for non-linear maps.
- :mod:`~clemlab.resample.index_map`: the exact map from output to source array indices, and
  the bound :data:`POSITION_BOUND_PX` on how far sampled positions may stray from it.
- :mod:`~clemlab.resample.plan`, :mod:`~clemlab.resample.cells`,
  :mod:`~clemlab.resample.nodes`: how a non-linear map is resampled through OpenCV: affine
  cells where the map is affine within :func:`map_tolerance`, coarse nodes bilinearly
  interpolated elsewhere.
- :mod:`~clemlab.resample.footprint`: a chunk's source region assembled from dask blocks.
- :mod:`~clemlab.resample.kernel`: the OpenCV calls for one chunk;
  :mod:`~clemlab.resample.task`: one chunk's task (OpenCV or scipy).

Which kernel resamples:

- 2-D, order 0/1, dtypes uint8, uint16, int16, float32: OpenCV (``cv2.warpAffine`` /
  ``cv2.warpPerspective`` with ``WARP_INVERSE_MAP`` and a chunk-relative matrix). Non-linear
  maps (thin-plate splines, ...) are smooth, so each chunk is first tiled with cells (a
  quadtree from 512 px, at most one OpenCV call per 128² px on average) on which the map is
  affine to within :func:`map_tolerance`, and each cell is resampled with one
  ``cv2.warpAffine``: per pixel that costs about what one warp of the whole chunk costs,
  where ``cv2.remap`` must write and read a map of 8 bytes per pixel. Where cells fail (near
  a spline's landmarks, where its curvature peaks), the map is evaluated exactly on a coarse
  node grid and bilinearly upsampled for ``cv2.remap`` a strip of rows at a time, so the
  full-resolution map never exists: for the boxes the cells leave, or for the whole chunk
  when they leave more than half of it. Sampled positions sit within
  :data:`POSITION_BOUND_PX` = 0.05 px of the exact transform: the tolerance is what is left
  of it after OpenCV's own sampling error, measured once per dtype on the installed OpenCV
  (:func:`clemlab._opencv.sampling_error`), and after float32 rounding.
- everything else (float64 and other dtypes, order >= 2, 3-D): ``scipy.ndimage`` on the same
  footprint, with exact float64 coordinates (for linear maps computed from each pixel's global
  index, so any output chunking gives the same bits) and, for orders 2-5, the finite spline
  prefilter of :mod:`~clemlab.resample.spline` (a NaN spoils only what it reaches).

Before anything is built, :mod:`~clemlab.resample.checks` refuses a transform whose frames
are not the image's and ``like``'s, a ``fill`` the dtype cannot hold, and a map that folds,
collapses an axis or scales µm by more than 1000x over the output grid.

All matrices and coordinates are taken relative to the output chunk (OpenCV with a linear
map: to a tile of a 512-px grid fixed in the output, so any output chunking gives the same
bits) and to the footprint's first source pixel, so stage coordinates of 10^5 µm keep
sub-pixel exactness.

Memory: each task allocates its output chunk with numpy and returns it; source footprints
and coordinate maps are assembled in per-thread scratch buffers of bounded size
(:data:`clemlab.resample.footprint.SCRATCH_BYTES_PER_THREAD`).

Pixel conventions: integer indices are pixel centres in both OpenCV and scipy. Inside the
source they agree to within 1 grey level (integer dtypes: both round; float32 to ~1e-4
relative); within one pixel of the source edge OpenCV blends with ``fill`` where scipy
(``mode="constant"``) returns ``fill`` outright.
"""

from __future__ import annotations

from .api import DEFAULT_CHUNK, warp
from .index_map import POSITION_BOUND_PX, map_tolerance

__all__ = ["warp", "map_tolerance", "POSITION_BOUND_PX", "DEFAULT_CHUNK"]
