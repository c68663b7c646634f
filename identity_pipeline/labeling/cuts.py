"""What the cuts review page shows and does, without the web.

An album's photos come from its ``photo_tiles`` table (tiles, per-tile or per-photo
``confidence``, and ``review`` when the splitter flags photos) and its ``raw_photos`` table
(upright sizes). The queue is the photos nobody decided yet, least sure first. A decision is
either "these tiles are right" (the photo is recorded in ``accepted_cuts.csv`` by content hash)
or other tiles, written as the photo's line in the album's hints file; the album sensor then
re-runs that album's ``photo_tiles``, which re-cuts that photo only (the others are cached).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageOps

from identity_pipeline.asset_names import PHOTO_TILES, RAW_PHOTOS
from identity_pipeline.collage.boxes import DECIDED_MANUAL, Box, sort_boxes
from identity_pipeline.collage.hints import Hint, apply_hint, hint_for
from identity_pipeline.labeling.accepted_cuts import (
    AcceptedCut,
    AcceptedCutsError,
    accept_cuts,
    accepted_cuts_path,
    read_accepted_cuts,
)
from identity_pipeline.labeling.hint_edits import (
    CutsError,
    HintsFileError,
    check_tiles,
    hint_spec,
    read_hints_file,
    update_hints_file,
)
from identity_pipeline.photos.inspect import to_rgb8
from identity_pipeline.storage import DataLayout

TO_REVIEW = "to_review"  # nobody decided yet
ACCEPTED = "accepted"  # a person said the tiles are right
BY_HAND = "by_hand"  # the hints file decides this photo


@dataclass(frozen=True)
class PhotoCuts:
    """One photo as the page shows it. ``boxes`` are the tiles photo_tiles gives it next (a
    hint's tiles when a hint applies); ``table_boxes`` are the tiles its table holds now."""

    photo_id: str
    path: str
    width: int
    height: int
    boxes: tuple[Box, ...]
    table_boxes: tuple[Box, ...]
    confidence: float | None
    review: bool | None  # None: the table has no review column
    kind: str
    decided_by: str
    status: str
    hint: str | None = None  # where its hint is, "split_hints.csv:4"
    pending: bool = False  # the hints file changed since photo_tiles last cut this photo
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.photo_id,
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "boxes": [box.as_list() for box in self.boxes],
            "confidence": None if self.confidence is None else round(self.confidence, 3),
            "review": self.review,
            "kind": self.kind,
            "decided_by": self.decided_by,
            "status": self.status,
            "hint": self.hint,
            "pending": self.pending,
            "note": self.note,
        }


@dataclass
class AlbumCuts:
    album: str
    photos: list[PhotoCuts]  # the queue first (least sure first), then the decided ones
    hints_file: str | None = None
    problems: list[str] = field(default_factory=list)  # unusable files, named with their line

    def photo(self, photo_id: str) -> PhotoCuts:
        for photo in self.photos:
            if photo.photo_id == photo_id:
                return photo
        raise CutsError(f"no photo {photo_id[:12]} in album {self.album!r} (reload the page)")

    def summary(self) -> dict[str, int]:
        counts = {TO_REVIEW: 0, ACCEPTED: 0, BY_HAND: 0}
        for photo in self.photos:
            counts[photo.status] += 1
        flagged = sum(1 for p in self.photos if p.status == TO_REVIEW and p.review)
        pending = sum(1 for p in self.photos if p.pending)
        return {"photos": len(self.photos), **counts, "flagged": flagged, "pending": pending}

    def to_json(self) -> dict[str, Any]:
        return {
            "album": self.album,
            "hints_file": self.hints_file,
            "problems": self.problems,
            "summary": self.summary(),
            "photos": [photo.to_json() for photo in self.photos],
        }


def tiles_table_path(layout: DataLayout, album: str) -> Path:
    return layout.table_path(PHOTO_TILES, album)


def cut_albums(layout: DataLayout) -> list[str]:
    """Albums with a photo_tiles table and an album folder, by name."""
    base = layout.asset_dir(PHOTO_TILES)
    if not base.is_dir():
        return []
    return sorted(
        path.parent.name
        for path in base.glob("*/table.parquet")
        if layout.album_dir(path.parent.name).is_dir()
    )


def review_order(photo: PhotoCuts) -> tuple[int, int, float, str]:
    """The queue first; in it, flagged photos first, then least sure first (unknown: first)."""
    confidence = -1.0 if photo.confidence is None else photo.confidence
    return (photo.status != TO_REVIEW, not photo.review, confidence, photo.path)


def album_cuts(layout: DataLayout, album: str) -> AlbumCuts:
    """The album's photos, their tiles and where each stands; unusable side files are reported
    in ``problems`` (the tables' tiles are shown as they are)."""
    if album not in cut_albums(layout):
        raise CutsError(f"no album {album!r} with a photo_tiles table yet")
    tiles = pd.read_parquet(tiles_table_path(layout, album))
    sizes = _photo_sizes(layout, album)
    result = AlbumCuts(album, [])
    hints: dict[str, Hint] = {}
    try:
        hints_path, hints = read_hints_file(layout.album_dir(album))
        result.hints_file = hints_path.name if hints_path else None
    except HintsFileError as error:
        result.problems.append(f"{error}. Fix it by hand: the page will not overwrite it.")
    try:
        accepted = read_accepted_cuts(accepted_cuts_path(layout))
    except AcceptedCutsError as error:
        accepted = {}
        result.problems.append(f"{error}. Fix it by hand: the page will not overwrite it.")
    confidence = _per_photo(tiles, "confidence", "min")
    review = _per_photo(tiles, "review", "any")
    # One pass over plain lists: per-group pandas calls cost ~1 ms a photo, too slow at 10^4.
    tiles = tiles.sort_values(["photo_id", "tile_index"])
    grouped: dict[str, tuple[str, str, str, list[Box]]] = {}
    for photo_id, path, kind, decided_by, *box in zip(
        *(tiles[c].tolist() for c in _COLUMNS), strict=True
    ):
        entry = grouped.setdefault(str(photo_id), (str(path), str(kind), str(decided_by), []))
        entry[3].append(Box(*(int(v) for v in box)))
    for photo_id, (path, kind, decided_by, table_boxes) in grouped.items():
        size = sizes.get(photo_id)
        if size is None:
            continue  # gone from raw_photos since; the next photo_tiles run drops it too
        photo = PhotoCuts(
            photo_id=photo_id,
            path=path,
            width=size[0],
            height=size[1],
            boxes=sort_boxes(table_boxes),
            table_boxes=sort_boxes(table_boxes),
            confidence=confidence.get(photo_id),
            review=review.get(photo_id) if review else None,
            kind=kind,
            decided_by=decided_by,
            status=TO_REVIEW,
        )
        result.photos.append(_decided(photo, hints, accepted))
    result.photos.sort(key=review_order)
    return result


_COLUMNS = ("photo_id", "source_path", "layout_kind", "decided_by", "x0", "y0", "x1", "y1")


def _per_photo(tiles: pd.DataFrame, column: str, how: str) -> dict[str, Any]:
    """Photo id -> the lowest ``confidence`` of its rows (one value per tile or per photo), or
    whether any row is flagged for ``review``; empty when the table has no such column."""
    if column not in tiles:
        return {}
    if how == "min":
        values = pd.to_numeric(tiles[column], errors="coerce").groupby(tiles["photo_id"]).min()
        return {str(k): float(v) for k, v in values.items() if not pd.isna(v)}
    flags = tiles[column].fillna(False).astype(bool).groupby(tiles["photo_id"]).any()
    return {str(k): bool(v) for k, v in flags.items()}


def _photo_sizes(layout: DataLayout, album: str) -> dict[str, tuple[int, int]]:
    path = layout.table_path(RAW_PHOTOS, album)
    if not path.exists():
        return {}
    photos = pd.read_parquet(path, columns=["photo_id", "status", "width", "height"])
    usable = photos[photos["status"] == "ok"].drop_duplicates("photo_id")
    return {
        str(photo_id): (int(width), int(height))
        for photo_id, width, height in zip(
            usable["photo_id"].tolist(),
            usable["width"].tolist(),
            usable["height"].tolist(),
            strict=True,
        )
    }


def _decided(
    photo: PhotoCuts, hints: dict[str, Hint], accepted: dict[str, AcceptedCut]
) -> PhotoCuts:
    """Where the photo stands: its hint decides it, or a person accepted its tiles, or neither."""
    hint = hint_for(hints, photo.path) if hints else None
    if hint is not None:
        try:
            boxes = apply_hint(hint, photo.width, photo.height).boxes
        except ValueError as error:
            return replace(photo, status=BY_HAND, hint=hint.source, note=f"unusable hint: {error}")
        pending = photo.decided_by != DECIDED_MANUAL or boxes != photo.table_boxes
        return replace(photo, boxes=boxes, status=BY_HAND, hint=hint.source, pending=pending)
    if photo.decided_by == DECIDED_MANUAL:
        return replace(photo, pending=True)  # its hint was taken away: the splitter re-cuts it
    if photo.photo_id in accepted:
        if accepted[photo.photo_id].boxes == photo.table_boxes:
            return replace(photo, status=ACCEPTED)
        return replace(photo, note="its tiles changed since they were accepted")
    return photo


# --- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What a save did: ``accepted`` (recorded, nothing re-runs), ``hint`` (the hints file got
    ``spec`` for the photo: photo_tiles re-runs), or ``unchanged``."""

    action: str
    photo: PhotoCuts
    spec: str | None = None
    file: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "spec": self.spec,
            "file": self.file,
            "path": self.photo.path,
        }


def save_cuts(
    layout: DataLayout, album: str, photo_id: str, boxes: Sequence[Sequence[int]]
) -> Decision:
    """The person says the photo's tiles are ``boxes`` (pixels of the upright photo)."""
    photo = album_cuts(layout, album).photo(photo_id)
    # Unreadable hints may hold this photo's line: neither accept nor write until they are fixed.
    read_hints_file(layout.album_dir(album))
    try:
        wanted = sort_boxes(Box(*(int(v) for v in box)) for box in boxes)
    except (TypeError, ValueError) as error:
        raise CutsError(
            f"tiles must be [x0, y0, x1, y1] lists of whole numbers ({error})"
        ) from None
    check_tiles(wanted, photo.width, photo.height)
    if wanted == photo.boxes:
        if photo.status == BY_HAND:
            return Decision("unchanged", photo)
        record = AcceptedCut(photo.photo_id, album, photo.path, photo.boxes)
        accept_cuts(accepted_cuts_path(layout), [record])
        return Decision("accepted", photo)
    spec = hint_spec(wanted, photo.width, photo.height)
    path = update_hints_file(layout.album_dir(album), {photo.path: spec})
    return Decision("hint", photo, spec, path.name)


def back_to_splitter(layout: DataLayout, album: str, photo_id: str) -> Decision:
    """Take the photo's line out of the hints file: the splitter decides it again."""
    photo = album_cuts(layout, album).photo(photo_id)
    if photo.hint is None:
        return Decision("unchanged", photo)
    path = update_hints_file(layout.album_dir(album), {photo.path: None})
    return Decision("hint", photo, None, path.name)


# --- the photo itself ---------------------------------------------------------------------------


def photo_jpeg(layout: DataLayout, album: str, photo_id: str, side: int) -> bytes:
    """The upright photo shrunk to fit ``side`` pixels, as JPEG (what the page draws on)."""
    if album not in cut_albums(layout):
        raise CutsError(f"no album {album!r} with a photo_tiles table yet")
    tiles = pd.read_parquet(tiles_table_path(layout, album), columns=["photo_id", "source_path"])
    paths = tiles.loc[tiles["photo_id"] == photo_id, "source_path"]
    if paths.empty:
        raise CutsError(f"no photo {photo_id[:12]} in album {album!r}")
    with Image.open(layout.album_dir(album) / str(paths.iloc[0])) as image:
        image.draft("RGB", (side, side))  # JPEGs decode straight at a fraction of their size
        upright = to_rgb8(ImageOps.exif_transpose(image))
    upright.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    upright.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()
