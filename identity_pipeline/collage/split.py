"""Split a collage into its photos: the rule-based cuts, checked by the learned splitter.

The cuts come from the rule-based splitter (``rules.py``): on the benchmark it is still more often
exactly right than the learned one (``learned.py``) on every family of every pool but one
(plain singles built from faces-dev: 96.7 % against 100 %; see ``benchmarks/collage_split.py``),
so it stays where it wins. The learned splitter runs beside
it as a second opinion: the photo's ``confidence`` is a logistic model (fitted by
``benchmarks/train_collage_splitter.py`` on synthetic collages of the training pool) over the
rules' own margin, the learned splitter's calibrated confidence and whether the two agree tile
for tile - two different methods landing on the same tiles is strong evidence. A photo under
``settings.review_below`` is flagged ``review``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from identity_pipeline.collage import learned, rules
from identity_pipeline.collage.boxes import Box, SplitResult, same_tiles
from identity_pipeline.collage.learned import DEFAULT_SETTINGS, WEIGHTS_FILE, SplitSettings

CONFIDENCE_FEATURES = ("rules margin", "learned confidence", "tiles agree", "log tiles")

__all__ = ["DEFAULT_SETTINGS", "WEIGHTS_FILE", "SplitSettings", "split_image"]


def confidence_features(by_rules: SplitResult, by_learned: SplitResult) -> np.ndarray:
    return np.array(
        [
            by_rules.confidence,
            by_learned.confidence,
            float(same_tiles(by_rules.boxes, by_learned.boxes)),
            math.log(len(by_rules.boxes)),
        ]
    )


@functools.cache
def _confidence_weights() -> np.ndarray:
    from safetensors.torch import load_file

    return load_file(str(WEIGHTS_FILE))["confidence_model"].double().numpy()


def combined_confidence(
    by_rules: SplitResult, by_learned: SplitResult, weights: np.ndarray | None = None
) -> float:
    """P(the rules' tiles are exactly right), from both splitters' results."""
    weights = _confidence_weights() if weights is None else weights
    z = float(confidence_features(by_rules, by_learned) @ weights[:-1] + weights[-1])
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
    by_learned = learned.learned_split(image, settings, face_boxes)
    confidence = combined_confidence(by_rules, by_learned)
    return replace(by_rules, confidence=confidence, review=confidence < settings.review_below)
