"""What goes in (a tile and its faces) and what comes out (one soft mask per named person)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from identity_pipeline.masks.config import MaskConfig


@dataclass(frozen=True)
class FaceInTile:
    """One detected face in a tile. ``identity`` None: a stranger, blurred, never a target."""

    face_id: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in tile pixels
    landmarks: np.ndarray = field(compare=False)  # (5, 2): eyes, nose, mouth corners (ArcFace)
    identity: str | None = None

    @property
    def width(self) -> float:
        return max(1.0, self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return max(1.0, self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        return max(self.width, self.height)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def scaled(self, scale: float) -> FaceInTile:
        """The same face in an image resized by ``scale``."""
        box = tuple(float(v) * scale for v in self.box)
        landmarks = np.asarray(self.landmarks, dtype=np.float32) * np.float32(scale)
        return FaceInTile(self.face_id, box, landmarks, self.identity)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Segmentation:
    """A backend's answer: one probability map per face, at the resolution it was given.

    ``per_person`` False means every map is the same "any person here" map (a selfie model), so
    which person a pixel belongs to is left entirely to geometry.
    """

    probabilities: np.ndarray  # (faces, H, W) float32 in [0, 1]
    backend: str
    reason: str = ""
    per_person: bool = True
    # Per face, the backend its map came from, when the selector mixed backends in one tile.
    person_backends: tuple[str, ...] | None = None

    def backend_of(self, index: int) -> str:
        return self.person_backends[index] if self.person_backends else self.backend


@runtime_checkable
class Segmenter(Protocol):
    """Anything that turns a tile and its faces into per-face person probabilities."""

    name: str

    def segment(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> Segmentation: ...


@dataclass(frozen=True)
class IdentityMask:
    """The training sample of one named person in one tile."""

    identity: str
    face_id: str  # the target face
    mask: np.ndarray = field(compare=False)  # (H, W) uint8, 255 = this person, soft edges
    training_image: np.ndarray = field(compare=False)  # (H, W, 3) uint8, other faces blurred
    flags: tuple[str, ...]
    backend: str
    selector_reason: str
    mask_area_fraction: float  # mean mask value / 255 over the tile
    face_area_fraction: float  # target face box area / tile area
    other_faces_blurred: int
    kept: bool = True  # False when a flag in MaskConfig.exclude_flags is raised
    segment_seconds: float = 0.0  # segmentation time of the whole tile (shared by its masks)

    @property
    def area_ratio(self) -> float:
        """Mask area over face box area: ~3-8 for a bust, ~15-30 for a whole body."""
        return self.mask_area_fraction / max(self.face_area_fraction, 1e-12)
