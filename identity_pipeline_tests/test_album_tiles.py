"""photo_tiles for an album: tiles written once, earlier splits reused, hints and face evidence."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from skimage import data

from identity_pipeline.collage.album_tiles import least_sure_previews, tile_album, tiles_problems
from identity_pipeline.collage.boxes import Box
from identity_pipeline.collage.hints import parse_hints
from identity_pipeline.collage.synthetic import compose_collage, grid_layout
from identity_pipeline.photos import inspect_album, photos_frame


@pytest.fixture
def album(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path / "albums" / "a"
    folder.mkdir(parents=True)
    photos = [
        Image.fromarray(data.astronaut()),
        Image.fromarray(data.chelsea()),
        Image.fromarray(data.coffee()),
    ]
    grid = compose_collage(photos, grid_layout(1, 3), (900, 300), gutter=12, margin=12, seed=3)
    grid.image.save(folder / "grid.jpg", quality=92)
    photos[0].save(folder / "astronaut.png")
    frame = photos_frame([item.record for item in inspect_album(folder)])
    return folder, frame


def _tile(folder: Path, frame: pd.DataFrame, root: Path, **kwargs):
    return tile_album(
        folder, frame, root / "assets" / "photo_tiles" / "a" / "files", root, **kwargs
    )


def test_tiles_written_then_reused_without_decoding(album, tmp_path: Path) -> None:
    folder, frame = album
    first = _tile(folder, frame, tmp_path, hints={})
    tiles = first.tiles
    assert tiles.groupby("source_path").size().to_dict() == {"astronaut.png": 1, "grid.jpg": 3}
    assert all((tmp_path / p).is_file() for p in tiles["tile_path"])
    assert tiles_problems(tiles, frame) == []
    second = _tile(folder, frame, tmp_path, hints={}, previous=tiles)
    assert (second.reused_photos, second.split_photos) == (2, 0)
    pd.testing.assert_frame_equal(first.tiles, second.tiles)


def test_hint_overrides_and_changes_the_key(album, tmp_path: Path) -> None:
    folder, frame = album
    (folder / "split_hints.csv").write_text("file,hint\ngrid.jpg,single\n")
    hinted = _tile(folder, frame, tmp_path, hints=parse_hints(folder / "split_hints.csv")).tiles
    grid = hinted[hinted["source_path"] == "grid.jpg"]
    assert len(grid) == 1 and grid["decided_by"].iat[0] == "manual"


def test_face_evidence_is_asked_for_and_keyed(album, tmp_path: Path) -> None:
    folder, frame = album
    asked: list[tuple[int, ...]] = []

    def find_faces(pixels):
        asked.append(pixels.shape)
        return [Box(10, 10, 40, 40)]

    plain = _tile(folder, frame, tmp_path, hints={}).tiles
    with_faces = _tile(
        folder,
        frame,
        tmp_path,
        hints={},
        previous=plain,
        find_faces=find_faces,
        face_evidence="fake",
    ).tiles
    assert len(asked) == 2  # the cached splits were made without faces: both photos re-split
    assert set(with_faces["split_key"]).isdisjoint(set(plain["split_key"]))


def test_problems_name_overlaps_and_tiles_outside() -> None:
    photos = pd.DataFrame({"photo_id": ["p"], "status": ["ok"], "width": [100], "height": [100]})
    tiles = pd.DataFrame(
        {"photo_id": ["p", "p"], "x0": [0, 40], "y0": [0, 0], "x1": [60, 120], "y1": [100, 100]}
    )
    problems = tiles_problems(tiles, photos)
    assert any("outside" in p for p in problems) and any("overlap" in p for p in problems)


def test_each_photo_carries_its_confidence_and_review_flag(album, tmp_path: Path) -> None:
    folder, frame = album
    tiles = _tile(folder, frame, tmp_path, hints={}).tiles
    per_photo = tiles.groupby("photo_id")[["confidence", "review"]].nunique()
    assert (per_photo == 1).all().all()  # one confidence and one flag per photo, on every tile
    assert tiles["confidence"].between(0, 1).all()
    assert str(tiles["review"].dtype) == "boolean"


def test_least_sure_previews_show_flagged_photos_least_sure_first(album, tmp_path: Path) -> None:
    folder, frame = album
    tiles = _tile(folder, frame, tmp_path, hints={}).tiles.copy()
    assert least_sure_previews(tiles.assign(review=False), folder) == []
    tiles["review"] = True
    tiles["confidence"] = tiles["source_path"].map({"grid.jpg": 0.2, "astronaut.png": 0.6})
    previews = least_sure_previews(tiles, folder)
    assert [caption for caption, _ in previews] == ["grid.jpg (0.20)", "astronaut.png (0.60)"]
    assert all(max(image.size) <= 256 for _, image in previews)
