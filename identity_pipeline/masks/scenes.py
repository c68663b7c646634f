"""License-clean multi-person scenes for tests and the benchmark, composed from one NASA photo.

``skimage.data.astronaut()`` (Eileen Collins, NASA, public domain) is the only source: scaled,
mirrored and pasted copies make two people with touching torsos in identical orange suits (the
hardest case for colour-based GrabCut), a person partly hidden behind another, and a row of
three at different sizes. Faces come from the offline face backend (YuNet), as in the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from identity_pipeline.masks.records import FaceInTile

MIN_DETECTION_SCORE = 0.6


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def scaled(image: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def touching_pair(side: int = 320) -> np.ndarray:
    """Two people side by side, orange sleeves pressed together along the middle column.

    The mirrored copy goes left: its sleeve (the original's left edge) then meets the original
    copy's sleeve at the seam.
    """
    person = scaled(astronaut(), side)
    return np.ascontiguousarray(np.concatenate([person[:, ::-1], person], axis=1))


def overlapping_pair(side: int = 360) -> np.ndarray:
    """A smaller person behind, a bigger mirrored one in front hiding the right of their body.

    The front copy's frame starts just right of the back person's face, so that face stays
    whole while their right shoulder and arm are covered.
    """
    back = scaled(astronaut(), side)
    front = scaled(astronaut(), int(side * 1.15))[:, ::-1]
    x0 = int(side * 0.62)
    canvas = np.full((front.shape[0], x0 + front.shape[1], 3), 200, np.uint8)
    canvas[canvas.shape[0] - side :, :side] = back
    canvas[:, x0:] = front
    return canvas


def row_of_three(height: int = 300) -> np.ndarray:
    """Three people at 100%, 85% and 70% size standing on one floor line."""
    person = astronaut()
    sizes = [height, int(height * 0.85), int(height * 0.7)]
    canvas = np.full((height, sum(sizes), 3), 180, np.uint8)
    x = 0
    for index, size in enumerate(sizes):
        copy = scaled(person, size)
        canvas[height - size :, x : x + size] = copy[:, ::-1] if index % 2 else copy
        x += size
    return canvas


def composed_scenes() -> dict[str, np.ndarray]:
    return {
        "astronaut": astronaut(),
        "touching_pair": touching_pair(),
        "overlapping_pair": overlapping_pair(),
        "row_of_three": row_of_three(),
    }


def offline_face_backend() -> object:
    """YuNet + SFace from the faces package (``get_backend("offline")`` once it exists)."""
    try:
        from identity_pipeline.faces import get_backend  # type: ignore[attr-defined]

        return get_backend("offline")
    except ImportError:
        from identity_pipeline.faces.offline import OfflineBackend

        return OfflineBackend()


def detect_faces(
    image_rgb: np.ndarray,
    identities: Sequence[str | None] | None = None,
    backend: object | None = None,
) -> list[FaceInTile]:
    """Faces found by the offline backend, left to right, named from ``identities`` in order.

    Faces beyond the names given are strangers (identity None).
    """
    if backend is None:
        backend = offline_face_backend()
    found = [f for f in backend.detect(image_rgb) if f.score >= MIN_DETECTION_SCORE]  # type: ignore[attr-defined]
    found.sort(key=lambda f: f.box[0])
    names = list(identities or [])
    faces = []
    for index, face in enumerate(found):
        identity = names[index] if index < len(names) else None
        box = tuple(float(v) for v in face.box)
        faces.append(FaceInTile(f"face{index}", box, np.asarray(face.landmarks), identity))  # type: ignore[arg-type]
    return faces
