"""Pick a segmentation backend per person, and say why.

Backends are tried in ``MaskConfig.backend_order`` (by default the BlazePose segmenter for tiles
of two or more people, SAM when configured, the selfie model, then GrabCut: best first,
always-available last). Each named person keeps the first backend whose region for *them* is
plausible (``quality.check_people``); only the people still without one go on to the next
backend, and someone plausible nowhere keeps the backend with the fewest problems for them.
A backend implausible for ``selector_broken_share`` of the people it was tried on or more is
rejected for all of them: its answer looks broken (a corrupt model's blobs), not one odd person
(0: one implausible person rejects a backend for the whole tile, the rule before per-person choice).
Choosing per person, not per tile, matters in groups: one person's odd outline used to send the
whole tile to GrabCut, which on the tuning scenes was worse for everyone else in it. The reason
string records each step, e.g. ``"pose accepted for 7 of 8 (rejected p3: outline ignores image
edges (0.97)); selfie accepted for p3"``; a tile whose people all kept one backend reads as
before (``"pose accepted (8 people plausible)"``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from identity_pipeline.masks.config import BACKEND_POSE, DEFAULT_MASK_CONFIG, MaskConfig
from identity_pipeline.masks.geometry import gradient_magnitude
from identity_pipeline.masks.grabcut import GrabCutSegmenter
from identity_pipeline.masks.pose import PoseModelMissing, PoseSegmenter
from identity_pipeline.masks.quality import PersonCheck, check_people
from identity_pipeline.masks.records import FaceInTile, Segmentation, Segmenter
from identity_pipeline.masks.refine import PeopleRegions, split_people
from identity_pipeline.masks.selfie import SelfieModelMissing, SelfieSegmenter


@dataclass(frozen=True)
class Attempt:
    """One backend's answer, split into people, with the checks of the target people."""

    segmentation: Segmentation
    people: PeopleRegions
    checks: dict[int, PersonCheck]  # face index -> check, for the target faces

    @property
    def problem_count(self) -> int:
        return sum(len(check.problems) for check in self.checks.values())

    @property
    def mean_coverage(self) -> float:
        values = [c.face_coverage for c in self.checks.values()]
        return float(np.mean(values)) if values else 0.0


class SelectingSegmenter:
    """A Segmenter that runs its candidates in order until every person has a plausible one."""

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
        chosen: dict[int, int] = {}  # target face -> index into attempts
        gradient = gradient_magnitude(image_rgb)
        for position, candidate in enumerate(self.candidates):
            pending = [t for t in targets if t not in chosen]
            if not pending:
                break
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
            checks = check_people(gradient, segmentation, people, faces, pending, config)
            attempts.append(Attempt(segmentation, people, dict(zip(pending, checks, strict=True))))
            passed = [t for t in pending if attempts[-1].checks[t].plausible]
            failed = len(pending) - len(passed)
            if failed and failed >= config.selector_broken_share * len(pending):
                passed = []  # implausible for this many: the answer looks broken, for all
            for index in passed:
                chosen[index] = len(attempts) - 1
            steps.append(
                _describe_step(candidate.name, pending, passed, targets, attempts[-1], faces)
            )
        if not chosen:
            # Nobody plausible anywhere: one backend for the tile, the least bad (as a whole).
            best = min(attempts, key=lambda a: (a.problem_count, -a.mean_coverage))
            steps.append(f"none plausible: kept {best.segmentation.backend} (fewest problems)")
            return _with_reason(best.segmentation, steps)
        for index in [t for t in targets if t not in chosen]:
            chosen[index] = _least_bad(attempts, index)
            backend = attempts[chosen[index]].segmentation.backend
            steps.append(f"{_who(faces, index)}: none plausible, kept {backend} (fewest problems)")
        return _combine(attempts, chosen, len(faces), steps)


def _least_bad(attempts: Sequence[Attempt], index: int) -> int:
    """The attempt with the fewest problems for this person (then face coverage, then order)."""
    scored = [
        (len(a.checks[index].problems), -a.checks[index].face_coverage, position)
        for position, a in enumerate(attempts)
        if index in a.checks
    ]
    return min(scored)[2]


def _combine(
    attempts: Sequence[Attempt], chosen: dict[int, int], face_count: int, steps: Sequence[str]
) -> Segmentation:
    """One segmentation from each person's chosen attempt (the first attempt's own answer when
    everyone chose it). A person's map is their chosen backend's, kept to the region that
    backend's split gave them, so a shared "any person" map claims nobody else's pixels;
    faces nobody named take the first attempt's map (they are only cut out of the others)."""
    used = set(chosen.values())
    if len(used) == 1:
        only = attempts[used.pop()].segmentation
        return _with_reason(only, steps)
    first = attempts[0]
    probabilities = np.zeros_like(first.segmentation.probabilities)
    backends = []
    for index in range(face_count):
        attempt = attempts[chosen.get(index, 0)]
        region = attempt.people.regions[index]
        probabilities[index] = np.where(region, attempt.segmentation.probabilities[index], 0.0)
        backends.append(attempt.segmentation.backend)
    mixed = "+".join(dict.fromkeys(attempts[i].segmentation.backend for i in sorted(used)))
    return Segmentation(
        probabilities, mixed, "; ".join(steps), per_person=True, person_backends=tuple(backends)
    )


def _describe_step(
    name: str,
    pending: Sequence[int],
    passed: Sequence[int],
    targets: Sequence[int],
    attempt: Attempt,
    faces: Sequence[FaceInTile],
) -> str:
    failed = [t for t in pending if t not in passed]
    # Only the people with problems are named: a backend rejected for all as broken also
    # fails people who were plausible in it.
    problems = "; ".join(
        f"{_who(faces, t)}: {', '.join(attempt.checks[t].problems)}"
        for t in failed
        if attempt.checks[t].problems
    )
    if not failed:
        if len(pending) == len(targets):
            return f"{name} accepted ({len(targets)} people plausible)"
        return f"{name} accepted for {', '.join(_who(faces, t) for t in passed)}"
    if not passed:
        return f"{name} rejected ({problems})"
    return f"{name} accepted for {len(passed)} of {len(pending)} (rejected {problems})"


def _who(faces: Sequence[FaceInTile], index: int) -> str:
    return faces[index].identity or faces[index].face_id


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


def _with_reason(segmentation: Segmentation, steps: Sequence[str]) -> Segmentation:
    return replace(segmentation, reason="; ".join(steps))
