"""Which checkpoint to keep: one number per checkpoint from its summary, the configured rule."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from identity_pipeline.evaluation.config import FidelityConfig


@dataclass(frozen=True)
class Choice:
    index: int | None  # into the candidates; None: nothing to choose from
    name: str | None
    step: int | None
    score: float
    reason: str


def _value(summary: Mapping[str, Any], key: str) -> float:
    value = summary.get(key)
    return float(value) if value is not None and math.isfinite(float(value)) else math.nan


def selection_score(summary: Mapping[str, Any], config: FidelityConfig) -> float:
    """The rule's score of one checkpoint; NaN when undefined (e.g. no face in any image)."""
    no_face = _value(summary, "no_face_rate")
    no_face = 0.0 if math.isnan(no_face) else no_face
    if config.best_rule == "identification":
        base = _value(summary, "identification")
        return base - config.no_face_weight * no_face
    likeness = _value(summary, "likeness")
    if config.best_rule == "likeness":
        return likeness - config.no_face_weight * no_face
    bleed = _value(summary, "bleed")
    bleed = 0.0 if math.isnan(bleed) else bleed  # one identity, no other face: nothing bled
    return likeness - config.bleed_weight * bleed - config.no_face_weight * no_face


def choose_checkpoint(
    candidates: Sequence[tuple[str, int, Mapping[str, Any]]], config: FidelityConfig
) -> Choice:
    """The best of ``(name, step, summary)``; ties go to the earlier step.

    When no candidate has a defined score (no faces anywhere, e.g. an untrained model), the
    latest checkpoint is chosen and the reason says so.
    """
    if not candidates:
        return Choice(None, None, None, math.nan, "no checkpoint to choose from")
    scores = [selection_score(summary, config) for _, _, summary in candidates]
    finite = [i for i, score in enumerate(scores) if math.isfinite(score)]
    if not finite:
        latest = max(range(len(candidates)), key=lambda i: candidates[i][1])
        name, step, _ = candidates[latest]
        return Choice(
            latest,
            name,
            step,
            math.nan,
            f"rule {config.best_rule!r} is undefined for every checkpoint (no faces found in the "
            "generated images, or no reference photos): the latest checkpoint is chosen",
        )
    best = max(finite, key=lambda i: (scores[i], -candidates[i][1]))
    name, step, _ = candidates[best]
    return Choice(best, name, step, scores[best], f"highest {config.best_rule} score")
