"""Which checkpoint to keep: one number per checkpoint from its summary, the configured rule."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from identity_pipeline.evaluation.config import FidelityConfig
from identity_pipeline.evaluation.metrics import FidelityScores, GeneratedImage, score_identities


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


class ScoredImages:
    """The rule's scores of any subset of each checkpoint's generated images (memoised).

    ``pooled(checkpoint, cells)``: the rule on the images of those (prompt kind, seed) cells, as
    ``choose_checkpoint`` sees a checkpoint; ``units(checkpoint, cells)``: per identity, the rule
    on that identity's images of the cells, whose mean over identities is the pooled score (the
    paired units of the progressive choice's margin). Every identity's reference photos take
    part, sampled or not: a face that looks like someone outside the sample is bleed all the same.
    """

    def __init__(
        self,
        reference: Mapping[str, Any],
        training: Mapping[str, Any],
        config: FidelityConfig,
        images: Mapping[int, Sequence[GeneratedImage]] | None = None,
    ) -> None:
        self.reference = reference
        self.training = training
        self.config = config
        self.images: dict[int, list[GeneratedImage]] = {
            key: list(value) for key, value in (images or {}).items()
        }
        self._memo: dict[tuple[int, frozenset], tuple[float, dict[str, float]]] = {}

    def add(self, checkpoint: int, images: Sequence[GeneratedImage]) -> None:
        self.images.setdefault(checkpoint, []).extend(images)

    def scores(
        self, checkpoint: int, cells: Sequence[tuple[str, int]] | None = None
    ) -> FidelityScores:
        wanted = None if cells is None else set(cells)
        subset = [
            image
            for image in self.images.get(checkpoint, [])
            if wanted is None or (image.prompt_kind, image.seed) in wanted
        ]
        return score_identities(self.reference, subset, self.training, self.config.copy_threshold)

    def _scored(self, checkpoint: int, cells: Sequence[tuple[str, int]]):
        key = (checkpoint, frozenset(cells))
        if key not in self._memo:
            scores = self.scores(checkpoint, cells)
            units = {
                str(row["identity"]): selection_score(
                    {**row, "identification": row["identified"]}, self.config
                )
                for row in scores.table.to_dict("records")
                if row["images"] > 0
            }
            self._memo[key] = (selection_score(scores.summary, self.config), units)
        return self._memo[key]

    def pooled(self, checkpoint: int, cells: Sequence[tuple[str, int]]) -> float:
        return self._scored(checkpoint, cells)[0]

    def units(self, checkpoint: int, cells: Sequence[tuple[str, int]]) -> dict[str, float]:
        return self._scored(checkpoint, cells)[1]
