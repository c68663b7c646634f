"""Split a collage into its photos: the rule-based cuts, checked by two learned second opinions.

The cuts come from the rule-based splitter (``rules.py``): on the benchmark it is still more often
exactly right than either learned splitter (round 1's seam CNN, ``learned.py``; round 2's line
model, ``line_split.py``) on the held-back and faces-dev pools (see
``benchmarks/collage_split.py``, which runs them on the same cases), so it stays where it wins.
Both learned splitters run beside it as second opinions: the photo's ``confidence`` is a
logistic model (fitted by ``benchmarks/train_collage_splitter.py --confidence-only`` on synthetic
collages of the training pool) over the rules' own margin, each learned splitter's confidence
and whether it lands on the same tiles - two different methods agreeing is strong evidence.
A photo under ``settings.review_below`` is flagged ``review``.

``settings.line_model_overrides`` (on by default; off ships the rules' tiles everywhere) takes the
line model's tiles where a second logistic model over the same features (fitted on the same cases)
says they are likelier exactly right than the rules'; the benchmark prints it as its own column.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from identity_pipeline.collage import line_split, rules
from identity_pipeline.collage.boxes import Box, SplitResult, same_tiles
from identity_pipeline.collage.learned import DEFAULT_SETTINGS, WEIGHTS_FILE, SplitSettings

CONFIDENCE_FEATURES = (
    "rules margin",
    "log tiles",
    "line model confidence",
    "line model agrees",
)

__all__ = ["DEFAULT_SETTINGS", "WEIGHTS_FILE", "SplitSettings", "split_image"]


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
    features = confidence_features(by_rules, by_lines)
    models = _logistic_models()
    chosen, confidence = by_rules, logistic(features, models["confidence_model"])
    if settings.line_model_overrides:
        lines_right = logistic(features, models["lines_right"])
        if lines_right > confidence:
            chosen, confidence = by_lines, lines_right
    return replace(chosen, confidence=confidence, review=confidence < settings.review_below)
