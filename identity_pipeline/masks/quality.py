"""Is a mask believable? Plausibility for the selector, flags for the finished masks.

Both judge a person's region against their face box only (no ground truth exists at run time):
the face must be in it, its area must be a sane multiple of the face's, and it must not reach
into anybody else's face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from identity_pipeline.masks.blur import blur_region
from identity_pipeline.masks.config import (
    FLAG_AREA_HIGH,
    FLAG_AREA_LOW,
    FLAG_EMPTY,
    FLAG_FACE_NOT_COVERED,
    FLAG_OTHER_FACE_OVER_TARGET,
    FLAG_TOUCHES_OTHER_FACE,
    MaskConfig,
)
from identity_pipeline.masks.geometry import clip_box, face_core
from identity_pipeline.masks.records import FaceInTile, Segmentation
from identity_pipeline.masks.refine import PeopleRegions


@dataclass(frozen=True)
class PersonCheck:
    """How one person's region from one backend looks; ``problems`` empty means plausible."""

    face_id: str
    face_coverage: float
    area_ratio: float
    other_face_claim: float  # the most of any other face this person's raw claim covers
    raggedness: float  # perimeter^2 / (4 pi area) of the region, holes included: 1 = a disc
    edge_contrast: float  # image gradient on the outline / mean gradient around the person
    problems: tuple[str, ...]

    @property
    def plausible(self) -> bool:
        return not self.problems


def check_people(
    gradient: np.ndarray,
    segmentation: Segmentation,
    people: PeopleRegions,
    faces: Sequence[FaceInTile],
    targets: Sequence[int],
    config: MaskConfig,
) -> list[PersonCheck]:
    """Plausibility of each target person's region (indices into ``faces``).

    ``gradient``: ``gradient_magnitude`` of the image the segmentation was made on.
    """
    shape = people.labels.shape
    cores = [face_core(shape, face) for face in faces]
    checks = []
    for index in targets:
        face = faces[index]
        region = people.regions[index]
        coverage = _coverage(region, cores[index])
        ratio = float(region.sum()) / face.area
        claim = 0.0
        if segmentation.per_person:
            # Only a per-person backend can merge two people into one object; a shared
            # "any person" map covers everyone's face by design.
            raw = segmentation.probabilities[index] > 0.5
            claim = max(
                (_coverage(raw, core) for i, core in enumerate(cores) if i != index), default=0.0
            )
        ragged = raggedness(region)
        contrast = edge_contrast(gradient, region, people.labels, index, face, config)
        check = PersonCheck(face.face_id, coverage, ratio, claim, ragged, contrast, ())
        empty = region.sum() <= config.empty_max_face_areas * face.area
        checks.append(replace(check, problems=_problems(check, empty, config)))
    return checks


def _problems(check: PersonCheck, empty: bool, config: MaskConfig) -> tuple[str, ...]:
    problems = ["empty"] if empty else []
    if check.face_coverage < config.min_face_coverage:
        problems.append(f"face coverage {check.face_coverage:.2f} < {config.min_face_coverage:.2f}")
    if check.area_ratio < config.min_area_ratio:
        problems.append(f"area ratio {check.area_ratio:.1f} < {config.min_area_ratio:.1f}")
    if check.area_ratio > config.max_area_ratio:
        problems.append(f"area ratio {check.area_ratio:.1f} > {config.max_area_ratio:.1f}")
    if check.other_face_claim > config.max_other_face_claim:
        problems.append(f"takes in another face ({check.other_face_claim:.2f})")
    if check.raggedness > config.max_raggedness:
        problems.append(f"ragged outline ({check.raggedness:.0f} > {config.max_raggedness:.0f})")
    if check.edge_contrast < config.min_edge_contrast:
        problems.append(f"outline ignores image edges ({check.edge_contrast:.2f})")
    return tuple(problems)


def mask_flags(
    soft: np.ndarray, faces: Sequence[FaceInTile], index: int, config: MaskConfig
) -> tuple[str, ...]:
    """Flags of a finished soft mask (float [0, 1], same frame as ``faces``)."""
    face = faces[index]
    inside = soft >= 0.5
    flags = []
    if inside.sum() <= config.empty_max_face_areas * face.area:
        flags.append(FLAG_EMPTY)
    if _coverage(inside, face_core(soft.shape, face)) < config.min_face_coverage:
        flags.append(FLAG_FACE_NOT_COVERED)
    ratio = float(soft.sum()) / face.area
    if ratio < config.min_area_ratio:
        flags.append(FLAG_AREA_LOW)
    elif ratio > config.max_area_ratio:
        flags.append(FLAG_AREA_HIGH)
    others = [other for i, other in enumerate(faces) if i != index]
    if any(_touches(inside, other, config) for other in others):
        flags.append(FLAG_TOUCHES_OTHER_FACE)
    if any(_blur_reaches(other, face, config) for other in others):
        flags.append(FLAG_OTHER_FACE_OVER_TARGET)
    return tuple(flags)


def edge_contrast(
    gradient: np.ndarray,
    region: np.ndarray,
    labels: np.ndarray,
    index: int,
    face: FaceInTile,
    config: MaskConfig,
) -> float:
    """How much stronger the image gradient is on the region's outline than on two lines
    running beside it, ``edge_band_px`` inside and outside.

    A real segmentation follows the silhouette, where the image changes most: the outline
    stands out from its neighbourhood (2-4 typically). A broken model's blob cuts across the
    picture at random: its outline is no different from the lines beside it (about 1). Being
    relative to the outline's own surroundings, the ratio does not sink on busy backgrounds
    (grass, gravel) the way a ratio to the whole person's surroundings does. The tile's border
    and the lines where this person meets another (drawn by geometry, not by the backend) are
    left out. ``face`` is unused (kept for the signature the checks share).
    """
    del face
    kernel = np.ones((3, 3), np.uint8)
    as_uint8 = region.astype(np.uint8)
    band = max(1, round(config.edge_band_px))
    others = ((labels >= 0) & (labels != index)).astype(np.uint8)
    near_others = cv2.dilate(others, kernel, iterations=2 + band).astype(bool)
    border = np.zeros(region.shape, bool)
    border[: 2 + band, :] = border[-2 - band :, :] = True
    border[:, : 2 + band] = border[:, -2 - band :] = True
    excluded = near_others | border
    outline = _outline(as_uint8, kernel) & ~excluded
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    beside = (
        _outline(cv2.dilate(as_uint8, grow), kernel) | _outline(cv2.erode(as_uint8, grow), kernel)
    ) & ~excluded
    if not outline.any() or not beside.any():
        return 0.0
    return float(gradient[outline].mean()) / max(float(gradient[beside].mean()), 1e-6)


def _outline(region: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return (cv2.dilate(region, kernel) - cv2.erode(region, kernel)).astype(bool)


def raggedness(region: np.ndarray) -> float:
    """Isoperimetric ratio of a region: ~1-2 for a blob, 3-10 for a person, hundreds for noise.

    Holes count towards the perimeter, so a speckled mask (what a broken model returns) scores
    high even when its outer outline is smooth.
    """
    area = float(region.sum())
    if area == 0:
        return 0.0
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(contour, True) for contour in contours)
    return perimeter**2 / (4 * np.pi * area)


def _coverage(region: np.ndarray, core: np.ndarray) -> float:
    return float(region[core].mean()) if core.any() else 0.0


def _touches(inside: np.ndarray, other: FaceInTile, config: MaskConfig) -> bool:
    """The mask reaches into the band around another face (the face itself is always cut out)."""
    height, width = inside.shape
    margin = config.touch_margin * other.size
    x0, y0, x1, y1 = other.box
    zone = clip_box((x0 - margin, y0 - margin, x1 + margin, y1 + margin), width, height)
    count = int(inside[zone[1] : zone[3], zone[0] : zone[2]].sum())
    return count > config.touch_min_fraction * other.area


def _blur_reaches(other: FaceInTile, target: FaceInTile, config: MaskConfig) -> bool:
    """Another face's blur ellipse overlaps the target's face box (its blur is cut back there)."""
    ox0, oy0, ox1, oy1 = blur_region(other.box, config)
    tx0, ty0, tx1, ty1 = target.box
    overlap_w = max(0.0, min(ox1, tx1) - max(ox0, tx0))
    overlap_h = max(0.0, min(oy1, ty1) - max(oy0, ty0))
    return overlap_w * overlap_h > 0.05 * target.area
