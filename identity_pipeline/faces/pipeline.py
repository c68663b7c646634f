"""One tile in, its face records out: cache lookup, multi-scale detection, quality, embedding."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from identity_pipeline.faces.backend import DetectedFace, FaceBackend
from identity_pipeline.faces.cache import FaceCache
from identity_pipeline.faces.config import FaceConfig
from identity_pipeline.faces.multiscale import detect_multiscale, non_max_suppression
from identity_pipeline.faces.pixels import TilePixels, as_tile_pixels
from identity_pipeline.faces.quality import FaceQuality, face_quality
from identity_pipeline.faces.records import FaceRecord, TileFace, make_records
from identity_pipeline.faces.verify import Region, cut_regions, look_again, needs_second_look

ImageSource = np.ndarray | Callable[[], np.ndarray]


def _f32(value: float) -> float:
    """Float32 precision, as stored: fresh and cached results are then exactly equal."""
    return float(np.float32(value))


def analyse_tile(
    image_rgb: ImageSource | TilePixels, backend: FaceBackend, config: FaceConfig
) -> list[TileFace]:
    """Detect (all scales), check, embed and score every face of one tile; no cache, no ids."""
    pixels = as_tile_pixels(image_rgb)
    try:
        return _analyse(pixels, backend, config)
    finally:
        pixels.release()  # the tile's decoded copies go now, not when the caller drops it


def _analyse(pixels: TilePixels, backend: FaceBackend, config: FaceConfig) -> list[TileFace]:
    candidates = detect_multiscale(pixels, backend, config)
    regions = cut_regions(pixels, candidates, config)
    kept: list[tuple[DetectedFace, Region]] = []
    for face, region in zip(candidates, regions, strict=True):
        if needs_second_look(face, pixels.long_side, backend, config):
            again = look_again(face, region, backend, config)
            if again is None or again.score < config.det_score_threshold:
                continue
            face = again
        kept.append((face, region))
    # A second look can move two candidates onto one face.
    faces = non_max_suppression([f for f, _ in kept], config.nms_iou, config.nms_containment)
    region_of = {id(f): r for f, r in kept}
    faces_out = []
    for face in faces:
        region = region_of[id(face)]
        local = region.from_tile(face)
        embedding = backend.embed(region.pixels, [local])
        if embedding.shape != (1, backend.embedding_dim):
            raise RuntimeError(
                f"{backend.name} returned an embedding of shape {embedding.shape}, expected "
                f"(1, {backend.embedding_dim})"
            )
        quality = face_quality(region.pixels, local, config, face_size=face.size)
        faces_out.append(
            TileFace(
                box=tuple(_f32(v) for v in face.box),  # type: ignore[arg-type]
                landmarks=np.asarray(face.landmarks, dtype=np.float32).reshape(5, 2),
                det_score=_f32(face.score),
                quality=FaceQuality(
                    *(_f32(v) for v in (quality.blur, quality.pose, quality.size, quality.overall))
                ),
                embedding=np.asarray(embedding[0], dtype=np.float32),
            )
        )
    # Reading order (top to bottom, then left to right) so the table order is stable.
    return sorted(faces_out, key=lambda f: (round(f.box[1]), round(f.box[0])))


def faces_for_tile(
    image_rgb: ImageSource | TilePixels,
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

    ``image_rgb``: a ``TilePixels`` (e.g. ``FilePixels``: an image file, decoded only as large
    as each step needs), an ``(H, W, 3)`` uint8 RGB array, or a zero-argument callable returning
    one; nothing is decoded on a cache hit. ``tile_offset``: ``(x, y)`` of the tile's top-left
    corner in the photo; tile pixels are photo pixels (no scaling). ``content_hash``: any stable
    digest of the tile's content (e.g. the sha256 of its encoded file); without it the file's
    bytes or the decoded pixels are hashed.
    """
    source: TilePixels | None = image_rgb if isinstance(image_rgb, TilePixels) else None

    def pixels() -> TilePixels:
        nonlocal source
        if source is None:
            source = as_tile_pixels(image_rgb)  # type: ignore[arg-type]
        return source

    key = None
    if cache is not None:
        key = cache.key(content_hash or pixels().content_hash(), backend, config)
        cached = cache.lookup(key, backend)
        if cached is not None:
            return make_records(cached, tile_id, photo_id, tile_offset, backend)
    faces = analyse_tile(pixels(), backend, config)
    if cache is not None and key is not None:
        cache.store(key, backend, faces)
    return make_records(faces, tile_id, photo_id, tile_offset, backend)
