"""Reviewing cuts without a browser: a decision as a hint line, merged into the album's hints file
(CSV or YAML), accepted photos by content hash, the review queue, the page's API, the sensor."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from identity_pipeline.collage.boxes import Box
from identity_pipeline.collage.hints import Hint, apply_hint, parse_hints, parse_hints_text
from identity_pipeline.labeling.accepted_cuts import (
    AcceptedCut,
    AcceptedCutsError,
    accept_cuts,
    accepted_cuts_path,
    parse_accepted_cuts,
    read_accepted_cuts,
)
from identity_pipeline.labeling.cuts import (
    ACCEPTED,
    BY_HAND,
    TO_REVIEW,
    album_cuts,
    back_to_splitter,
    save_cuts,
)
from identity_pipeline.labeling.hint_edits import (
    CutsError,
    HintsFileError,
    backup_path,
    edit_hints_text,
    hint_spec,
    update_hints_file,
)
from identity_pipeline.photos import list_album
from identity_pipeline.storage import DataLayout, atomic_write_table
from identity_pipeline_tests.test_cuts_review_browser import sensor_tick
from identity_pipeline_tests.test_labeling import serving

CSV = Path("split_hints.csv")
YAML = Path("split_hints.yaml")


def boxes(*values: tuple[int, int, int, int]) -> list[Box]:
    return [Box(*v) for v in values]


# --- a decision -> the shortest hint ------------------------------------------------------------

SPEC_CASES = [
    ("whole photo", (300, 200), boxes((0, 0, 300, 200)), "single"),
    (
        "equal grid",
        (300, 200),
        boxes(*[(x, y, x + 100, y + 100) for y in (0, 100) for x in (0, 100, 200)]),
        "rows=2 cols=3",
    ),
    (
        "one row",
        (300, 100),
        boxes((0, 0, 100, 100), (100, 0, 200, 100), (200, 0, 300, 100)),
        "rows=1 cols=3",
    ),
    (
        "grid with gutter and margin",
        (230, 230),
        list(apply_hint(Hint("x", "grid", rows=2, cols=2, gutter=10, margin=20), 230, 230).boxes),
        "rows=2 cols=2 gutter=10 margin=20",
    ),
    (
        "one photo over two",
        (900, 700),
        boxes((0, 0, 900, 304), (0, 304, 450, 700), (450, 304, 900, 700)),
        "0 0 900 304; 0 304 450 700; 450 304 900 700",
    ),
    ("a framed photo, frame trimmed", (100, 100), boxes((10, 10, 90, 90)), "10 10 90 90"),
    (
        "unequal columns",
        (300, 100),
        boxes((0, 0, 120, 100), (120, 0, 300, 100)),
        "0 0 120 100; 120 0 300 100",
    ),
    (
        "a grid whose cells are not equal is boxes",
        (300, 200),
        boxes((0, 0, 150, 90), (150, 0, 300, 90), (0, 90, 150, 200), (150, 90, 300, 200)),
        "0 0 150 90; 150 0 300 90; 0 90 150 200; 150 90 300 200",
    ),
]


@pytest.mark.parametrize(
    ("case", "size", "tiles", "spec"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES]
)
def test_hint_spec_is_the_shortest_hint_giving_exactly_those_tiles(case, size, tiles, spec) -> None:
    assert hint_spec(list(reversed(tiles)), *size) == spec
    hint = parse_hints_text(f"p.jpg,{spec}\n", CSV)["p.jpg"]
    assert apply_hint(hint, *size).boxes == tuple(sorted(tiles, key=lambda b: (b.y0, b.x0)))


@pytest.mark.parametrize(
    ("tiles", "message"),
    [
        ([], "at least one tile"),
        (boxes((0, 0, 120, 100), (100, 0, 200, 100)), "overlap"),
        (boxes((0, 0, 400, 100)), "outside"),
        (boxes((10, 10, 10, 50)), "smaller"),
    ],
)
def test_impossible_tiles_are_refused(tiles, message) -> None:
    with pytest.raises(CutsError, match=message):
        hint_spec(tiles, 300, 100)


# --- merging into the file ----------------------------------------------------------------------

HAND_WRITTEN = """# hints for the summer album
file,hint
a.jpg, single

b.jpg, rows=2 cols=3   
# the scanner's page
sub/c.jpg, 0 0 10 10; 10 0 20 10
"""


def test_csv_edits_change_only_the_photos_line() -> None:
    edited = edit_hints_text(HAND_WRITTEN, CSV, {"b.jpg": "single", "new.jpg": "rows=1 cols=2"})
    lines = edited.splitlines()
    assert lines[:4] == HAND_WRITTEN.splitlines()[:4]
    assert lines[4] == "b.jpg,single"
    assert lines[5:7] == HAND_WRITTEN.splitlines()[5:7]
    assert lines[7] == "new.jpg,rows=1 cols=2"
    removed = edit_hints_text(edited, CSV, {"a.jpg": None, "sub/c.jpg": "single"})
    assert set(parse_hints_text(removed, CSV)) == {"b.jpg", "sub/c.jpg", "new.jpg"}
    assert "# the scanner's page" in removed and "a.jpg" not in removed


def test_csv_edits_keep_crlf_and_quote_awkward_names() -> None:
    text = "file,hint\r\na.jpg,single\r\n"
    edited = edit_hints_text(text, CSV, {"trip, day 1.jpg": "rows=2 cols=1"})
    assert edited == 'file,hint\r\na.jpg,single\r\n"trip, day 1.jpg",rows=2 cols=1\r\n'
    assert parse_hints_text(edited, CSV)["trip, day 1.jpg"].rows == 2


def test_an_edit_that_changes_nothing_leaves_the_text_as_it_is() -> None:
    assert edit_hints_text(HAND_WRITTEN, CSV, {"a.jpg": "single", "gone.jpg": None}) is HAND_WRITTEN


def test_a_hint_by_bare_file_name_is_never_silently_changed() -> None:
    text = "file,hint\nc.jpg,single\n"
    edited = edit_hints_text(text, CSV, {"sub/c.jpg": "rows=2 cols=2"})
    assert edited == text + "sub/c.jpg,rows=2 cols=2\n"  # the exact path wins over the name
    with pytest.raises(CutsError, match="split_hints.csv:2 .*by file name"):
        edit_hints_text(text, CSV, {"sub/c.jpg": None})


YAML_TEXT = """# summer
a.jpg: single   # the big one
b.jpg:
  - [0, 0, 600, 400]
  - [600, 0, 1200, 400]
c.jpg: {rows: 2, cols: 2}

# done
"""


def test_yaml_edits_replace_whole_entries_and_keep_the_comments() -> None:
    edited = edit_hints_text(YAML_TEXT, YAML, {"b.jpg": "single", "d e.jpg": "rows=1 cols=2"})
    assert edited.splitlines() == [
        "# summer",
        "a.jpg: single   # the big one",
        "b.jpg: single",
        "c.jpg: {rows: 2, cols: 2}",
        "d e.jpg: rows=1 cols=2",
        "",
        "# done",
    ]
    hints = parse_hints_text(edited, YAML)
    assert (hints["b.jpg"].mode, hints["d e.jpg"].cols) == ("single", 2)
    removed = edit_hints_text(YAML_TEXT, YAML, {"b.jpg": None})
    assert set(parse_hints_text(removed, YAML)) == {"a.jpg", "c.jpg"}
    with pytest.raises(HintsFileError, match="one per photo"):
        edit_hints_text("{a.jpg: single}\n", YAML, {"b.jpg": "single"})


@pytest.mark.parametrize(
    ("path", "text", "where"),
    [
        (CSV, "file,hint\na.jpg,single\nb.jpg,rows=two\n", "split_hints.csv:3"),
        (CSV, "a.jpg,single\na.jpg,cols=2\n", "split_hints.csv:2"),
        (YAML, "a.jpg: single\nb.jpg: {rows: 2, colz: 3}\n", "split_hints.yaml:2"),
    ],
)
def test_a_malformed_file_is_refused_naming_its_line(path, text, where) -> None:
    with pytest.raises(HintsFileError, match=where.replace(".", r"\.")):
        edit_hints_text(text, path, {"x.jpg": "single"})


def test_the_file_is_created_then_rewritten_atomically_with_a_backup(tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    assert update_hints_file(album, {"a.jpg": None}) == album / "split_hints.csv"
    assert not (album / "split_hints.csv").exists(), "nothing to take away: no file written"
    path = update_hints_file(album, {"a.jpg": "rows=2 cols=1"})
    first = path.read_bytes()
    assert first.decode().startswith("# Split hints") and not backup_path(path).exists()
    assert parse_hints(path)["a.jpg"].rows == 2
    update_hints_file(album, {"b.jpg": "single"})
    assert backup_path(path).read_bytes() == first
    assert set(parse_hints(path)) == {"a.jpg", "b.jpg"}
    assert list_album(album).files == [], "neither the hints nor their backup are photos"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [
        ".album.split_hints.lock"
    ]


def test_a_malformed_file_on_disk_is_never_overwritten(tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    (album / "split_hints.csv").write_text("file,hint\na.jpg,0 0 10\n")
    with pytest.raises(HintsFileError, match=r"split_hints\.csv:2"):
        update_hints_file(album, {"b.jpg": "single"})
    assert (album / "split_hints.csv").read_text() == "file,hint\na.jpg,0 0 10\n"
    assert not backup_path(album / "split_hints.csv").exists()
    (album / "split_hints.csv").write_bytes(b"file,hint\na.jpg,single\n\xff.jpg,single\n")
    with pytest.raises(HintsFileError, match=r"split_hints\.csv:3: not valid UTF-8"):
        update_hints_file(album, {"b.jpg": "single"})
    (album / "split_hints.csv").write_text("a.jpg,single\n")
    (album / "split_hints.yaml").write_text("a.jpg: single\n")
    with pytest.raises(HintsFileError, match="keep one"):
        update_hints_file(album, {"b.jpg": "single"})


# --- accepted photos ----------------------------------------------------------------------------


def test_accepted_cuts_round_trip_keep_others_and_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "accepted_cuts.csv"
    first = AcceptedCut("aa11", "trip", "a.jpg", (Box(0, 0, 10, 10),))
    accept_cuts(path, [first])
    text = path.read_text()
    assert text == "photo_id,album,path,tiles\naa11,trip,a.jpg,0 0 10 10\n"
    second = AcceptedCut("bb22", "trip", "b, c.jpg", (Box(5, 0, 10, 4), Box(0, 0, 5, 4)))
    assert accept_cuts(path, [second]) == {"aa11": first, "bb22": second}
    assert backup_path(path).read_text() == text
    assert read_accepted_cuts(path)["bb22"].boxes == (Box(0, 0, 5, 4), Box(5, 0, 10, 4))


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("photo,tiles\n", 1, "header"),
        ("photo_id,album,path,tiles\n\naa,trip,a.jpg\n", 3, "4 fields"),
        ("photo_id,album,path,tiles\naa,trip,a.jpg,0 0 10\n", 2, "four whole numbers"),
        ("photo_id,album,path,tiles\na a,trip,a.jpg,0 0 1 1\n", 2, "not a photo id"),
        ("photo_id,album,path,tiles\naa,t,a,0 0 1 1\naa,t,a,0 0 2 2\n", 3, "twice"),
    ],
)
def test_a_malformed_accepted_file_names_the_line(text, line, message) -> None:
    with pytest.raises(AcceptedCutsError, match=f"line {line}: .*{message}"):
        parse_accepted_cuts(text)


# --- the queue ----------------------------------------------------------------------------------


def write_album(layout: DataLayout, per_photo: dict[str, list[tuple]], **columns) -> None:
    """A photo_tiles table (tiles per photo: box, confidence) and the raw_photos sizes."""
    album = layout.album_dir("trip")
    album.mkdir(parents=True, exist_ok=True)
    rows, photos = [], []
    for name, tiles in per_photo.items():
        photo_id = f"id-{name.split('.')[0]}"
        Image.new("RGB", (300, 200), (90, 120, 150)).save(album / name)
        photos.append(
            {"photo_id": photo_id, "path": name, "status": "ok", "width": 300, "height": 200}
        )
        for index, (box, confidence) in enumerate(tiles):
            rows.append(
                {
                    "photo_id": photo_id,
                    "source_path": name,
                    "tile_index": index,
                    "x0": box[0],
                    "y0": box[1],
                    "x1": box[2],
                    "y1": box[3],
                    "layout_kind": "single" if len(tiles) == 1 else "grid",
                    "decided_by": "auto",
                    "confidence": confidence,
                    **{k: v[name] for k, v in columns.items()},
                }
            )
    import pyarrow as pa

    atomic_write_table(layout.table_path("photo_tiles", "trip"), pa.Table.from_pylist(rows))
    atomic_write_table(layout.table_path("raw_photos", "trip"), pa.Table.from_pylist(photos))


HALVES = [((0, 0, 150, 200), 0.7), ((150, 0, 300, 200), 0.4)]
WHOLE = [((0, 0, 300, 200), 0.9)]


def test_the_queue_is_least_sure_first_by_the_lowest_tile(layout: DataLayout) -> None:
    write_album(layout, {"a.jpg": WHOLE, "b.jpg": HALVES, "c.jpg": [((0, 0, 300, 200), 0.55)]})
    cuts = album_cuts(layout, "trip")
    assert [(p.path, p.confidence, p.review) for p in cuts.photos] == [
        ("b.jpg", 0.4, None),
        ("c.jpg", 0.55, None),
        ("a.jpg", 0.9, None),
    ]
    assert cuts.summary()["to_review"] == 3


def test_per_photo_confidence_and_the_review_flag_are_read_when_present(layout: DataLayout) -> None:
    write_album(
        layout,
        {"a.jpg": WHOLE, "b.jpg": HALVES, "c.jpg": WHOLE},
        review={"a.jpg": False, "b.jpg": False, "c.jpg": True},
    )
    cuts = album_cuts(layout, "trip")
    assert [(p.path, p.review) for p in cuts.photos] == [
        ("c.jpg", True),  # flagged first, although surer than b
        ("b.jpg", False),
        ("a.jpg", False),
    ]
    assert cuts.summary()["flagged"] == 1


def test_decisions_accept_hint_and_back_to_the_splitter(layout: DataLayout) -> None:
    write_album(layout, {"a.jpg": WHOLE, "b.jpg": HALVES})
    whole = [[0, 0, 300, 200]]
    accepted = save_cuts(layout, "trip", "id-a", whole)
    assert accepted.action == "accepted"
    assert read_accepted_cuts(accepted_cuts_path(layout))["id-a"].boxes == (Box(0, 0, 300, 200),)
    assert not (layout.album_dir("trip") / "split_hints.csv").exists(), "accepting writes no hint"

    fixed = save_cuts(layout, "trip", "id-b", whole)
    assert (fixed.action, fixed.spec, fixed.file) == ("hint", "single", "split_hints.csv")
    cuts = {p.path: p for p in album_cuts(layout, "trip").photos}
    assert (cuts["a.jpg"].status, cuts["b.jpg"].status) == (ACCEPTED, BY_HAND)
    assert cuts["b.jpg"].pending and cuts["b.jpg"].boxes == (Box(0, 0, 300, 200),)
    assert cuts["b.jpg"].hint == "split_hints.csv:4"
    assert save_cuts(layout, "trip", "id-b", whole).action == "unchanged"

    assert back_to_splitter(layout, "trip", "id-b").action == "hint"
    assert parse_hints(layout.album_dir("trip") / "split_hints.csv") == {}
    assert album_cuts(layout, "trip").photo("id-b").status == TO_REVIEW

    # The splitter changed its mind about an accepted photo: it is asked about again.
    write_album(layout, {"a.jpg": HALVES, "b.jpg": HALVES})
    again = album_cuts(layout, "trip").photo("id-a")
    assert again.status == TO_REVIEW and "changed since" in again.note
    with pytest.raises(CutsError, match="overlap"):
        save_cuts(layout, "trip", "id-a", [[0, 0, 200, 200], [100, 0, 300, 200]])
    with pytest.raises(CutsError, match="no photo"):
        save_cuts(layout, "trip", "id-zzz", whole)


# --- the page's API -----------------------------------------------------------------------------


def post(url: str, body: object, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_api_saves_refuses_bad_input_and_never_overwrites_a_broken_file(layout: DataLayout) -> None:
    write_album(layout, {"a.jpg": WHOLE, "b.jpg": HALVES})
    hints = layout.album_dir("trip") / "split_hints.csv"
    with serving(layout.root) as base:
        with urllib.request.urlopen(base + "/api/cuts") as response:
            state = json.load(response)
        assert state["albums"] == ["trip"] and [p["path"] for p in state["photos"]] == [
            "b.jpg",
            "a.jpg",
        ]
        with urllib.request.urlopen(f"{base}/cuts/photo/trip/id-b.jpg?side=160") as response:
            assert Image.open(response).size == (160, 107)

        save = base + "/api/cuts/save"
        status, reply = post(save, {"album": "trip", "photo": "id-b", "boxes": [[0, 0, 300, 200]]})
        assert (status, reply["action"], reply["spec"]) == (200, "hint", "single")
        assert post(save, {"album": "trip", "photo": "id-b", "boxes": "all"})[0] == 400
        assert post(save, {"album": "../x", "photo": "id-b", "boxes": [[0, 0, 1, 1]]})[0] == 400
        assert post(save, {"album": "trip"}, content_type="text/plain")[0] == 415

        hints.write_text("file,hint\nb.jpg,single\nc.jpg,rows=two\n")
        status, reply = post(
            save,
            {"album": "trip", "photo": "id-b", "boxes": [[0, 0, 150, 200], [150, 0, 300, 200]]},
        )
        assert status == 409 and "split_hints.csv:3" in reply["error"]
        assert hints.read_text() == "file,hint\nb.jpg,single\nc.jpg,rows=two\n"
        with urllib.request.urlopen(base + "/api/cuts") as response:
            assert "split_hints.csv:3" in json.load(response)["problems"][0]


# --- the sensor ---------------------------------------------------------------------------------


def test_a_hints_change_re_runs_photo_tiles_alone(
    layout: DataLayout, instance: dg.DagsterInstance
) -> None:
    album = layout.album_dir("trip")
    album.mkdir()
    (album / "a.jpg").write_bytes(b"a photo, as far as the sensor's stat goes")
    first = sensor_tick(instance, None)
    assert [r.asset_selection for r in first.run_requests] == [[dg.AssetKey("raw_photos")]]

    update_hints_file(album, {"a.jpg": "single"})
    hinted = sensor_tick(instance, first.cursor)
    assert [(r.partition_key, r.asset_selection) for r in hinted.run_requests] == [
        ("trip", [dg.AssetKey("photo_tiles")])
    ]
    update_hints_file(album, {"a.jpg": "rows=2 cols=1"})  # writes split_hints.csv.bak too
    again = sensor_tick(instance, hinted.cursor)
    assert [r.asset_selection for r in again.run_requests] == [[dg.AssetKey("photo_tiles")]]
    assert not sensor_tick(instance, again.cursor).run_requests

    (album / "b.jpg").write_bytes(b"another photo")
    update_hints_file(album, {"b.jpg": "single"})
    both = sensor_tick(instance, again.cursor)
    assert [r.asset_selection for r in both.run_requests] == [[dg.AssetKey("raw_photos")]]

    # A cursor written before photos and hints were told apart: one full re-run, as before.
    old = json.dumps({"trip": "0123456789abcdef"})
    assert [r.asset_selection for r in sensor_tick(instance, old).run_requests] == [
        [dg.AssetKey("raw_photos")]
    ]
    assert os.path.exists(backup_path(album / "split_hints.csv"))
