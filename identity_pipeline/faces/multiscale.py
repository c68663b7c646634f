"""Find faces of every size in a tile by running the detector on a small pyramid of scales.

A detector finds faces within a fixed pixel range (YuNet: about 16 to 320 px boxes). So:

* the smallest face worth finding is a fraction of the tile's longer side, with an absolute floor
  (``smallest_face_px``): a 48 MP photo is searched like its 12 MP copy, not for 20 px specks;
* the finest pass scales the tile so that such a face becomes the detector's smallest reliable
  face; that pass is the *working copy*, decoded reduced where the tile is a JPEG file
  (``pixels``), so its size is bounded (about ``backend.min_face_px / min_face_fraction``);
* each further pass is ``pyramid_step`` times smaller, and the last one shows the whole tile at
  ``coarse_side`` px, where even a face filling the tile is in range;
* a pass larger than the detector may see at once is cut into overlapping windows; a face cut by
  an inner window edge is dropped there, as it is whole in the neighbour window or, if larger
  than the overlap, in the next coarser pass.

All detections are mapped back to tile pixels and merged by non-maximum suppression. What is
found near the bottom of the detector's range is checked again in a crop (``verify``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from identity_pipeline.faces.backend import DetectedFace, FaceBackend
from identity_pipeline.faces.config import FaceConfig
from identity_pipeline.faces.pixels import TilePixels, as_tile_pixels, resize_to

# A detection bigger than this many times the detector's range, in a pass that is not the
# coarsest, is a bad box for a face that the coarser pass sees properly.
OVERSIZE_SLACK = 1.5


@dataclass(frozen=True)
class Window:
    """One detector call: a region of the tile, at a scale (detection px per tile px)."""

    scale: float
    x0: int  # in pixels of the scaled tile
    y0: int
    x1: int
    y1: int
    inner_edges: tuple[bool, bool, bool, bool]  # left, top, right, bottom lie inside the tile
    max_face_px: float | None  # detection px; None for the coarsest pass (no upper bound)


def smallest_face_px(long_side: int, config: FaceConfig) -> float:
    """The smallest face worth finding in a tile with this longer side (tile pixels)."""
    return max(config.min_face_px, config.min_face_fraction * long_side)


def discard_below(long_side: int, config: FaceConfig) -> float:
    """Detections smaller than this are dropped: ``discard_below_px``, scaled like the
    smallest face worth finding."""
    return config.discard_below_px * smallest_face_px(long_side, config) / config.min_face_px


def pass_scales(
    long_side: int, backend: FaceBackend, config: FaceConfig, window_limit: int
) -> list[float]:
    """Finest to coarsest; the last one fits the whole tile in ``coarse_side`` and one window."""
    smallest = smallest_face_px(long_side, config)
    scales = [min(backend.min_face_px / smallest, config.max_upscale)]
    coarsest = min(config.coarse_side, window_limit) / long_side
    while scales[-1] > coarsest:
        scales.append(max(scales[-1] / config.pyramid_step, coarsest))
    return scales


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Evenly spread starts of ``window``-long spans covering ``length`` with >= ``overlap``."""
    if length <= window:
        return [0]
    count = math.ceil((length - overlap) / (window - overlap))
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


def plan_windows(height: int, width: int, backend: FaceBackend, config: FaceConfig) -> list[Window]:
    limit = config.max_detect_side
    if backend.detect_max_side is not None:
        limit = min(limit, backend.detect_max_side)
    # Faces larger than the overlap can be cut in every window; they are >= min_face_px * step in
    # detection px, so the next coarser pass (step times smaller) still sees them.
    overlap = min(round(backend.min_face_px * config.pyramid_step * 1.5), limit // 2)
    scales = pass_scales(max(height, width), backend, config, limit)
    windows: list[Window] = []
    for index, scale in enumerate(scales):
        coarsest = index == len(scales) - 1
        scaled_w, scaled_h = max(1, round(width * scale)), max(1, round(height * scale))
        max_face = None if coarsest else backend.max_face_px * OVERSIZE_SLACK
        for y0 in window_starts(scaled_h, limit, overlap):
            for x0 in window_starts(scaled_w, limit, overlap):
                x1, y1 = min(x0 + limit, scaled_w), min(y0 + limit, scaled_h)
                inner = (x0 > 0, y0 > 0, x1 < scaled_w, y1 < scaled_h)
                windows.append(Window(scale, x0, y0, x1, y1, inner, max_face))
    return windows


def cut_by_inner_edge(face: DetectedFace, window: Window, margin: float) -> bool:
    x0, y0, x1, y1 = face.box
    width, height = window.x1 - window.x0, window.y1 - window.y0
    left, top, right, bottom = window.inner_edges
    return (
        (left and x0 <= margin)
        or (top and y0 <= margin)
        or (right and x1 >= width - margin)
        or (bottom and y1 >= height - margin)
    )


def detect_in_windows(
    pixels: TilePixels | np.ndarray,
    windows: Sequence[Window],
    backend: FaceBackend,
    config: FaceConfig,
) -> list[DetectedFace]:
    """Run the detector on every window; faces come back in tile pixels, unmerged.

    The finest pass is taken from the tile's pixels (``TilePixels.scaled``: a JPEG is decoded
    reduced); every coarser pass is shrunk from that working copy.
    """
    pixels = as_tile_pixels(pixels)
    width, height = pixels.size
    found: list[DetectedFace] = []
    working: tuple[float, np.ndarray] | None = None
    scaled: tuple[float, np.ndarray] | None = None
    for window in windows:
        if scaled is None or scaled[0] != window.scale:
            if working is None:
                working = (window.scale, pixels.scaled(window.scale))
                scaled = working
            else:
                size = (max(1, round(width * window.scale)), max(1, round(height * window.scale)))
                scaled = (window.scale, resize_to(working[1], size))  # passes are in order
        crop = scaled[1][window.y0 : window.y1, window.x0 : window.x1]
        for face in backend.detect(np.ascontiguousarray(crop)):
            if cut_by_inner_edge(face, window, config.crop_edge_px):
                continue
            if window.max_face_px is not None and face.size > window.max_face_px:
                continue
            found.append(
                face.mapped(window.scale, (window.x0 / window.scale, window.y0 / window.scale))
            )
    return found


def overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float]:
    """(intersection over union, intersection over the smaller box's area)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    smaller = min(area_a, area_b)
    return (inter / union if union > 0 else 0.0, inter / smaller if smaller > 0 else 0.0)


def non_max_suppression(
    faces: Sequence[DetectedFace], iou_threshold: float, containment_threshold: float
) -> list[DetectedFace]:
    """Highest score first; a face overlapping a kept one (IoU, or mostly inside it) is dropped."""
    kept: list[DetectedFace] = []
    for face in sorted(faces, key=lambda f: (-f.score, f.box)):
        duplicate = False
        for other in kept:
            iou, containment = overlaps(face.box, other.box)
            if iou > iou_threshold or containment > containment_threshold:
                duplicate = True
                break
        if not duplicate:
            kept.append(face)
    return kept


def detect_multiscale(
    pixels: TilePixels | np.ndarray, backend: FaceBackend, config: FaceConfig
) -> list[DetectedFace]:
    """Every face candidate of the tile, in tile pixels, thresholded and merged, best first."""
    pixels = as_tile_pixels(pixels)
    width, height = pixels.size
    windows = plan_windows(height, width, backend, config)
    floor = discard_below(max(width, height), config)
    candidates = [
        face
        for face in detect_in_windows(pixels, windows, backend, config)
        if face.score >= config.det_score_threshold and face.size >= floor
    ]
    return non_max_suppression(candidates, config.nms_iou, config.nms_containment)
