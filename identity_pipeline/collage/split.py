"""Split a collage into its photos: the rule-based cuts, checked by a learned second opinion.

The cuts come from the rule-based splitter (``rules.py``): on the benchmark it is still more often
exactly right than the learned line model (``line_split.py``: per-line evidence read by a 1D
network, cut by ``decoder.py``) on the held-back and faces-dev pools (see
``benchmarks/collage_split.py``, which runs them on the same cases), so it stays where it wins.
The line model runs beside it as a second opinion: the photo's ``confidence`` is a logistic model
(fitted by ``benchmarks/train_collage_splitter.py`` on synthetic collages of the training pool)
over the rules' own margin, the line model's confidence and whether it lands on the same tiles -
two different methods agreeing is strong evidence. A photo under ``settings.review_below`` is
flagged ``review``.

``settings.line_model_overrides`` (on by default; off ships the rules' tiles everywhere) takes the
line model's tiles where a second logistic model over the same features (fitted on the same cases)
says they are likelier exactly right than the rules'; the benchmark prints it as its own column.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from identity_pipeline.collage import line_split, rules
from identity_pipeline.collage.boxes import Box, SplitResult, same_tiles
from identity_pipeline.collage.rules import DEFAULT_CONFIG, SplitConfig

# The two logistic models (weights then bias, per CONFIDENCE_FEATURES).
WEIGHTS_FILE = Path(__file__).with_name("splitter.safetensors")
CONFIDENCE_FEATURES = (
    "rules margin",
    "log tiles",
    "line model confidence",
    "line model agrees",
)

__all__ = ["DEFAULT_SETTINGS", "WEIGHTS_FILE", "SplitSettings", "combine", "split_image"]


@dataclass(frozen=True)
class SplitSettings:
    """photo_tiles' splitter: the rules' thresholds, and what the line model's opinion may do."""

    # Photos whose calibrated confidence is under this are flagged for review.
    review_below: float = 0.9
    # Take the line model's tiles where the fitted model (training pool only) says they are
    # likelier right than the rules': on the benchmark's unseen pools it gains
    # held-back 94.9 -> 97.1 % exact, faces-dev 80.7 -> 81.5 %, and cuts no real single photo.
    line_model_overrides: bool = True
    # The rule-based splitter's thresholds (it makes the cuts while it wins).
    rules: SplitConfig = DEFAULT_CONFIG


DEFAULT_SETTINGS = SplitSettings()


def confidence_features(by_rules: SplitResult, by_lines: SplitResult) -> np.ndarray:
    return np.array(
        [
            by_rules.confidence,
            math.log(len(by_rules.boxes)),
            by_lines.confidence,
            float(same_tiles(by_rules.boxes, by_lines.boxes)),
        ]
    )


@functools.cache
def _logistic_models() -> dict[str, np.ndarray]:
    """P(the rules' tiles are exactly right) and P(the line model's are), weights then bias."""
    from safetensors.numpy import load_file

    tensors = load_file(str(WEIGHTS_FILE))
    return {name: tensors[name].astype(np.float64) for name in ("confidence_model", "lines_right")}


def logistic(features: np.ndarray, weights: np.ndarray) -> float:
    z = float(features @ weights[:-1] + weights[-1])
    return round(1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z)))), 3)


def split_image(
    image: np.ndarray,
    settings: SplitSettings = DEFAULT_SETTINGS,
    face_boxes: Sequence[Box] = (),
) -> SplitResult:
    """Tile boxes of one image (H x W x 3 uint8 RGB, EXIF-upright), sorted top-to-bottom.

    ``face_boxes`` (full-image pixel boxes) are evidence: no cut passes through a face.
    ``confidence`` is the calibrated probability that the tiles are exactly right; ``review``
    is set under ``settings.review_below``.
    """
    by_rules = rules.split_image(image, settings.rules, face_boxes)
    if min(np.asarray(image).shape[:2]) < 16:
        return by_rules
    by_lines = line_split.split_image(image, face_boxes=face_boxes)
    return combine(by_rules, by_lines, settings)


def combine(
    by_rules: SplitResult,
    by_lines: SplitResult,
    settings: SplitSettings = DEFAULT_SETTINGS,
    models: dict[str, np.ndarray] | None = None,
) -> SplitResult:
    """The rules' tiles with their calibrated confidence, or the line model's where the fitted
    model says they are likelier right (``models``: the two logistic models, default shipped)."""
    features = confidence_features(by_rules, by_lines)
    models = models or _logistic_models()
    chosen, confidence = by_rules, logistic(features, models["confidence_model"])
    if settings.line_model_overrides:
        lines_right = logistic(features, models["lines_right"])
        if lines_right > confidence:
            chosen, confidence = by_lines, lines_right
    return replace(chosen, confidence=confidence, review=confidence < settings.review_below)
