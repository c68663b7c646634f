"""Pick a segmentation backend per tile, and say why.

Backends are tried in ``MaskConfig.backend_order`` (by default the BlazePose segmenter for tiles
of two or more people, SAM when configured, the selfie model, then GrabCut: best first,
always-available last). A backend's answer is accepted when every named person's region is
plausible (``quality.check_people``); otherwise the next one is tried, and if none passes, the
answer with the fewest problems wins. The reason string records each step, e.g.
``"pose rejected (anna: face coverage 0.10 < 0.60); selfie accepted (2 people plausible)"``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from identity_pipeline.masks.config import BACKEND_POSE, DEFAULT_MASK_CONFIG, MaskConfig
from identity_pipeline.masks.geometry import gradient_magnitude
from identity_pipeline.masks.grabcut import GrabCutSegmenter
from identity_pipeline.masks.pose import PoseModelMissing, PoseSegmenter
from identity_pipeline.masks.quality import PersonCheck, check_people
from identity_pipeline.masks.records import FaceInTile, Segmentation, Segmenter
from identity_pipeline.masks.refine import split_people
from identity_pipeline.masks.selfie import SelfieModelMissing, SelfieSegmenter


@dataclass(frozen=True)
class Attempt:
    segmentation: Segmentation
    checks: list[PersonCheck]

    @property
    def problem_count(self) -> int:
        return sum(len(check.problems) for check in self.checks)

    @property
    def mean_coverage(self) -> float:
        return float(np.mean([c.face_coverage for c in self.checks])) if self.checks else 0.0


class SelectingSegmenter:
    """A Segmenter that runs its candidates in order until one is plausible."""

    name = "selector"

    def __init__(self, candidates: Sequence[Segmenter], notes: Sequence[str] = ()) -> None:
        if not candidates:
            raise ValueError("the selector needs at least one segmenter")
        self.candidates = list(candidates)
        self.notes = list(notes)  # e.g. "selfie unavailable: ...", prefixed to every reason

    def segment(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> Segmentation:
        targets = target_indices(faces)
        steps = list(self.notes)
        attempts: list[Attempt] = []
        gradient = gradient_magnitude(image_rgb)
        for position, candidate in enumerate(self.candidates):
            last_hope = position == len(self.candidates) - 1 and not attempts
            if (
                candidate.name == BACKEND_POSE
                and len(faces) < config.pose_min_people
                and not last_hope
            ):
                # One person: the selfie model (or SAM) sees them whole; the pose model earns
                # its cost where people press together.
                steps.append(f"pose skipped ({len(faces)} face < {config.pose_min_people})")
                continue
            try:
                segmentation = candidate.segment(image_rgb, faces, config)
            except Exception as error:
                # A broken backend (SAM out of GPU memory, a corrupt model) must not stop the
                # album: the next backend takes over and the reason says what happened.
                is_last = position == len(self.candidates) - 1
                if is_last and not attempts:
                    raise
                steps.append(f"{candidate.name} failed ({type(error).__name__}: {error})")
                continue
            people = split_people(segmentation, faces, config)
            checks = check_people(gradient, segmentation, people, faces, targets, config)
            attempt = Attempt(segmentation, checks)
            attempts.append(attempt)
            if attempt.problem_count == 0:
                steps.append(f"{candidate.name} accepted ({len(targets)} people plausible)")
                return _with_reason(segmentation, steps)
            steps.append(f"{candidate.name} rejected ({_describe_problems(attempt, faces)})")
        best = min(attempts, key=lambda a: (a.problem_count, -a.mean_coverage))
        steps.append(f"none plausible: kept {best.segmentation.backend} (fewest problems)")
        return _with_reason(best.segmentation, steps)


def target_indices(faces: Sequence[FaceInTile]) -> list[int]:
    """The faces whose masks matter: the named ones, or all when nobody is named."""
    named = [i for i, face in enumerate(faces) if face.identity is not None]
    return named or list(range(len(faces)))


def select_segmenter(
    config: MaskConfig = DEFAULT_MASK_CONFIG,
    *,
    sam: Segmenter | None = None,
    selfie_model: str | os.PathLike[str] | None = None,
    extra: Sequence[Segmenter] = (),
) -> SelectingSegmenter:
    """The selector over every backend available here, in ``config.backend_order``.

    ``sam``: a ready ``SamSegmenter`` (it needs a model and ideally a GPU, so it is never built
    implicitly). The pose and selfie models (``config.pose_model`` / ``selfie_model`` or
    ``config.selfie_model``, else the files in the installed mediapipe wheel) are used when
    found and when ``config.backend_order`` names them; GrabCut is always there. ``extra``
    segmenters go after the ordered ones.
    """
    notes: list[str] = []
    available: dict[str, Segmenter] = {}
    if sam is not None:
        available[sam.name] = sam
    if BACKEND_POSE in config.backend_order:
        try:
            pose = PoseSegmenter(config.pose_model, config.pose_runtime)
            available[pose.name] = pose
        except (PoseModelMissing, ValueError, ImportError) as error:
            notes.append(f"pose unavailable: {type(error).__name__}")
    try:
        selfie = SelfieSegmenter(selfie_model or config.selfie_model)
        available[selfie.name] = selfie
    except (SelfieModelMissing, ValueError) as error:
        notes.append(f"selfie unavailable: {type(error).__name__}")
    grabcut = GrabCutSegmenter()
    available[grabcut.name] = grabcut
    ordered = [available.pop(name) for name in config.backend_order if name in available]
    return SelectingSegmenter([*ordered, *available.values(), *extra], notes)


@functools.lru_cache(maxsize=4)
def segmenter_for(config: MaskConfig) -> SelectingSegmenter:
    """The selector these settings ask for, one per process and settings (loading models is not
    free): the pose model for groups, SAM when ``config.sam_model`` names one, then the selfie
    model and GrabCut."""
    sam = None
    if config.sam_model:
        from identity_pipeline.masks.sam import SamSegmenter  # transformers: only when asked for

        sam = SamSegmenter(config.sam_model, device=config.sam_device)
    return select_segmenter(config, sam=sam)


def _describe_problems(attempt: Attempt, faces: Sequence[FaceInTile]) -> str:
    by_id = {face.face_id: face for face in faces}
    parts = []
    for check in attempt.checks:
        if check.problems:
            who = by_id[check.face_id].identity or check.face_id
            parts.append(f"{who}: {', '.join(check.problems)}")
    return "; ".join(parts)


def _with_reason(segmentation: Segmentation, steps: Sequence[str]) -> Segmentation:
    return Segmentation(
        segmentation.probabilities,
        segmentation.backend,
        "; ".join(steps),
        segmentation.per_person,
    )
