"""photo_tiles for one album: split every usable photo, write each tile once, reuse past work.

A photo's tiles depend only on its bytes, the splitter's settings and its manual hint, so the
previous table is a cache: a photo whose ``split_key`` matches keeps its rows without being
decoded again, and tile files are content-addressed (``<tile_id>.jpg``) so none is rewritten.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from identity_pipeline.collage.boxes import Box, SplitResult
from identity_pipeline.collage.draw import draw_cuts
from identity_pipeline.collage.hints import Hint, apply_hint, hint_for
from identity_pipeline.collage.lines import WEIGHTS_FILE as LINE_WEIGHTS_FILE
from identity_pipeline.collage.split import (
    DEFAULT_SETTINGS,
    WEIGHTS_FILE,
    SplitSettings,
    split_image,
)
from identity_pipeline.photos import load_photo
from identity_pipeline.storage import content_id, write_file_once

# Bump when the splitter's behaviour changes, so cached splits are recomputed (its weights files
# are part of the key too).
SPLITTER_VERSION = "24"
TILE_JPEG_QUALITY = 95
PREVIEW_SIZE = 256

TILE_DTYPES: dict[str, str] = {
    "tile_id": "string",
    "photo_id": "string",
    "source_path": "string",
    "tile_index": "Int64",
    "x0": "Int64",
    "y0": "Int64",
    "x1": "Int64",
    "y1": "Int64",
    "width": "Int64",
    "height": "Int64",
    "layout_kind": "string",
    "decided_by": "string",
    "confidence": "Float64",  # per photo (repeated on its tiles): P(its cut set is exactly right)
    "review": "boolean",  # per photo: confidence under the splitter's review bar
    "tile_path": "string",
    "split_key": "string",
}


@dataclass(frozen=True)
class TilingConfig:
    """The ``collage`` settings: the splitter's thresholds and how photo_tiles uses it."""

    split: SplitSettings = field(default_factory=SplitSettings)
    # Find the faces of each photo first, so that no seam is cut through a face.
    use_face_evidence: bool = True
    # Collages shown with their cut lines in the asset's contact sheet.
    max_previews: int = 24


@dataclass
class AlbumTiling:
    tiles: pd.DataFrame
    previews: list[tuple[str, Image.Image]] = field(default_factory=list)  # collages, cuts drawn
    failures: dict[str, str] = field(default_factory=dict)  # source path -> reason
    reused_photos: int = 0
    split_photos: int = 0
    seconds_splitting: float = 0.0


FaceFinder = Callable[[np.ndarray], Sequence[Box]]
FACE_EVIDENCE_SIDE = 800  # faces big enough to matter for a cut are found at this size


def face_finder(backend, side: int = FACE_EVIDENCE_SIDE) -> FaceFinder:
    """Face boxes of a photo in its own pixels, from a copy shrunk to ``side`` (any object with
    the face backends' ``detect(image_rgb)``)."""

    def find(pixels: np.ndarray) -> list[Box]:
        scale = min(1.0, side / max(pixels.shape[:2]))
        small = pixels
        if scale < 1:
            small = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        height, width = pixels.shape[:2]
        return [
            Box(*(int(round(v / scale)) for v in face.box)).clipped(width, height)
            for face in backend.detect(small)
        ]

    return find


def face_evidence_key(backend, side: int = FACE_EVIDENCE_SIDE) -> str:
    """Which detector gave the evidence: part of the split cache key."""
    return f"{backend.name}:{backend.model_sha256[:12]}:{side}"


def face_evidence(config: TilingConfig, backend) -> tuple[FaceFinder | None, str]:
    """``tile_album``'s ``find_faces`` and ``face_evidence`` for these settings and backend."""
    if not config.use_face_evidence:
        return None, ""
    return face_finder(backend), face_evidence_key(backend)


def split_key(config: SplitSettings, hint: Hint | None, face_evidence: str = "") -> str:
    """What a photo's tiles depend on besides its bytes (a hint's line number does not count)."""
    what = repr(replace(hint, source="")) if hint else ""
    return content_id(
        SPLITTER_VERSION, _weights_id(), asdict(config), what, face_evidence, length=16
    )


@functools.cache
def _weights_id() -> str:
    digest = hashlib.sha256()
    for path in (WEIGHTS_FILE, LINE_WEIGHTS_FILE):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def tile_id_for(photo_id: str, box: Box) -> str:
    return content_id(photo_id, *box.as_list())


def tile_album(
    album_dir: Path,
    photos: pd.DataFrame,
    files_dir: Path,
    relative_to: Path,
    hints: Mapping[str, Hint],
    previous: pd.DataFrame | None = None,
    config: SplitSettings = DEFAULT_SETTINGS,
    max_previews: int = 24,
    on_photo: Callable[[str, SplitResult], None] | None = None,
    find_faces: FaceFinder | None = None,
    face_evidence: str = "",
) -> AlbumTiling:
    """Tiles of every ``ok`` photo of ``photos`` (the raw_photos table).

    ``find_faces`` (photo pixels -> face boxes) gives the splitter evidence: no seam is cut
    through a face. ``face_evidence`` names that detector for the cache key.
    """
    cached = _cache_by_photo(previous)
    rows: list[dict[str, object]] = []
    result = AlbumTiling(tiles=pd.DataFrame())
    for photo in photos[photos["status"] == "ok"].itertuples(index=False):
        hint = hint_for(hints, photo.path)
        key = split_key(config, hint, face_evidence if find_faces else "")
        reusable = cached.get((photo.photo_id, key))
        if reusable is not None and _files_exist(reusable, relative_to):
            rows.extend(_with_source(reusable, photo.path))
            result.reused_photos += 1
            continue
        try:
            image = load_photo(album_dir / photo.path)
        except Exception as error:  # noqa: BLE001 - a photo that changed or broke since raw_photos
            result.failures[photo.path] = f"cannot decode: {type(error).__name__}: {error}"
            continue
        started = time.perf_counter()
        if hint:
            split = apply_hint(hint, image.width, image.height)
        else:
            pixels = np.asarray(image)
            faces = tuple(find_faces(pixels)) if find_faces else ()
            split = split_image(pixels, config, faces)
        result.seconds_splitting += time.perf_counter() - started
        result.split_photos += 1
        if on_photo:
            on_photo(photo.path, split)
        rows.extend(
            _write_tiles(image, photo.photo_id, photo.path, split, key, files_dir, relative_to)
        )
        if len(split.boxes) > 1 and len(result.previews) < max_previews:
            preview = draw_cuts(image, split)
            preview.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
            result.previews.append((f"{photo.path} ({split.kind})", preview))
    result.tiles = pd.DataFrame(rows, columns=list(TILE_DTYPES)).astype(TILE_DTYPES)
    return result


def _write_tiles(
    image: Image.Image,
    photo_id: str,
    source_path: str,
    split: SplitResult,
    key: str,
    files_dir: Path,
    relative_to: Path,
) -> list[dict[str, object]]:
    rows = []
    for index, box in enumerate(split.boxes):
        tile_id = tile_id_for(photo_id, box)
        path = files_dir / f"{tile_id}.jpg"
        crop = image.crop((box.x0, box.y0, box.x1, box.y1))
        write_file_once(
            path,
            lambda handle, crop=crop: crop.save(
                handle, "JPEG", quality=TILE_JPEG_QUALITY, subsampling=0
            ),
        )
        rows.append(
            {
                "tile_id": tile_id,
                "photo_id": photo_id,
                "source_path": source_path,
                "tile_index": index,
                "x0": box.x0,
                "y0": box.y0,
                "x1": box.x1,
                "y1": box.y1,
                "width": box.width,
                "height": box.height,
                "layout_kind": split.kind,
                "decided_by": split.decided_by,
                "confidence": split.confidence,
                "review": split.review,
                "tile_path": path.relative_to(relative_to).as_posix(),
                "split_key": key,
            }
        )
    return rows


def _cache_by_photo(previous: pd.DataFrame | None) -> dict[tuple[str, str], list[dict]]:
    if previous is None or previous.empty or "split_key" not in previous.columns:
        return {}
    cache: dict[tuple[str, str], list[dict]] = {}
    for row in previous.to_dict(orient="records"):
        cache.setdefault((row["photo_id"], row["split_key"]), []).append(row)
    return cache


def _files_exist(rows: list[dict], relative_to: Path) -> bool:
    return all((relative_to / row["tile_path"]).is_file() for row in rows)


def _with_source(rows: list[dict], source_path: str) -> list[dict]:
    """A renamed photo keeps its tiles (same bytes, same ids) under its new path."""
    return [{**row, "source_path": source_path} for row in rows]


def least_sure_previews(
    tiles: pd.DataFrame, album_dir: Path, count: int = 12
) -> list[tuple[str, Image.Image]]:
    """The ``count`` least sure photos flagged for review, tiles outlined, least sure first."""
    if tiles.empty:
        return []
    photos = tiles[tiles["review"].fillna(False)].groupby("source_path", sort=False)
    order = sorted(photos, key=lambda item: float(item[1]["confidence"].iat[0]))[:count]
    previews = []
    for source_path, group in order:
        try:
            image = load_photo(album_dir / source_path)
        except Exception:  # noqa: BLE001 - gone since the split: nothing to show
            continue
        boxes = tuple(Box(int(r.x0), int(r.y0), int(r.x1), int(r.y1)) for r in group.itertuples())
        first = group.iloc[0]
        preview = draw_cuts(image, SplitResult(boxes, first["layout_kind"], 0.0, "auto"))
        preview.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
        previews.append((f"{source_path} ({float(first['confidence']):.2f})", preview))
    return previews


def tiles_file_names(tiles: pd.DataFrame | None) -> list[str]:
    if tiles is None or tiles.empty:
        return []
    return [Path(path).name for path in tiles["tile_path"]]


def tiles_problems(tiles: pd.DataFrame, photos: pd.DataFrame) -> list[str]:
    """Tiles outside their photo, or overlapping a sibling: what the asset check reports."""
    # Usable photos only, one row per id: byte-identical copies share their photo_id (the copies
    # are "skipped: duplicate of ..." rows), and skipped rows carry no usable size.
    usable = photos[photos["status"] == "ok"].drop_duplicates("photo_id")
    sizes = usable.set_index("photo_id")[["width", "height"]].to_dict(orient="index")
    problems: list[str] = []
    for photo_id, group in tiles.groupby("photo_id"):
        size = sizes.get(photo_id)
        boxes = [Box(int(r.x0), int(r.y0), int(r.x1), int(r.y1)) for r in group.itertuples()]
        for box in boxes:
            if (
                size is None
                or box.x0 < 0
                or box.y0 < 0
                or box.x1 > size["width"]
                or box.y1 > size["height"]
            ):
                problems.append(f"{photo_id[:12]}: tile {box.as_list()} outside the photo {size}")
            if box.area == 0:
                problems.append(f"{photo_id[:12]}: empty tile {box.as_list()}")
        for i, first in enumerate(boxes):
            for second in boxes[i + 1 :]:
                if first.intersection(second) > 0:
                    problems.append(
                        f"{photo_id[:12]}: tiles {first.as_list()} and {second.as_list()} overlap"
                    )
    return problems
