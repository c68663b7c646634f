"""What every face backend offers: find faces in an RGB image, and turn found faces into vectors.

A backend works on whatever image it is handed, at that image's resolution; choosing scales,
crops and merging duplicates is ``multiscale``'s job, so both backends get it for free.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Landmark order shared by YuNet, SCRFD and the ArcFace alignment template: the eye on the image's
# left (the subject's right eye) first, then the other eye, nose tip, mouth corners left to right.
LANDMARK_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")


class ModelFileError(RuntimeError):
    """A model file is missing, or its bytes are not the ones this code was validated with."""


@dataclass(frozen=True)
class DetectedFace:
    """One face as a detector saw it, in the pixel coordinates of the image it was given."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    landmarks: np.ndarray = field(compare=False)  # (5, 2) float32, LANDMARK_NAMES order
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The longer side of the box: what "a 20 px face" means everywhere in this package."""
        return max(self.width, self.height)

    def mapped(self, scale: float, offset: tuple[float, float] = (0.0, 0.0)) -> DetectedFace:
        """The same face in another frame: divide by ``scale``, then shift by ``offset``."""
        dx, dy = offset
        x0, y0, x1, y1 = self.box
        box = (x0 / scale + dx, y0 / scale + dy, x1 / scale + dx, y1 / scale + dy)
        landmarks = self.landmarks / np.float32(scale) + np.array([dx, dy], dtype=np.float32)
        return DetectedFace(box, landmarks.astype(np.float32), self.score)


class FaceBackend(ABC):
    """A detector plus a recognizer; one instance is not thread-safe (one per worker).

    ``name`` and ``model_sha256`` travel with every embedding: vectors of different backends or
    weights live in different spaces and must never be compared or stored in one table.
    """

    name: str
    model_sha256: str
    embedding_dim: int
    # The detector finds faces whose box is between these sizes (pixels of the image it is given);
    # multiscale picks image scales so every wanted face lands in this range at least once.
    min_face_px: float = 16.0
    max_face_px: float = 320.0
    # The longest side the detector looks at without shrinking the image itself (None: any size).
    detect_max_side: int | None = None

    @abstractmethod
    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        """Faces in an ``(H, W, 3)`` uint8 RGB image; candidates down to the backend's floor score."""

    @abstractmethod
    def embed(self, image_rgb: np.ndarray, faces: Sequence[DetectedFace]) -> np.ndarray:
        """``(len(faces), embedding_dim)`` float32, every row L2-normalised."""

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "model_sha256": self.model_sha256,
            "embedding_dim": self.embedding_dim,
        }


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_verified(path: Path, expected_sha256: str, how_to_fix: str) -> bytes:
    """The bytes of a model file, refused unless they hash to ``expected_sha256``."""
    if not path.is_file():
        raise ModelFileError(f"model file {path} is missing. {how_to_fix}")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ModelFileError(
            f"model file {path} has sha256 {actual}, expected {expected_sha256}: the file is "
            f"corrupt or another version. {how_to_fix}"
        )
    return data


def combined_sha256(parts: Sequence[tuple[str, str]]) -> str:
    """One hash for a backend made of several files: sha256 over ``role=sha256`` lines."""
    text = "".join(f"{role}={digest}\n" for role, digest in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Check the one image layout backends accept; a wrong one is a caller bug, said plainly."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape} dtype {image.dtype}"
        )
    return image
