"""Clustering settings: one frozen dataclass (the ``clustering`` section of pipeline.yaml).

Cosine thresholds are not settings: they come from the backend's calibration
(``calibration.py``), so one album's settings stay right when the face model changes.
"""

from __future__ import annotations

from dataclasses import dataclass


class ClusterConfigError(ValueError):
    """A clustering setting is unusable; the message says which key and why."""


@dataclass(frozen=True)
class ClusterConfig:
    # Faces below either bar do not shape clusters (their vectors are noisy, and blurry faces of
    # different people look alike to the model); they may only join a cluster confidently.
    min_quality: float = 0.45  # FaceQuality.overall; 0.45 ~ a 40 px face, or a sharp profile
    min_face_px: float = 32.0  # SFace's 112 px crop from fewer pixels than this is mostly blur
    representatives: int = 4  # faces shown per cluster on the labeling page and sheets
    # The album's own calibration (from named faces) replaces the shipped one from this many
    # named people: fewer give a spread of different-person scores too rough to set bars.
    calibrate_from_named_people: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_quality <= 1.0:
            raise ClusterConfigError(f"min_quality must lie in [0, 1], got {self.min_quality}")
        if self.min_face_px < 0:
            raise ClusterConfigError(f"min_face_px must be >= 0, got {self.min_face_px}")
        if self.representatives < 1:
            raise ClusterConfigError("representatives must be at least 1")
        if self.calibrate_from_named_people < 2:
            raise ClusterConfigError("calibrate_from_named_people must be at least 2")
