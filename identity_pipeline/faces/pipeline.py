"""One tile in, its face records out: cache lookup, multi-scale detection, quality, embedding."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from identity_pipeline.faces.backend import FaceBackend, rgb_uint8
from identity_pipeline.faces.cache import FaceCache, pixels_sha256
from identity_pipeline.faces.config import FaceConfig
from identity_pipeline.faces.multiscale import detect_multiscale
from identity_pipeline.faces.quality import FaceQuality, face_quality
from identity_pipeline.faces.records import FaceRecord, TileFace, make_records

ImageSource = np.ndarray | Callable[[], np.ndarray]


def _f32(value: float) -> float:
    """Float32 precision, as stored: fresh and cached results are then exactly equal."""
    return float(np.float32(value))


def analyse_tile(image_rgb: np.ndarray, backend: FaceBackend, config: FaceConfig) -> list[TileFace]:
    """Detect (all scales), embed and score every face of one tile; no cache, no ids."""
    image = rgb_uint8(image_rgb)
    detections = detect_multiscale(image, backend, config)
    embeddings = backend.embed(image, detections)
    if embeddings.shape != (len(detections), backend.embedding_dim):
        raise RuntimeError(
            f"{backend.name} returned embeddings of shape {embeddings.shape} for "
            f"{len(detections)} faces, expected dim {backend.embedding_dim}"
        )
    faces = []
    for face, embedding in zip(detections, embeddings, strict=True):
        quality = face_quality(image, face, config)
        faces.append(
            TileFace(
                box=tuple(_f32(v) for v in face.box),  # type: ignore[arg-type]
                landmarks=np.asarray(face.landmarks, dtype=np.float32).reshape(5, 2),
                det_score=_f32(face.score),
                quality=FaceQuality(
                    *(_f32(v) for v in (quality.blur, quality.pose, quality.size, quality.overall))
                ),
                embedding=np.asarray(embedding, dtype=np.float32),
            )
        )
    # Reading order (top to bottom, then left to right) so the table order is stable.
    return sorted(faces, key=lambda f: (round(f.box[1]), round(f.box[0])))


def faces_for_tile(
    image_rgb: ImageSource,
    tile_id: str,
    photo_id: str,
    tile_offset: tuple[int, int],
    backend: FaceBackend,
    cache: FaceCache | None,
    config: FaceConfig,
    *,
    content_hash: str | None = None,
) -> list[FaceRecord]:
    """The faces of one tile, from the cache when this content was seen with this backend/config.

    ``image_rgb``: an ``(H, W, 3)`` uint8 RGB array, or a zero-argument callable returning one;
    a callable is only called on a cache miss (or to hash pixels when no ``content_hash``).
    ``tile_offset``: ``(x, y)`` of the tile's top-left corner in the photo; tile pixels are photo
    pixels (no scaling). ``content_hash``: any stable digest of the tile's content (e.g. the
    sha256 of its encoded file); without it the decoded pixels are hashed.
    """
    image: np.ndarray | None = image_rgb if isinstance(image_rgb, np.ndarray) else None

    def pixels() -> np.ndarray:
        nonlocal image
        if image is None:
            image = image_rgb()  # type: ignore[operator]
        return image

    key = None
    if cache is not None:
        key = cache.key(content_hash or pixels_sha256(pixels()), backend, config)
        cached = cache.lookup(key, backend)
        if cached is not None:
            return make_records(cached, tile_id, photo_id, tile_offset, backend)
    faces = analyse_tile(pixels(), backend, config)
    if cache is not None and key is not None:
        cache.store(key, backend, faces)
    return make_records(faces, tile_id, photo_id, tile_offset, backend)
