"""An experimental collage splitter: the line model's cuts, a calibrated confidence, a review flag.

Not what cuts photo_tiles' photos (``split.split_image``: the rule-based cuts, which still win
on the benchmark overall; ``benchmarks/collage_split.py`` runs both on the same cases); there it
is a second opinion read by the shipped confidence, and with ``line_model_overrides`` may take
over a photo. Here
every cut comes from the line model (``lines.py``: per-line evidence read by a small 1D network)
decoded by recursive cuts (``decoder.py``; flat gutters and margins placed to the exact pixel, no
cut through a face box). ``confidence`` is a logistic model (fitted by
``benchmarks/train_line_model.py`` on synthetic collages of the training pool) over the
decoder's own decisions: the weakest cut taken, the strongest line refused, the layout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from identity_pipeline.collage.boxes import (
    DECIDED_AUTO,
    Box,
    SplitResult,
    classify_layout,
    sort_boxes,
)
from identity_pipeline.collage.decoder import Decoder, LineSplitSettings, decode
from identity_pipeline.collage.lines import (
    WEIGHTS_FILE,
    analysis_size,
    load_weights,
    net_from_tensors,
    resize_for_analysis,
)

DEFAULT_SETTINGS = LineSplitSettings()
__all__ = ["DEFAULT_SETTINGS", "WEIGHTS_FILE", "LineSplitSettings", "split_image"]
CONFIDENCE_FEATURES = (
    "weakest cut taken (logit)",
    "strongest line refused (logit)",
    "log product of the decisions",
    "log tiles",
    "irregular layout",
    "cuts of both kinds (gutters and seams)",
    "gutters of different colours",
    "tile sizes differ within a row or column",
)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def confidence_features(decoder: Decoder, boxes: Sequence[Box]) -> np.ndarray:
    taken = [c for d in decoder.decisions for c in d.taken]
    refused = [c for d in decoder.decisions for c in d.refused]
    weakest = min((c.probability for c in taken), default=1.0)
    strongest = max((c.probability for c in refused), default=0.0)
    product = sum(math.log(max(c.probability, 1e-4)) for c in taken) + sum(
        math.log1p(-min(c.probability, 0.9999)) for c in refused
    )
    kinds = {c.flat for c in taken}
    colours = [np.array(c.colour) for c in taken if c.flat and c.colour is not None]
    spread = max((float(np.abs(a - colours[0]).sum()) for a in colours), default=0.0)
    kind = classify_layout(boxes)
    uneven = 0.0
    if kind.startswith("grid") or kind.startswith("stack"):
        widths = [b.width for b in boxes] if kind.startswith("grid") else [0]
        heights = [b.height for b in boxes] if kind.startswith("grid") else [0]
        uneven = (max(widths) - min(widths) + max(heights) - min(heights)) / max(
            1, max(widths) + max(heights)
        )
    return np.array(
        [
            _logit(weakest),
            _logit(max(strongest, 1e-4)),
            product,
            math.log(len(boxes)),
            float(kind == "irregular"),
            float(len(kinds) > 1),
            float(spread > 60),
            uneven,
        ]
    )


@functools.cache
def _models():
    tensors = load_weights(WEIGHTS_FILE)
    confidence = tensors.get("confidence.weights")
    return net_from_tensors(tensors), None if confidence is None else confidence.astype(np.float64)


def decode_image(
    array: np.ndarray, settings: LineSplitSettings, face_boxes: Sequence[Box], net
) -> tuple[tuple[Box, ...], Decoder]:
    height, width = array.shape[:2]
    size = analysis_size(
        width,
        height,
        settings.analysis_side,
        settings.analysis_min_short,
        settings.analysis_max_side,
    )
    decoder = decode(array, resize_for_analysis(array, size), net, settings, face_boxes)
    boxes = sort_boxes(box for box in decoder.boxes if box.area > 0) or (Box(0, 0, width, height),)
    return boxes, decoder


def split_image(
    image: np.ndarray,
    settings: LineSplitSettings = DEFAULT_SETTINGS,
    face_boxes: Sequence[Box] = (),
    *,
    net=None,
    confidence_weights: np.ndarray | None = None,
) -> SplitResult:
    """Tile boxes of one image (H x W x 3 uint8 RGB, EXIF-upright), sorted top-to-bottom.

    ``face_boxes`` (full-image pixel boxes) are evidence: no cut passes through a face.
    ``confidence`` is the calibrated probability that the tiles are exactly right; ``review``
    is set under ``settings.review_below``.
    """
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB array, got {array.dtype} {array.shape}")
    height, width = array.shape[:2]
    whole = Box(0, 0, width, height)
    if height < 16 or width < 16:
        return SplitResult((whole,), "single", 1.0, DECIDED_AUTO)
    default_net, default_confidence = _models()  # weights without a confidence model: 0.5
    weights = default_confidence if confidence_weights is None else confidence_weights
    boxes, decoder = decode_image(array, settings, face_boxes, net or default_net)
    features = confidence_features(decoder, boxes)
    if weights is None:
        confidence = 0.5
    else:
        z = float(features @ weights[:-1] + weights[-1])
        confidence = 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))
    confidence = round(confidence, 3)
    result = SplitResult(
        boxes,
        classify_layout(boxes),
        confidence,
        DECIDED_AUTO,
        tuple(decoder.cuts),
        review=confidence < settings.review_below,
    )
    return result
