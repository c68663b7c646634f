"""Collage splitting: tile boxes of one image, from flat gutters, seams and a learned second opinion
(no dagster).

``split_image`` finds the photos of a collage; ``parse_hints``/``apply_hint`` let an album's
``split_hints.csv`` (or ``.yaml``) override it; ``draw_cuts`` shows the result on a preview;
``synthetic`` builds collages with known tiles for the benchmark, the tests and the demo album;
``cli.add_split_command`` registers ``identity-pipeline split``.
"""

from identity_pipeline.collage.boxes import (
    DECIDED_AUTO,
    DECIDED_MANUAL,
    KIND_IRREGULAR,
    KIND_MANUAL,
    KIND_SINGLE,
    Box,
    Cut,
    SplitResult,
    classify_layout,
    sort_boxes,
)
from identity_pipeline.collage.draw import draw_cuts
from identity_pipeline.collage.hints import (
    HINT_FILE_NAMES,
    Hint,
    apply_hint,
    find_hints_file,
    hint_for,
    parse_hints,
)
from identity_pipeline.collage.split import DEFAULT_SETTINGS, SplitSettings, split_image

__all__ = [
    "DECIDED_AUTO",
    "DECIDED_MANUAL",
    "DEFAULT_SETTINGS",
    "HINT_FILE_NAMES",
    "KIND_IRREGULAR",
    "KIND_MANUAL",
    "KIND_SINGLE",
    "Box",
    "Cut",
    "Hint",
    "SplitSettings",
    "SplitResult",
    "apply_hint",
    "classify_layout",
    "draw_cuts",
    "find_hints_file",
    "hint_for",
    "parse_hints",
    "sort_boxes",
    "split_image",
]
