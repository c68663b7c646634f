"""From a backend's probabilities to one clean, soft, mutually exclusive mask per person.

1. ``split_people``: every pixel some backend claims for one or more people goes to the claimant
   it is geometrically closest to (``person_cost``: size-weighted distance to head and torso), so
   touching torsos are cut between the two people rather than given to both or to the first.
2. Each person's region keeps only the pieces connected to their own head or chest, with small
   holes (eyes, glasses in GrabCut) filled.
3. ``soft_masks``: grow each region a little into the background (never into a neighbour), cut
   every other face out, blur the edge, and cap so no pixel is above one half in two masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from identity_pipeline.masks.config import MaskConfig
from identity_pipeline.masks.geometry import (
    clip_box,
    ellipse_mask,
    face_core,
    person_costs,
    reach_box,
)
from identity_pipeline.masks.records import FaceInTile, Segmentation

NOBODY = -1
# Just under one half, so a capped pixel stays below 0.5 after rounding to uint8 (127/255).
CAPPED_VALUE = 0.498


@dataclass(frozen=True)
class PeopleRegions:
    """Hard regions after the geometric split and clean-up, one per face (same order)."""

    labels: np.ndarray  # (H, W) int16: index of the face owning the pixel, or NOBODY
    regions: list[np.ndarray]  # (H, W) bool per face, cleaned
    costs: np.ndarray  # (N, H, W) float32 person_cost


def split_people(
    segmentation: Segmentation, faces: Sequence[FaceInTile], config: MaskConfig
) -> PeopleRegions:
    """Give every claimed pixel to one person (or nobody), then clean each person's region.

    A pixel several people claim (people pressed together, or every pixel of a shared "any
    person" map) goes to the claimant with the lowest ``person_cost``: a Voronoi split weighted
    by face size, so touching torsos are cut between the two people, nearer the smaller one.
    Claims only count inside a person's ``extended_reach_box`` (arms, raised hands); pieces
    not connected to the person's core are dropped afterwards.
    """
    probabilities = segmentation.probabilities
    shape = probabilities.shape[1:]
    costs = person_costs(shape, faces, config)
    if not faces:
        return PeopleRegions(np.full(shape, NOBODY, np.int16), [], costs)
    reach = np.stack([_box_mask(shape, extended_reach_box(f, config, shape[0])) for f in faces])
    claimed = np.where((probabilities > 0.5) & reach, costs, np.float32(np.inf))
    labels = np.argmin(claimed, axis=0).astype(np.int16)
    labels[~np.isfinite(claimed.min(axis=0))] = NOBODY
    regions = [
        clean_region(labels == index, costs[index], face, config, labels >= 0)
        for index, face in enumerate(faces)
    ]
    # Clean-up may drop pieces: those pixels belong to nobody now.
    labels = np.full(shape, NOBODY, np.int16)
    for index, region in enumerate(regions):
        labels[region & (labels == NOBODY)] = index
    regions = [labels == index for index in range(len(faces))]
    return PeopleRegions(labels, regions, costs)


def extended_reach_box(
    face: FaceInTile, config: MaskConfig, height: int
) -> tuple[float, float, float, float]:
    """Where a person's pixels may be: the reach box, widened for arms and raised hands."""
    cx, _ = face.centre
    half = config.arms_half_width * face.width
    bottom = reach_box(face, config, height)[3]
    return cx - half, face.box[1] - config.raised_hands_above * face.height, cx + half, bottom


def _box_mask(shape: tuple[int, int], box: Sequence[float]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = clip_box(box, shape[1], shape[0])
    mask[y0:y1, x0:x1] = True
    return mask


def clean_region(
    region: np.ndarray,
    cost: np.ndarray,
    face: FaceInTile,
    config: MaskConfig,
    anyone: np.ndarray,
) -> np.ndarray:
    """Keep the pieces touching the person's core, fill small holes and, if mostly there, the face.

    ``anyone``: pixels some person was given; filling never takes a neighbour's pixels.
    """
    if not region.any():
        return region
    core = cost < config.core_cost
    _, components = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    touching = np.unique(components[core & region])
    kept = np.isin(components, touching[touching > 0])
    free = kept | ~anyone
    kept = fill_small_holes(kept, config.fill_holes_max_face_areas * face.area) & free
    own_face = face_core(region.shape, face)
    if own_face.any() and kept[own_face].mean() >= config.fill_face_min_coverage:
        kept |= own_face & free
    return kept


def fill_small_holes(region: np.ndarray, max_area: float) -> np.ndarray:
    """Holes (background enclosed by the region) smaller than ``max_area`` pixels, filled."""
    background = (~region).astype(np.uint8)
    count, components, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    height, width = region.shape
    filled = region.copy()
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        touches_border = x == 0 or y == 0 or x + w == width or y + h == height
        if not touches_border and area <= max_area:
            filled[components == label] = True
    return filled


def soft_masks(
    people: PeopleRegions, faces: Sequence[FaceInTile], config: MaskConfig
) -> np.ndarray:
    """(N, H, W) float32 in [0, 1]: dilated, other faces cut out, feathered, mutually exclusive."""
    regions = people.regions
    if not regions:
        return np.zeros((0, *people.labels.shape), np.float32)
    shape = regions[0].shape
    anyone = people.labels != NOBODY
    softs = []
    for index, face in enumerate(faces):
        others = anyone & ~regions[index]
        grown = _dilate(regions[index], config.dilation * face.size) & ~others
        sigma = max(0.8, config.feather * face.size)
        soft = cv2.GaussianBlur(grown.astype(np.float32), (0, 0), sigma)
        soft *= 1.0 - _other_faces_cutout(shape, faces, index, config, sigma)
        softs.append(soft)
    stacked = np.stack(softs)
    return _mutually_exclusive(stacked)


def _dilate(region: np.ndarray, radius: float) -> np.ndarray:
    radius_px = max(1, round(radius))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
    return cv2.dilate(region.astype(np.uint8), kernel).astype(bool)


def _other_faces_cutout(
    shape: tuple[int, int],
    faces: Sequence[FaceInTile],
    index: int,
    config: MaskConfig,
    sigma: float,
) -> np.ndarray:
    """1 over every other face (grown by the margin), soft-edged, 0 over this person's face."""
    cutout = np.zeros(shape, dtype=bool)
    grow = 1.0 + 2 * config.other_face_margin
    for other_index, other in enumerate(faces):
        if other_index != index:
            cutout |= ellipse_mask(shape, other.box, grow, grow)
    if not cutout.any():
        return np.zeros(shape, np.float32)
    soft = cv2.GaussianBlur(cutout.astype(np.float32), (0, 0), sigma)
    soft = np.maximum(soft, cutout.astype(np.float32))
    # Where faces overlap, the target's own face wins: it must stay in its mask.
    soft[face_core(shape, faces[index])] = 0.0
    return soft


def _mutually_exclusive(softs: np.ndarray) -> np.ndarray:
    if len(softs) < 2:
        return softs
    winner = np.argmax(softs, axis=0)
    winner_value = np.take_along_axis(softs, winner[np.newaxis], axis=0)[0]
    contested = winner_value >= 0.5
    for index in range(len(softs)):
        losing = contested & (winner != index)
        softs[index][losing] = np.minimum(softs[index][losing], CAPPED_VALUE)
    return softs
