"""identity_masks for one album: every tile with a named face -> one sample per named person.

A tile's samples depend only on its pixels, its faces with their names, and the mask settings,
so the previous table is a cache keyed by ``mask_key``; sample files are named by that key, so
a changed result is a new file and nothing a reader holds is rewritten in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from identity_pipeline.masks.build import build_identity_masks
from identity_pipeline.masks.checks import unblurred_other_faces
from identity_pipeline.masks.config import DEFAULT_MASK_CONFIG, MaskConfig
from identity_pipeline.masks.preview import encode_mask_png
from identity_pipeline.masks.records import FaceInTile, IdentityMask, Segmenter
from identity_pipeline.storage import content_id, write_file_once

SAMPLE_JPEG_QUALITY = 95

MASK_SAMPLE_DTYPES: dict[str, str] = {
    "sample_key": "string",
    "album": "string",
    "tile_id": "string",
    "photo_id": "string",
    "face_id": "string",
    "identity": "string",
    "image_path": "string",
    "mask_path": "string",
    "tile_width": "Int64",
    "tile_height": "Int64",
    "face_x0": "float64",
    "face_y0": "float64",
    "face_x1": "float64",
    "face_y1": "float64",
    "face_size": "float64",
    "face_quality": "float64",
    "det_score": "float64",
    "faces_in_tile": "Int64",
    "mask_area_fraction": "float64",
    "face_area_fraction": "float64",
    "flags": "string",
    "kept": "bool",
    "backend": "string",
    "selector_reason": "string",
    "other_faces_blurred": "Int64",
    "unblurred_other_faces": "Int64",
    "segment_seconds": "float64",
    "mask_key": "string",
}


@dataclass
class AlbumMasks:
    samples: pd.DataFrame
    previews: list[tuple[np.ndarray, IdentityMask]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # tile_id -> reason
    built_tiles: int = 0
    reused_tiles: int = 0


def mask_album(
    album: str,
    tiles: pd.DataFrame,
    faces: pd.DataFrame,
    names: Mapping[str, str | None],
    data_root: Path,
    files_dir: Path,
    previous: pd.DataFrame | None = None,
    config: MaskConfig = DEFAULT_MASK_CONFIG,
    segmenter: Segmenter | None = None,
    max_previews: int = 24,
) -> AlbumMasks:
    """Samples for every tile of ``tiles`` holding at least one named face.

    ``faces``: this album's face_embeddings rows. ``names``: face_id -> identity (None for
    unnamed, strangers and ignored faces; they are blurred, never targets).
    """
    segmenter_name = getattr(segmenter, "name", "default")
    cached = _cache_by_key(previous)
    result = AlbumMasks(samples=pd.DataFrame())
    rows: list[dict[str, object]] = []
    faces_by_tile = {tile_id: group for tile_id, group in faces.groupby("tile_id", sort=False)}
    for tile in tiles.itertuples(index=False):
        tile_faces = faces_by_tile.get(tile.tile_id)
        if tile_faces is None or not any(names.get(f) for f in tile_faces["face_id"]):
            continue
        in_tile = _faces_in_tile(tile_faces, (int(tile.x0), int(tile.y0)), names)
        key = _mask_key(tile.tile_id, in_tile, config, segmenter_name)
        reusable = cached.get(key)
        if reusable is not None and _files_exist(reusable, data_root):
            rows.extend(reusable)
            result.reused_tiles += 1
            continue
        try:
            with Image.open(data_root / tile.tile_path) as image:
                tile_rgb = np.asarray(image.convert("RGB"))
            masks = build_identity_masks(tile_rgb, in_tile, segmenter, config)
        except Exception as error:  # noqa: BLE001 - one bad tile must not cost the album
            result.failures[tile.tile_id] = f"{tile.source_path}: {type(error).__name__}: {error}"
            continue
        result.built_tiles += 1
        quality = tile_faces.set_index("face_id")
        for mask in masks:
            rows.append(
                _sample_row(
                    album, tile, mask, in_tile, tile_rgb, quality, key, data_root, files_dir
                )
            )
            if len(result.previews) < max_previews:
                result.previews.append((tile_rgb, mask))
    result.samples = pd.DataFrame(rows, columns=list(MASK_SAMPLE_DTYPES)).astype(MASK_SAMPLE_DTYPES)
    return result


def _faces_in_tile(
    tile_faces: pd.DataFrame, offset: tuple[int, int], names: Mapping[str, str | None]
) -> list[FaceInTile]:
    """Faces in tile pixels (the faces table keeps landmarks in photo pixels)."""
    shift = np.asarray(offset, dtype=np.float32)
    return [
        FaceInTile(
            face_id=str(face.face_id),
            box=(
                float(face.tile_x0),
                float(face.tile_y0),
                float(face.tile_x1),
                float(face.tile_y1),
            ),
            landmarks=np.asarray(face.landmarks, dtype=np.float32).reshape(5, 2) - shift,
            identity=names.get(str(face.face_id)) or None,
        )
        for face in tile_faces.itertuples(index=False)
    ]


def _mask_key(tile_id: str, faces: list[FaceInTile], config: MaskConfig, segmenter: str) -> str:
    people = sorted((face.face_id, face.identity or "") for face in faces)
    return content_id(tile_id, people, config.hash(), segmenter, length=24)


def _sample_row(
    album: str,
    tile,
    mask: IdentityMask,
    faces: list[FaceInTile],
    tile_rgb: np.ndarray,
    quality: pd.DataFrame,
    key: str,
    data_root: Path,
    files_dir: Path,
) -> dict[str, object]:
    sample_key = content_id(tile.tile_id, mask.identity)
    stem = f"{sample_key}_{key[:12]}"
    image_path = write_file_once(
        files_dir / f"{stem}_image.jpg",
        lambda handle: Image.fromarray(mask.training_image).save(
            handle, "JPEG", quality=SAMPLE_JPEG_QUALITY, subsampling=0
        ),
    )
    mask_path = write_file_once(
        files_dir / f"{stem}_mask.png", lambda handle: handle.write(encode_mask_png(mask.mask))
    )
    target = quality.loc[mask.face_id]
    return {
        "sample_key": sample_key,
        "album": album,
        "tile_id": tile.tile_id,
        "photo_id": tile.photo_id,
        "face_id": mask.face_id,
        "identity": mask.identity,
        "image_path": image_path.relative_to(data_root).as_posix(),
        "mask_path": mask_path.relative_to(data_root).as_posix(),
        "tile_width": int(tile_rgb.shape[1]),
        "tile_height": int(tile_rgb.shape[0]),
        "face_x0": float(target["tile_x0"]),
        "face_y0": float(target["tile_y0"]),
        "face_x1": float(target["tile_x1"]),
        "face_y1": float(target["tile_y1"]),
        "face_size": float(target["face_size"]),
        "face_quality": float(target["quality"]),
        "det_score": float(target["det_score"]),
        "faces_in_tile": len(faces),
        "mask_area_fraction": mask.mask_area_fraction,
        "face_area_fraction": mask.face_area_fraction,
        "flags": ",".join(mask.flags),
        "kept": mask.kept,
        "backend": mask.backend,
        "selector_reason": mask.selector_reason,
        "other_faces_blurred": mask.other_faces_blurred,
        "unblurred_other_faces": len(unblurred_other_faces(tile_rgb, mask, faces)),
        "segment_seconds": mask.segment_seconds,
        "mask_key": key,
    }


def _cache_by_key(previous: pd.DataFrame | None) -> dict[str, list[dict]]:
    if previous is None or previous.empty or "mask_key" not in previous.columns:
        return {}
    cache: dict[str, list[dict]] = {}
    for row in previous.to_dict(orient="records"):
        cache.setdefault(row["mask_key"], []).append(row)
    return cache


def _files_exist(rows: list[dict], data_root: Path) -> bool:
    """Both files of every cached sample are there (else the tile is built again)."""
    return all(
        (data_root / row[column]).is_file()
        for row in rows
        for column in ("image_path", "mask_path")
    )


def sample_file_names(samples: pd.DataFrame | None) -> set[str]:
    if samples is None or samples.empty:
        return set()
    return {Path(p).name for column in ("image_path", "mask_path") for p in samples[column]}
