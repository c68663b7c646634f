"""A second look at every candidate, in a crop of it at the resolution it needs.

The working copy is small on purpose, so a face found near the bottom of the detector's range
there was seen as a few dozen pixels: a hand, a cup or a picture on the wall can look like that.
Each candidate gets a *region*: a crop around it from a copy of the tile where the face is about
the recognizer's input size (``good_face_px``), all regions of one reduction cut from one decode.
A candidate that was small in the working copy is detected again in its region, scaled so that it
is ``zoom_face_px``: a real face is found again (with sharper landmarks), a non-face mostly not.
Embeddings and quality are computed from the same regions, never from the working copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from identity_pipeline.faces.backend import DetectedFace, FaceBackend
from identity_pipeline.faces.config import FaceConfig
from identity_pipeline.faces.multiscale import overlaps, smallest_face_px
from identity_pipeline.faces.pixels import TilePixels, reduction_for, resize_to

# Side of a face's region, in face sizes: room for the aligned crop (about 1.5 face sizes) and
# for the head and shoulders the detector uses as context.
REGION_CONTEXT = 3.0
# A re-detection in the region is the same face when its box overlaps the candidate this much.
SAME_FACE_IOU = 0.3


@dataclass(frozen=True)
class Region:
    """Pixels around one face, from a reduced copy: region px = tile px * scale - origin."""

    pixels: np.ndarray
    scale: tuple[float, float]  # (x, y) region px per tile px
    origin: tuple[int, int]  # (x, y) of the region's corner in the reduced copy

    def from_tile(self, face: DetectedFace) -> DetectedFace:
        return _affine(face, self.scale, (-self.origin[0], -self.origin[1]), forward=True)

    def to_tile(self, face: DetectedFace) -> DetectedFace:
        return _affine(face, self.scale, self.origin, forward=False)


def _affine(
    face: DetectedFace, scale: tuple[float, float], shift: tuple[float, float], forward: bool
) -> DetectedFace:
    sx, sy = scale
    dx, dy = shift
    x0, y0, x1, y1 = face.box
    points = np.asarray(face.landmarks, dtype=np.float64).reshape(5, 2)
    if forward:  # tile -> region: scale, then shift
        box = (x0 * sx + dx, y0 * sy + dy, x1 * sx + dx, y1 * sy + dy)
        points = points * (sx, sy) + (dx, dy)
    else:  # region -> tile: unshift, then unscale
        box = ((x0 + dx) / sx, (y0 + dy) / sy, (x1 + dx) / sx, (y1 + dy) / sy)
        points = (points + (dx, dy)) / (sx, sy)
    return DetectedFace(box, points.astype(np.float32), face.score)


def region_reduction(face_size: float, config: FaceConfig) -> int:
    """The most a face of this size can be reduced and still be ``good_face_px``."""
    return reduction_for(min(1.0, config.good_face_px / max(face_size, 1.0)))


def cut_regions(
    pixels: TilePixels, faces: Sequence[DetectedFace], config: FaceConfig
) -> list[Region]:
    """One region per face, every reduction decoded once (coarsest first, one copy at a time)."""
    width, height = pixels.size
    reductions = [region_reduction(face.size, config) for face in faces]
    regions: list[Region | None] = [None] * len(faces)
    for reduction in sorted(set(reductions), reverse=True):
        copy = pixels.reduced(reduction)
        scale = (copy.shape[1] / width, copy.shape[0] / height)
        for index, face in enumerate(faces):
            if reductions[index] != reduction:
                continue
            x0, y0, x1, y1 = face.box
            half = REGION_CONTEXT * face.size / 2
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            left = int(np.clip(np.floor((cx - half) * scale[0]), 0, copy.shape[1] - 1))
            top = int(np.clip(np.floor((cy - half) * scale[1]), 0, copy.shape[0] - 1))
            right = int(np.clip(np.ceil((cx + half) * scale[0]), left + 1, copy.shape[1]))
            bottom = int(np.clip(np.ceil((cy + half) * scale[1]), top + 1, copy.shape[0]))
            crop = np.ascontiguousarray(copy[top:bottom, left:right])
            regions[index] = Region(crop, scale, (left, top))
    return [region for region in regions if region is not None]


def needs_second_look(face: DetectedFace, long_side: int, backend: FaceBackend, config: FaceConfig):
    """Was the face below ``zoom_face_px`` in the working copy (the finest pass)?"""
    working_scale = min(
        backend.min_face_px / smallest_face_px(long_side, config), config.max_upscale
    )
    return face.size * working_scale < config.zoom_face_px


def look_again(
    face: DetectedFace, region: Region, backend: FaceBackend, config: FaceConfig
) -> DetectedFace | None:
    """The face as the detector sees it with the face ``zoom_face_px`` big: the best-scoring
    detection overlapping the candidate, in tile pixels; None when there is none."""
    zoom = min(config.zoom_face_px / face.size, config.max_upscale)  # region px per tile px
    factor = zoom / region.scale[0]
    height, width = region.pixels.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    zoomed = resize_to(region.pixels, size)
    fx, fy = size[0] / width, size[1] / height
    best: DetectedFace | None = None
    for found in backend.detect(zoomed):
        in_region = _affine(found, (fx, fy), (0.0, 0.0), forward=False)
        in_tile = region.to_tile(in_region)
        if overlaps(in_tile.box, face.box)[0] < SAME_FACE_IOU:
            continue
        if best is None or in_tile.score > best.score:
            best = in_tile
    return best
