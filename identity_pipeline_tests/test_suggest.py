"""Naming suggestions: faces ranked per named person, and "same person?" cluster pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from identity_pipeline.clustering.calibration import Calibration
from identity_pipeline.clustering.suggest import (
    person_centroids,
    rank_faces_for_people,
    same_person_questions,
)

DIM = 64
CALIBRATION = Calibration(
    backend="test",
    source="hand-set for tests",
    merge_cosine=0.4,
    assign_cosine=0.5,
    assign_margin=0.15,
    suggest_cosine=0.3,
)


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def faces_of(people: dict[str, np.ndarray], counts: dict[str, int], seed: int = 0):
    """Faces near each person's direction (cosine ~0.8 to it), one tile per face, one cluster
    per person; returns the table and face_id -> true person."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for cluster, (person, center) in enumerate(people.items()):
        for k in range(counts[person]):
            vector = unit(center + 0.5 * rng.normal(size=DIM) / np.sqrt(DIM))
            face_id = f"{person}{k}"
            rows.append((face_id, cluster, f"tile-{face_id}", vector.astype(np.float32)))
            truth[face_id] = person
    table = pd.DataFrame(rows, columns=["face_id", "cluster_id", "tile_id", "embedding"])
    return table, truth


def people(count: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"p{k}": unit(rng.normal(size=DIM)) for k in range(count)}


def test_faces_are_ranked_under_their_most_similar_person() -> None:
    table, truth = faces_of(people(3), {"p0": 6, "p1": 6, "p2": 6})
    names = {"p00": "Ann", "p01": "Ann", "p10": "Bob"}  # p2 is nobody's yet
    ranked = rank_faces_for_people(table, names, CALIBRATION)
    assert set(ranked["face_id"]).isdisjoint(names)  # named faces are never asked about
    assert ranked["face_id"].is_unique  # one question per face
    for row in ranked.itertuples():
        assert {"Ann": "p0", "Bob": "p1"}[row.name] == truth[row.face_id]
        assert row.margin == pytest.approx(row.similarity - row.runner_up_similarity, abs=1e-6)
    assert not ranked["face_id"].str.startswith("p2").any()  # strangers stay below the bar
    for _, group in ranked.groupby("name"):
        assert group["similarity"].is_monotonic_decreasing
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
    assert ranked["confident"].all()  # clean, well separated faces clear the assign bar
    assert len(rank_faces_for_people(table, names, CALIBRATION, per_person=2)) == 4


def test_rejections_and_shared_tiles_keep_a_face_from_a_person() -> None:
    table, _ = faces_of(people(2), {"p0": 4, "p1": 4})
    names = {"p00": "Ann", "p10": "Bob"}
    # p01 was rejected for Ann: it goes to its next person if it clears the bar, else nowhere.
    ranked = rank_faces_for_people(table, names, CALIBRATION, rejected=[("p01", "Ann")])
    assert not ((ranked["face_id"] == "p01") & (ranked["name"] == "Ann")).any()
    # p02 shares a tile with Ann's named face: one photo cannot show Ann twice.
    table.loc[table["face_id"] == "p02", "tile_id"] = "tile-p00"
    ranked = rank_faces_for_people(table, names, CALIBRATION)
    assert not ((ranked["face_id"] == "p02") & (ranked["name"] == "Ann")).any()
    assert "p03" in set(ranked[ranked["name"] == "Ann"]["face_id"])


def test_one_named_person_has_no_runner_up_and_no_names_give_nothing() -> None:
    table, _ = faces_of(people(2), {"p0": 3, "p1": 3})
    ranked = rank_faces_for_people(table, {"p00": "Ann"}, CALIBRATION)
    assert ranked["runner_up"].isna().all() and set(ranked["name"]) == {"Ann"}
    assert rank_faces_for_people(table, {}, CALIBRATION).empty
    assert rank_faces_for_people(table, {"p00": "ignore"}, CALIBRATION).empty
    assert person_centroids(table, {"p00": "Ann", "p01": "ignore"})[0] == ["Ann"]


def test_same_person_questions_pair_close_clusters_biggest_first() -> None:
    centers = people(3)
    table, _ = faces_of(centers, {"p0": 8, "p1": 3, "p2": 4})
    # p0 is split in two clusters (8 -> 5 + 3), p1 is alone, p2 is split 2 + 2.
    table.loc[table["face_id"].isin(["p05", "p06", "p07"]), "cluster_id"] = 10
    table.loc[table["face_id"].isin(["p22", "p23"]), "cluster_id"] = 12
    questions = same_person_questions(table, {}, CALIBRATION)
    pairs = [tuple(sorted(p)) for p in questions[["cluster_a", "cluster_b"]].to_numpy().tolist()]
    assert pairs == [(0, 10), (2, 12)]  # the biggest pair first, strangers never
    first = questions.iloc[0]
    assert (first["cluster_a"], first["size_a"], first["size_b"]) == (0, 5, 3)

    # A rejection keyed by faces survives renumbering; two named clusters are never asked.
    rejected = [(first["face_b"], first["face_a"])]
    table["cluster_id"] += 100
    again = same_person_questions(table, {}, CALIBRATION, rejected=rejected)
    assert [tuple(sorted(p)) for p in again[["cluster_a", "cluster_b"]].to_numpy().tolist()] == [
        (102, 112)
    ]
    named = {"p20": "Cy", "p22": "Dee"}
    assert same_person_questions(
        table, named, CALIBRATION, rejected=rejected
    ).empty  # Cy and Dee were named apart by a person


def test_same_person_questions_respect_shared_tiles() -> None:
    table, _ = faces_of(people(1), {"p0": 4})
    table.loc[table["face_id"].isin(["p02", "p03"]), "cluster_id"] = 1
    assert len(same_person_questions(table, {}, CALIBRATION)) == 1
    table.loc[table["face_id"] == "p03", "tile_id"] = "tile-p00"
    assert same_person_questions(table, {}, CALIBRATION).empty
