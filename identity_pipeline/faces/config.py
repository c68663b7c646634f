"""The ``faces`` settings: which face model, and every threshold of detection and scoring.

The config's hash is part of the cache key: changing a threshold re-computes cached tiles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

from identity_pipeline.settings import stable_hash

# Bump when code changes alter results for the same config (new merge rule, new quality formula):
# it is part of the cache key, so old cache entries stop matching.
PIPELINE_VERSION = 2  # 2: photo-relative smallest face, working copy, zoom check, gate


# Fields that choose the model rather than how it is used: the cache keys on the loaded model's
# own hash instead, so they stay out of ``FaceConfig.hash``.
MODEL_CHOICE_FIELDS = ("backend", "insightface_pack", "insightface_root")


@dataclass(frozen=True)
class FaceConfig:
    # The detector + embedder: "offline" (YuNet + SFace from a registry wheel, runs anywhere),
    # "insightface" (a model pack such as buffalo_l in <insightface_root>/models/<pack>/), or ""
    # for insightface where onnxruntime has CUDA and offline elsewhere. photo_tiles (faces as
    # evidence against cuts) and identity_fidelity use the same one.
    backend: str = ""
    insightface_pack: str = "buffalo_l"
    insightface_root: str | None = None  # unset: $INSIGHTFACE_ROOT or ~/.insightface
    # Sizes are the longer side of a face box in tile pixels. The smallest face worth finding is
    # a fraction of the tile's longer side, never below min_face_px: a face of 1/64 of the photo
    # is 20 px when the photo is seen at 1280 px (a screen, a training image), and smaller ones
    # are neither recognisable nor learnable there. So a 12 MP and a 48 MP copy of one photo are
    # searched alike, on a working copy of ~1024 px (backend.min_face_px / min_face_fraction).
    min_face_px: float = 20.0  # the absolute floor; scales are chosen for the smallest face
    min_face_fraction: float = 1 / 64
    # Smaller detections are dropped (too small to embed); scaled with the smallest face.
    discard_below_px: float = 12.0
    det_score_threshold: float = 0.6  # calibrated on faces-dev (see benchmarks/faces.py)
    nms_iou: float = 0.4  # merge detections of one face from different scales/crops
    nms_containment: float = 0.6  # ...and a part-face box mostly inside a bigger face box
    coarse_side: int = 320  # the whole-tile pass: longest side, for faces filling the tile
    pyramid_step: float = 4.0  # scale ratio between passes (detector range is ~20x)
    max_upscale: float = 2.0  # never enlarge a tile more than this to reach min_face_px
    max_detect_side: int = 4096  # larger passes are split into overlapping crops
    crop_edge_px: float = 2.0  # boxes this close to an inner crop edge are cut faces: dropped
    # A candidate smaller than this in the working copy is detected again in a crop where it is
    # this big (faces.verify): at the bottom of its range the detector mistakes hands, cups and
    # pictures for faces, and a real face found there gets sharper landmarks.
    zoom_face_px: float = 48.0
    # Quality: weighted mean of three [0, 1] scores.
    quality_weight_blur: float = 0.4
    quality_weight_pose: float = 0.4
    quality_weight_size: float = 0.2
    blur_reference: float = 300.0  # Laplacian variance of the aligned crop that scores 1.0
    good_face_px: float = 112.0  # faces at least this big score 1.0 on size (the embed crop)
    max_yaw: float = 0.6  # nose offset / eye distance where the pose score reaches 0
    max_pitch: float = 0.5  # deviation of the nose's eye-to-mouth position where it reaches 0

    def __post_init__(self) -> None:
        problems = []
        if self.backend not in ("", "offline", "insightface"):
            problems.append(f"backend must be '', 'offline' or 'insightface', got {self.backend!r}")
        if self.min_face_px <= 0 or self.discard_below_px < 0:
            problems.append("face sizes must be positive")
        if self.pyramid_step <= 1.0:
            problems.append("pyramid_step must be > 1")
        if self.coarse_side < 32 or self.max_detect_side < 64:
            problems.append("coarse_side must be >= 32 and max_detect_side >= 64")
        if not all(
            0.0 <= v <= 1.0 for v in (self.det_score_threshold, self.nms_iou, self.nms_containment)
        ):
            problems.append("scores and overlaps must be within [0, 1]")
        if problems:
            raise ValueError(f"invalid FaceConfig: {'; '.join(problems)}")

    @cached_property
    def digest(self) -> str:
        """A short, stable digest of every field and the pipeline version (computed once)."""
        return self.hash()

    def hash(self) -> str:
        """A short, stable digest of every threshold and the pipeline version."""
        thresholds = {k: v for k, v in asdict(self).items() if k not in MODEL_CHOICE_FIELDS}
        return stable_hash({"pipeline_version": PIPELINE_VERSION, **thresholds})
