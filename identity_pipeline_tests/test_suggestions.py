"""Naming by suggestions: the ranking, rejections.csv, the page's API, and the big-library state."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from identity_pipeline.clustering import FACE_CLUSTERS_DTYPES
from identity_pipeline.clustering.calibration import album_calibration, published_calibration
from identity_pipeline.clustering.cluster import arrow_table
from identity_pipeline.labeling import LabelsFileError, backup_path, read_labels, update_labels
from identity_pipeline.labeling.rejections import (
    Rejections,
    add_rejections,
    parse_rejections,
    read_rejections,
    rejections_path,
)
from identity_pipeline.labeling.state import LabelingBook, clusters_table_path
from identity_pipeline.labeling.suggestions import (
    rank_groups_for_people,
    suggest,
    unit_rows,
)
from identity_pipeline.storage import DataLayout, atomic_write_table
from identity_pipeline_tests.test_labeling import post, serving

BACKEND = "offline-yunet-sface"
HEADER = "face_id,not_person,not_same_as\n"

# (cluster id, person, faces, cosine to the person's direction). Anna is split over clusters 0
# and 3 with a stray face of hers alone (5); Carl is a stranger alone; Dora is split in two.
LIBRARY = [
    (0, "anna", 4, 0.85),
    (1, "ben", 3, 0.85),
    (3, "anna", 2, 0.75),
    (5, "anna", 1, 0.55),
    (4, "carl", 1, 0.9),
    (6, "dora", 2, 0.85),
    (7, "dora", 2, 0.8),
]
COLOURS = {
    "anna": (200, 120, 90),
    "ben": (90, 160, 210),
    "carl": (150, 150, 60),
    "dora": (170, 90, 170),
}


def face_id(cluster: int, index: int) -> str:
    return f"c{cluster}f{index}" + "0" * 28


def library_table(root: Path, library=LIBRARY, seed: int = 3) -> pd.DataFrame:
    """A face_clusters table with chosen clusters and embeddings, and drawn tile images."""
    rng = np.random.default_rng(seed)
    directions = dict(zip(COLOURS, unit_rows(rng.normal(size=(len(COLOURS), 128))), strict=True))
    rows = []
    for cluster, person, count, cosine in library:
        for index in range(count):
            noise = rng.normal(size=128)
            noise -= noise @ directions[person] * directions[person]
            noise /= np.linalg.norm(noise)
            vector = cosine * directions[person] + np.sqrt(1 - cosine**2) * noise
            tile = f"assets/photo_tiles/album/files/{cluster}-{index}.png"
            image = Image.new("RGB", (120, 120), (40, 40, 40))
            ImageDraw.Draw(image).ellipse((30, 20, 90, 100), fill=COLOURS[person])
            (root / tile).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / tile)
            rows.append(
                {
                    "face_id": face_id(cluster, index),
                    "cluster_id": cluster,
                    "round": 1,
                    "good_quality": True,
                    "cosine_to_centroid": cosine,
                    "is_outlier": False,
                    "is_representative": index == 0,
                    "cluster_size": count,
                    "album": "album",
                    "photo_id": f"photo-{cluster}-{index}",
                    "tile_id": f"tile-{cluster}-{index}",
                    "tile_path": tile,
                    "source_path": None,
                    "tile_x0": 30.0,
                    "tile_y0": 20.0,
                    "tile_x1": 90.0,
                    "tile_y1": 100.0,
                    "quality": 0.9,
                    "face_size": 80.0,
                    "det_score": 0.9,
                    "backend": BACKEND,
                    "embedding": vector.astype(np.float32),
                }
            )
    table = pd.DataFrame(rows)
    for column in FACE_CLUSTERS_DTYPES:  # columns this test does not care about: null
        if column not in table:
            table[column] = None
    return table[list(FACE_CLUSTERS_DTYPES)].astype(FACE_CLUSTERS_DTYPES)


def write_library(layout: DataLayout, **options) -> LabelingBook:
    table = library_table(layout.root, **options)
    atomic_write_table(clusters_table_path(layout), arrow_table(table))
    return LabelingBook(clusters_table_path(layout), layout.labels_path)


def name_cluster(layout: DataLayout, cluster: int, count: int, name: str) -> None:
    update_labels(layout.labels_path, {face_id(cluster, i): name for i in range(count)})


# --- rejections.csv ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("face_id,name\n", 1, "expected the header"),
        (HEADER + "f1,Anna\n", 2, "a person's name or another face id"),
        (HEADER + "f1,Anna,f2\n", 2, "a person's name or another face id"),
        (HEADER + "f1,,\n", 2, "a person's name or another face id"),
        (HEADER + "f 1,Anna,\n", 2, "is not an id"),
        (HEADER + "# note\nf1,,f 2\n", 3, "is not an id"),
    ],
)
def test_rejections_parse_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(LabelsFileError, match=message) as error:
        parse_rejections(text)
    assert error.value.line == line


def test_rejections_are_kept_added_with_a_backup_and_never_overwrite_a_broken_file(
    tmp_path: Path,
) -> None:
    path = rejections_path(tmp_path / "labels.csv")
    assert path == tmp_path / "rejections.csv"
    assert read_rejections(path) == Rejections()
    add_rejections(path, not_person=[("f1", "Anna"), ("f2", "Anna")])
    assert not backup_path(path).exists()
    first = path.read_text()
    updated = add_rejections(path, not_person=[("f1", "Ben")], not_same=[("f9", "f3")])
    assert backup_path(path).read_text() == first
    assert updated.is_not("f1", "Anna") and updated.is_not("f1", "Ben")
    assert not updated.is_not("f2", "Ben")
    assert updated.not_same == {("f3", "f9")}, "pairs are unordered"
    assert read_rejections(path) == updated == parse_rejections(path.read_text())
    assert len(updated) == 4

    path.write_text(HEADER + "f1,Anna,\nbroken\n")
    with pytest.raises(LabelsFileError, match="line 3"):
        add_rejections(path, not_person=[("f5", "Anna")])
    assert path.read_text() == HEADER + "f1,Anna,\nbroken\n"


# --- the ranking ------------------------------------------------------------------------------


def test_rank_groups_best_first_closest_person_only_and_rejections_move_them_on() -> None:
    axes = np.eye(4, dtype=np.float32)
    # Faces 0-1: person 0; 2: person 1; candidates: group 0 (faces 3, 4) near person 0,
    # group 1 (face 5) between both, nearer person 1; group 2 (face 6) near no one.
    vectors = unit_rows(
        np.array(
            [
                axes[0],
                axes[0],
                axes[1],
                axes[0] + 0.2 * axes[2],
                axes[0],
                axes[0] + 1.2 * axes[1],
                axes[3],
            ]
        )
    )
    person_of = np.array([0, 0, 1, -1, -1, -1, -1])
    group_of = np.array([-1, -1, -1, 0, 0, 1, 2])
    matches, cosine = rank_groups_for_people(vectors, person_of, group_of, None, 0.3)
    assert [(m.group, m.person) for m in matches] == [(0, 0), (1, 1)]
    assert matches[0].similarity == pytest.approx(cosine[[3, 4], 0].mean())
    assert matches[1].runner_up == 0 and matches[1].runner_up_similarity < matches[1].similarity

    rejected = np.zeros((7, 2), dtype=bool)
    rejected[5, 1] = True  # "face 5 is not person 1": it is offered to person 0 next
    rejected[3, 0] = True  # one face of group 0 rejected: the group is judged by the other
    matches, _ = rank_groups_for_people(vectors, person_of, group_of, rejected, 0.3)
    assert [(m.group, m.person) for m in matches] == [(0, 0), (1, 0)]
    assert matches[0].similarity == pytest.approx(1.0)
    assert rank_groups_for_people(vectors, person_of, group_of, None, 0.99)[0][0].group == 0


def test_suggest_bar_sits_below_the_assign_bar_and_the_album_calibrates_itself() -> None:
    shipped = published_calibration(BACKEND)
    assert shipped.suggest_cosine < shipped.assign_cosine
    rng = np.random.default_rng(0)
    # Few named people: the shipped calibration. Enough (10+): the album's own, on a sample.
    directions = unit_rows(rng.normal(size=(12, 64)))
    vectors = unit_rows(np.repeat(directions, 30, axis=0) + 0.12 * rng.normal(size=(360, 64)))
    names = [f"p{i // 30}" for i in range(360)]
    few = album_calibration(vectors[:90], names[:90], BACKEND)
    assert few == shipped
    own = album_calibration(
        vectors, [*names[:-1], None], BACKEND, faces_per_person=10, max_faces=100
    )
    assert own.source.startswith("fitted: 96 faces of 12 people"), "8 of each: all in the sample"
    assert own.suggest_cosine < own.assign_cosine


def test_suggestions_for_a_library(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data")
    book = write_library(layout)
    nothing_named = suggest(book.state(), Rejections())
    assert nothing_named.for_people == {}
    # Anna's two clusters (6 faces), then Dora's (4); her stray face is for "Is this Anna?".
    assert [sorted(q.cluster_ids) for q in nothing_named.same_person] == [[0, 3], [6, 7]]

    name_cluster(layout, 0, 4, "Anna")
    name_cluster(layout, 1, 3, "Ben")
    found = suggest(book.state(), Rejections())
    anna = found.for_people["Anna"]
    assert [item.cluster_id for item in anna] == [3, 5], "her split cluster, then her stray face"
    assert anna[0].similarity > anna[1].similarity
    assert "Ben" not in found.for_people, "nothing looks like Ben"
    assert all(4 not in (i.cluster_id for i in items) for items in found.for_people.values())
    assert len(found.examples["Anna"]) == 4
    assert [sorted(q.cluster_ids) for q in found.same_person] == [[6, 7]]

    # "No" to Anna's stray face, and to Dora's pair: never asked again.
    rejections = add_rejections(
        rejections_path(layout.labels_path),
        not_person=[(face_id(5, 0), "Anna")],
        not_same=[(face_id(6, 1), face_id(7, 0))],
    )
    again = suggest(book.state(), rejections)
    assert [item.cluster_id for item in again.for_people["Anna"]] == [3]
    assert again.same_person == []
    # "Yes" to her split cluster: a label on its faces; it is no longer suggested.
    update_labels(layout.labels_path, dict.fromkeys(anna[0].face_ids, "Anna"))
    assert "Anna" not in suggest(book.state(), rejections).for_people


def test_no_suggestions_without_embeddings_or_thresholds(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data")
    book = write_library(layout)
    name_cluster(layout, 0, 4, "Anna")
    state = book.state()
    state.table["backend"] = "some-new-backend"
    assert "no calibration for face backend 'some-new-backend'" in suggest(state, Rejections()).note
    state.table["embedding"] = None
    assert suggest(state, Rejections()).note


# --- the page's API ---------------------------------------------------------------------------


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url) as response:
        return json.load(response)


def test_answers_through_the_api(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data")
    write_library(layout)
    name_cluster(layout, 0, 4, "Anna")
    with serving(layout.root) as base:
        listing = get_json(base + "/api/suggestions")
        [anna] = listing["people"]
        assert anna["name"] == "Anna" and anna["total"] == 2 and len(anna["examples"]) == 4
        split, stray = anna["items"]
        assert listing["calibration"]["source"].startswith("published")
        assert listing["same_person"]["total"] == 1

        status, reply = post(
            base + "/api/suggestions/answer",
            {"name": "Anna", "yes": split["faces"], "no": stray["faces"]},
        )
        assert status == 200 and reply["labels"] == 4 + 2 and reply["rejections"] == 1
        assert get_json(base + "/api/suggestions")["people"] == []

        pair = listing["same_person"]["items"][0]
        status, _ = post(base + "/api/suggestions/answer", {"not_same": pair["pair"]})
        assert status == 200
        assert get_json(base + "/api/suggestions")["same_person"]["total"] == 0

        for body, code in [
            ({"name": "Anna", "yes": ["nope"]}, 400),
            ({"name": "Anna"}, 400),
            ({"yes": split["faces"]}, 400),
            ({"name": "Anna", "yes": split["faces"], "no": split["faces"]}, 400),
            ({"not_same": [pair["pair"][0]]}, 400),
        ]:
            assert post(base + "/api/suggestions/answer", body)[0] == code, body
        rejections_path(layout.labels_path).write_text("garbage\n")
        status, reply = post(base + "/api/suggestions/answer", {"not_same": pair["pair"]})
        assert status == 409 and "line 1" in reply["error"]

    labels = read_labels(layout.labels_path)
    assert {labels.get(f) for f in split["faces"]} == {"Anna"}
    assert labels.get(stray["faces"][0]) is None
