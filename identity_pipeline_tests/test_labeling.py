"""labels.csv, identities from clusters + labels, and the labeling page (also in a real browser)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from identity_pipeline.clustering import cluster_faces, face_clusters_table
from identity_pipeline.clustering.cluster import arrow_table
from identity_pipeline.labeling import (
    IGNORE,
    IGNORED,
    INHERITED,
    LABELLED,
    UNNAMED,
    LabelError,
    Labels,
    LabelsFileError,
    apply_labels,
    backup_path,
    parse_labels,
    read_labels,
    update_labels,
)
from identity_pipeline.labeling.cli import add_label_command
from identity_pipeline.labeling.state import LabelingBook, NeedsNameError, clusters_table_path
from identity_pipeline.storage import DataLayout, atomic_write_table
from identity_pipeline_tests.conftest import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT

HEADER = "face_id,name\n"


# --- labels.csv -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("face,name\nf1,Anna\n", 1, "expected the header"),
        (HEADER + "f1,Anna\nf2,Ben,extra\n", 3, "expected 2 fields"),
        (HEADER + "f1,Anna\n\n# a note\nf1,Ben\n", 5, "named 'Ben' here but 'Anna' on line 2"),
        (HEADER + "f1,\n", 2, "must not be empty"),
        (HEADER + "f 1,Anna\n", 2, "is not an id"),
        (HEADER + 'f1,Anna\nf2,"Ben\n', 3, "not valid CSV"),
        (HEADER + "f1,Anna\nf2,Be\x07n\n", 3, "control"),
    ],
)
def test_parse_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(LabelsFileError, match=message) as caught:
        parse_labels(text, "labels.csv")
    assert caught.value.line == line
    assert f"labels.csv line {line}:" in str(caught.value)


def test_bad_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(HEADER.encode() + b"f1,Anna\nf2,B\xffn\n")
    with pytest.raises(LabelsFileError, match="line 3: not valid UTF-8"):
        read_labels(path)


def test_parse_accepts_comments_blank_lines_bom_and_any_case_ignore() -> None:
    text = "\ufeff# names for the summer album\nface_id,name\n\nf1, Anna \nf2,IGNORE\nf1,Anna\n"
    labels = parse_labels(text)
    assert labels.names == {"f1": "Anna", "f2": IGNORE}
    assert labels.people == ["Anna"] and labels.ignored == {"f2"}


def test_malformed_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    broken = HEADER + "f1,Anna\nf2,Ben,oops\n"
    path.write_text(broken)
    with pytest.raises(LabelsFileError, match="line 3"):
        update_labels(path, {"f3": "Cleo"})
    assert path.read_text() == broken
    assert not backup_path(path).exists()
    with pytest.raises(LabelError):
        update_labels(path, {"f3": "   "})


def test_updates_keep_other_labels_and_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    update_labels(path, {"f1": "Anna", "f2": "Ben"})
    assert not backup_path(path).exists(), "nothing to back up before the first write"
    first = path.read_text()
    # Someone edits the file by hand between two page actions: the edit is kept.
    path.write_text(first + "f9,Zoe\n")
    labels = update_labels(path, {"f3": "ignore"}, clear=["f2"])
    assert labels.names == {"f1": "Anna", "f9": "Zoe", "f3": IGNORE}
    assert read_labels(path).names == labels.names
    assert backup_path(path).read_text() == first + "f9,Zoe\n"
    assert path.read_text().startswith(HEADER)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_concurrent_updates_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    threads = [
        threading.Thread(target=update_labels, args=(path, {f"f{i}": f"P{i}"})) for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(read_labels(path)) == 20


# --- identities -------------------------------------------------------------------------------


def small_table() -> pd.DataFrame:
    """Cluster 0: a1..a4 (one person), cluster 1: b1..b3, cluster 2: c1 (alone)."""
    rng = np.random.default_rng(0)
    centers = {p: rng.normal(size=16) for p in "abc"}
    rows = []
    for person, count in (("a", 4), ("b", 3), ("c", 1)):
        for index in range(count):
            vector = centers[person] + 0.05 * rng.normal(size=16)
            rows.append(
                {
                    "face_id": f"{person}{index + 1}",
                    "cluster_id": "abc".index(person),
                    "photo_id": f"photo-{person}{index + 1}",
                    "album": "summer" if index % 2 else "winter",
                    "embedding": (vector / np.linalg.norm(vector)).astype(np.float32),
                }
            )
    return pd.DataFrame(rows)


def test_a_cluster_takes_the_name_of_its_labelled_faces() -> None:
    table = small_table()
    result = apply_labels(table, table, Labels({"a1": "Anna"}))
    by_face = result.faces.set_index("face_id")
    assert by_face.loc["a1", "status"] == LABELLED
    assert (by_face.loc[["a2", "a3", "a4"], "status"] == INHERITED).all()
    assert (by_face.loc[["a2", "a3", "a4"], "identity"] == "Anna").all()
    assert (by_face.loc[["b1", "c1"], "status"] == UNNAMED).all()

    anna = result.identities.set_index("name").loc["Anna"]
    assert anna["n_faces"] == 4 and anna["n_labelled"] == 1 and anna["n_inherited"] == 3
    assert anna["face_ids"] == ["a1", "a2", "a3", "a4"]
    assert anna["n_photos"] == 4 and anna["albums"] == ["summer", "winter"]
    assert result.unnamed_clusters["cluster_id"].tolist() == [1, 2], "biggest first"
    assert result.summary["unnamed_clusters"] == 1 and result.summary["unnamed_singletons"] == 1


def test_labels_survive_reclustering_with_new_cluster_ids() -> None:
    table = small_table()
    labels = Labels({"a1": "Anna", "b2": "Ben", "c1": IGNORE})
    before = apply_labels(table, table, labels).faces.set_index("face_id")
    permuted = table.assign(cluster_id=table["cluster_id"].map({0: 7, 1: 0, 2: 3}))
    after = apply_labels(permuted, permuted, labels).faces.set_index("face_id")
    columns = ["identity", "status"]
    pd.testing.assert_frame_equal(before[columns].sort_index(), after[columns].sort_index())
    assert before.loc["b1", "identity"] == "Ben" and before.loc["c1", "status"] == IGNORED


def test_conflicting_names_are_reported_and_the_cluster_split_by_name() -> None:
    table = small_table()
    merged = table.assign(cluster_id=table["cluster_id"].replace({1: 0}))  # a and b in one
    labels = Labels({"a1": "Anna", "b1": "Ben"})
    result = apply_labels(merged, merged, labels)
    by_face = result.faces.set_index("face_id")
    assert (by_face.loc[["a2", "a3", "a4"], "identity"] == "Anna").all()
    assert (by_face.loc[["b2", "b3"], "identity"] == "Ben").all()
    conflict = result.conflicts.iloc[0]
    assert conflict["cluster_id"] == 0 and conflict["names"] == ["Anna", "Ben"]
    assert conflict["split"] == {"Anna": 4, "Ben": 3}
    assert set(by_face.loc[["a1", "b1"], "group"]) == {"0:Anna", "0:Ben"}
    # Without embeddings the unlabelled faces cannot be placed: they stay unnamed, not guessed.
    blind = apply_labels(merged, merged.drop(columns=["embedding"]), labels)
    assert (blind.faces.set_index("face_id").loc[["a2", "b2"], "status"] == UNNAMED).all()


def test_ignore_marker() -> None:
    table = small_table()
    one = apply_labels(table, table, Labels({"a1": IGNORE})).faces.set_index("face_id")
    assert one.loc["a1", "status"] == IGNORED
    assert one.loc["a2", "status"] == UNNAMED, "one ignored face does not hide a person"
    mostly = Labels({"b1": IGNORE, "b2": IGNORE})
    whole = apply_labels(table, table, mostly).faces.set_index("face_id")
    assert whole.loc["b3", "status"] == IGNORED, "a cluster mostly ignored is a stranger"
    named = apply_labels(table, table, Labels({"a1": IGNORE, "a2": "Anna"}))
    assert named.faces.set_index("face_id").loc["a3", "identity"] == "Anna"
    assert "ignore" not in named.identities["name"].tolist()


def test_clusters_named_alike_are_one_identity_and_stale_labels_are_reported() -> None:
    table = small_table()
    labels = Labels({"a1": "Anna", "b1": "Anna", "gone": "Zoe"})
    result = apply_labels(table, table, labels)
    anna = result.identities.set_index("name").loc["Anna"]
    assert anna["n_faces"] == 7 and anna["cluster_ids"] == [0, 1]
    assert result.stale_labels == ["gone"] and result.summary["stale_labels"] == 1


# --- the page's operations (no browser) -------------------------------------------------------


def write_clusters(layout: DataLayout, with_images: bool = True) -> pd.DataFrame:
    """A face_clusters table of three people, with tile images of drawn faces."""
    rng = np.random.default_rng(1)
    colours = {"a": (200, 120, 90), "b": (90, 160, 210), "c": (120, 200, 120)}
    rows = []
    for person, count in (("a", 5), ("b", 3), ("c", 1)):
        center = rng.normal(size=128)
        for index in range(count):
            tile_rel = f"assets/photo_tiles/summer/files/{person}{index}.png"
            if with_images:
                path = layout.root / tile_rel
                path.parent.mkdir(parents=True, exist_ok=True)
                image = Image.new("RGB", (120, 120), (40, 40, 40))
                ImageDraw.Draw(image).ellipse((30, 20, 90, 100), fill=colours[person])
                image.save(path)
            rows.append(
                {
                    "face_id": f"{person}{index:02d}" + "0" * 28,
                    "photo_id": f"photo-{person}{index}",
                    "tile_id": f"tile-{person}{index}",
                    "album": "summer",
                    "tile_path": tile_rel,
                    "tile_x0": 30.0,
                    "tile_y0": 20.0,
                    "tile_x1": 90.0,
                    "tile_y1": 100.0,
                    "quality": 0.9,
                    "face_size": 80.0,
                    "det_score": 0.9,
                    "backend": "offline-yunet-sface",
                    "model_sha256": "0" * 64,
                    "embedding": (center + 0.3 * rng.normal(size=128)).astype(np.float32),
                }
            )
    faces = pd.DataFrame(rows)
    table = face_clusters_table(faces, cluster_faces(faces))
    atomic_write_table(clusters_table_path(layout), arrow_table(table))
    return table


def group_of(book: LabelingBook, face_prefix: str) -> str:
    for key, group in book.state().groups.items():
        if any(f.startswith(face_prefix) for f in group.face_ids):
            return key
    raise AssertionError(face_prefix)


def test_book_names_moves_merges_and_ignores(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data")
    table = write_clusters(layout, with_images=False)
    assert table.groupby("cluster_id").size().sort_values().tolist() == [1, 3, 5]
    book = LabelingBook(clusters_table_path(layout), layout.labels_path)
    a_key, b_key, c_key = (group_of(book, p) for p in "abc")

    book.name_group(a_key, "Anna")
    assert read_labels(layout.labels_path).people == ["Anna"]
    assert len(read_labels(layout.labels_path)) == 5

    c_face = book.state().groups[c_key].face_ids
    with pytest.raises(NeedsNameError):
        book.move_faces(c_face, target_key=b_key)
    book.move_faces(c_face, target_key=b_key, name="Ben")
    labels = read_labels(layout.labels_path)
    assert labels.get(c_face[0]) == "Ben" and len(labels) == 5 + 3 + 1

    book.merge_groups(group_of(book, "b"), group_of(book, "a"))
    labels = read_labels(layout.labels_path)
    assert {labels.get(f) for f in table["face_id"] if f.startswith(("a", "b"))} == {"Anna"}
    assert labels.get(c_face[0]) == "Ben", "the face moved earlier keeps its own label"

    book.ignore_faces(c_face)
    assert read_labels(layout.labels_path).get(c_face[0]) == IGNORE
    book.clear_faces(c_face)
    assert read_labels(layout.labels_path).get(c_face[0]) is None
    with pytest.raises(LabelError, match="unknown face"):
        book.ignore_faces(["nope"])


def test_label_command_binds_localhost_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    parser = argparse.ArgumentParser()
    add_label_command(parser.add_subparsers())
    args = parser.parse_args(["label", "--port", "8123", "--data-dir", str(tmp_path)])
    assert args.handler(args) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    with pytest.raises(SystemExit):
        parser.parse_args(["label", "--host", "0.0.0.0"])


# --- the page in a browser --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(root: Path) -> Iterator[str]:
    """The labeling app on a free port in a thread, for as long as the block runs."""
    import uvicorn

    from identity_pipeline.labeling.server import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the labeling app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[tuple[str, DataLayout]]:
    layout = DataLayout(tmp_path / "data")
    write_clusters(layout)
    with serving(layout.root) as base:
        yield base, layout


def post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_page_api_and_a_malformed_labels_file(page_server: tuple[str, DataLayout]) -> None:
    base, layout = page_server
    with urllib.request.urlopen(base + "/api/state") as response:
        state = json.load(response)
    assert [g["size"] for g in state["groups"]] == [5, 3]
    assert len(state["singletons"]) == 1
    face = state["groups"][0]["faces"][0]["id"]
    with urllib.request.urlopen(f"{base}/crop/{face}.jpg") as response:
        crop = Image.open(response)
        crop.load()
    assert crop.size == (128, 128)
    assert crop.getpixel((64, 64))[0] > 150, "the crop is the drawn face, not the placeholder"

    # A re-materialized table shows on the next request; suspected outliers are flagged.
    table = pd.read_parquet(clusters_table_path(layout))
    table.loc[table["face_id"] == face, "is_outlier"] = True
    atomic_write_table(clusters_table_path(layout), arrow_table(table))
    with urllib.request.urlopen(base + "/api/state") as response:
        flagged = json.load(response)["groups"][0]
    assert flagged["outliers"] == 1
    last = flagged["faces"][-1]
    assert last["id"] == face and last["outlier"], "outliers are listed last, flagged"

    layout.labels_path.write_text(HEADER + "x,Anna\nbroken\n")
    status, reply = post(base + "/api/name", {"group": state["groups"][0]["key"], "name": "Bo"})
    assert status == 409 and "line 3" in str(reply["error"])
    assert layout.labels_path.read_text() == HEADER + "x,Anna\nbroken\n"
    status, reply = post(base + "/api/move", {"faces": [face], "target": "missing"})
    assert status == 409  # the file is still broken: refused before anything else

    # Another web site open in the browser cannot post labels: JSON only (a cross-site form or
    # no-cors fetch cannot send that content type), and only for this machine's host names.
    plain = urllib.request.Request(
        base + "/api/ignore", b'{"faces": []}', {"Content-Type": "text/plain"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(plain)
    assert refused.value.code == 415
    rebound = urllib.request.Request(base + "/api/state", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(rebound)
    assert refused.value.code == 400


playwright_missing = importlib.util.find_spec("playwright") is None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
@pytest.mark.skipif(playwright_missing, reason="needs the playwright Python package")
def test_name_a_cluster_in_the_browser_and_it_persists(
    page_server: tuple[str, DataLayout],
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, layout = page_server
    artifacts = REPO_ROOT / "test-artifacts"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(base + "/")
            groups = page.get_by_test_id("group")
            expect(groups).to_have_count(2)
            biggest = groups.first
            expect(biggest.locator(".face")).to_have_count(5)
            first_face_image = biggest.locator("img").first
            expect(first_face_image).to_have_js_property("complete", True)
            assert first_face_image.evaluate("img => img.naturalWidth") == 128

            biggest.get_by_test_id("name-input").fill("Anna Larsen")
            with page.expect_response(lambda r: r.url.endswith("/api/name") and r.ok):
                biggest.get_by_test_id("name-save").click()
            page.reload()
            expect(page.get_by_test_id("group").first.get_by_test_id("name-input")).to_have_value(
                "Anna Larsen"
            )
            expect(page.locator("#summary")).to_contain_text("1 named people")

            # Move the face that is alone to Anna: select it, pick her name, move.
            page.get_by_test_id("singletons").locator(".face").first.click()
            expect(page.get_by_test_id("selection")).to_have_text("1 selected")
            page.get_by_test_id("move-target").select_option("name:Anna Larsen")
            with page.expect_response(lambda r: r.url.endswith("/api/move") and r.ok):
                page.get_by_test_id("move").click()
            expect(page.get_by_test_id("singletons")).to_have_count(0)
            artifacts.mkdir(exist_ok=True)
            page.screenshot(path=str(artifacts / "labeling_page.png"), full_page=True)
        finally:
            browser.close()

    labels = read_labels(layout.labels_path)
    assert labels.people == ["Anna Larsen"]
    named = sorted(labels.names)
    assert len(named) == 6, "the 5 faces of the named cluster, then the face moved to her"
    assert [face[0] for face in named] == ["a"] * 5 + ["c"]
    assert backup_path(layout.labels_path).is_file(), "the second write kept the first as backup"


def test_cluster_sheets_for_asset_metadata(tmp_path: Path) -> None:
    from identity_pipeline.labeling.crops import TableCropper
    from identity_pipeline.labeling.sheets import cluster_sheets

    layout = DataLayout(tmp_path / "data")
    table = write_clusters(layout)
    table.loc[table.index[0], "is_outlier"] = True
    sheets = cluster_sheets(table, TableCropper(table, layout.root), faces=4, names={0: "Anna"})
    assert [(cluster, title) for cluster, title, _ in sheets] == [
        (0, "cluster 0: 5 faces, Anna"),
        (1, "cluster 1: 3 faces"),
    ]
    first = sheets[0][2]
    assert first.width == 4 * 72, "four cells: three faces and the outlier"
    assert first.getpixel((36, 36))[0] > 150, "a real crop, not the grey placeholder"
