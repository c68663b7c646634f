"""raw_photos logic without Dagster: every odd file gets a reason, good photos are never lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from identity_pipeline.photos import (
    PhotoLimits,
    album_fingerprint,
    album_name_problem,
    discover_albums,
    inspect_album,
    load_photo,
    photos_frame,
    status_counts,
)
from identity_pipeline_tests.bad_inputs import build_bad_input_album


@pytest.fixture
def bad_album(tmp_path: Path) -> tuple[Path, dict]:
    album = tmp_path / "albums" / "bad"
    expected = build_bad_input_album(album, tmp_path / "outside")
    return album, expected


def test_every_bad_input_gets_its_reason_and_good_photos_survive(
    bad_album: tuple[Path, dict],
) -> None:
    album, expected = bad_album
    records = {item.record.path: item.record for item in inspect_album(album)}

    assert set(records) == set(expected), (
        "hidden/system files must be ignored, every other file listed"
    )
    for path, want in expected.items():
        record = records[path]
        assert record.status.startswith(want.status_prefix), (path, record.status)
        if want.mode:
            assert record.mode == want.mode, (path, record.mode)
        if want.size:
            assert (record.width, record.height) == want.size, (path, record.width, record.height)
        if want.frames:
            assert record.frames == want.frames
    ok = [r for r in records.values() if r.ok]
    assert len(ok) == sum(1 for e in expected.values() if e.status_prefix == "ok")
    for record in ok:
        data = (album / record.path).read_bytes()
        assert record.photo_id == hashlib.sha256(data).hexdigest()


def test_symlinks_never_read_outside_the_album(
    bad_album: tuple[Path, dict], tmp_path: Path
) -> None:
    album, _ = bad_album
    secret_id = hashlib.sha256((tmp_path / "outside" / "secret.jpg").read_bytes()).hexdigest()
    records = [item.record for item in inspect_album(album)]
    assert secret_id not in {r.photo_id for r in records}


def test_bomb_is_refused_from_the_header_without_decoding(tmp_path: Path) -> None:
    album = tmp_path / "a"
    build_bad_input_album(album, tmp_path / "outside")
    tight = PhotoLimits(max_pixels=1000)
    records = {item.record.path: item.record for item in inspect_album(album, tight)}
    assert records["good.jpg"].status.startswith("skipped: decompression bomb")
    assert "64x48 = 3072 pixels > limit 1000" in records["good.jpg"].status


def test_frame_has_fixed_columns_and_counts(bad_album: tuple[Path, dict]) -> None:
    album, expected = bad_album
    records = [item.record for item in inspect_album(album)]
    frame = photos_frame(records)
    assert list(frame.columns)[:3] == ["photo_id", "path", "status"]
    assert len(frame) == len(expected)
    counts = status_counts(records)
    assert counts["ok"] == int((frame["status"] == "ok").sum())
    assert counts["skipped: duplicate"] == 2


def test_thumbnails_are_upright_rgb(bad_album: tuple[Path, dict]) -> None:
    album, _ = bad_album
    items = {item.record.path: item for item in inspect_album(album)}
    rotated = items["rotated.jpg"].thumbnail
    assert rotated is not None and rotated.mode == "RGB"
    assert rotated.height > rotated.width  # 60x40 stored, orientation 6 -> portrait
    gray16 = items["gray16.png"].thumbnail
    assert gray16 is not None and max(gray16.getextrema()[0]) > 200  # 16-bit scaled, not clipped


@pytest.mark.parametrize(
    "name",
    [
        "cmyk.jpg",
        "gray16.png",
        "palette_alpha.png",
        "alpha.png",
        "phone.heic",
        "animated.gif",
        "rotated.jpg",
    ],
)
def test_load_photo_gives_8bit_rgb_upright(bad_album: tuple[Path, dict], name: str) -> None:
    album, expected = bad_album
    image = load_photo(album / name)
    assert image.mode == "RGB"
    if expected[name].size:
        assert image.size == expected[name].size


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("family 2024", None),
        ("été-ünïcode", None),
        ("..", "contains '..'"),
        ("a..b", "contains '..'"),
        ("a,b", "forbidden"),
        ("tab\there", "control"),
        (" padded", "whitespace"),
        ("x" * 101, "longer than"),
    ],
)
def test_album_names(name: str, problem: str | None) -> None:
    found = album_name_problem(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_discover_albums_skips_bad_names_and_hidden(tmp_path: Path) -> None:
    for name in ["good", "also good", "bad,name", ".hidden", "line\nbreak"]:
        (tmp_path / name).mkdir()
    (tmp_path / "loose_file.jpg").write_bytes(b"x")
    discovery = discover_albums(tmp_path)
    assert discovery.albums == ["also good", "good"]
    assert set(discovery.rejected) == {"bad,name", "line\nbreak"}


def test_fingerprint_changes_with_files_not_with_ignored_ones(tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    (album / "a.jpg").write_bytes(b"1")
    first = album_fingerprint(album)
    assert album_fingerprint(album) == first
    (album / ".DS_Store").write_bytes(b"junk")
    assert album_fingerprint(album) == first
    (album / "b.jpg").write_bytes(b"2")
    second = album_fingerprint(album)
    assert second != first
    (album / "split_hints.csv").write_text("file,hint\n")
    assert album_fingerprint(album) != second
