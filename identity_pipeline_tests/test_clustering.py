"""Face clustering on synthetic embeddings on the unit sphere, where the truth is known.

Shapes are SFace-like (the offline backend's thresholds are used): one person's faces have
pairwise cosine ~0.65, strangers ~0 +- 0.1 in 128 dimensions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from identity_pipeline.clustering import (
    ALONE,
    ATTACHED,
    FACE_CLUSTERS_DTYPES,
    ClusterConfig,
    ClusterConfigError,
    bcubed,
    cluster_faces,
    face_clusters_table,
    load_cluster_config,
    pairwise,
    score_clustering,
)
from identity_pipeline.clustering.cli import add_cluster_command
from identity_pipeline.clustering.cluster import arrow_table
from identity_pipeline.clustering.constraints import (
    attach_with_cannot_link,
    split_conflicting_group,
)
from identity_pipeline.clustering.metrics import singletons_for_noise
from identity_pipeline.storage import atomic_write_table

DIM = 128
OFFLINE = "offline-yunet-sface"


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.atleast_2d(vectors)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def direction(rng: np.random.Generator) -> np.ndarray:
    return unit(rng.normal(size=DIM))[0]


def near(center: np.ndarray, count: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around ``center``: pairwise cosine about 1 / (1 + spread**2)."""
    noise = rng.normal(size=(count, DIM)) / np.sqrt(DIM)
    return unit(center + spread * noise)


def blend(a: np.ndarray, b: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector whose cosine with ``a`` is ``cosine``, leaning towards ``b``."""
    other = unit(b - (b @ a) * a)[0]
    return cosine * a + np.sqrt(1 - cosine**2) * other


class Album:
    """Builds a faces table face by face, with the truth beside it."""

    def __init__(self, backend: str = OFFLINE) -> None:
        self.rows: list[dict[str, object]] = []
        self.backend = backend

    def add(
        self,
        person: str,
        vectors: np.ndarray,
        tiles: list[str] | None = None,
        quality: float = 0.8,
        size: float = 120.0,
    ) -> list[str]:
        ids = []
        for index, vector in enumerate(np.atleast_2d(vectors)):
            face_id = f"f{len(self.rows):05d}"
            tile = tiles[index] if tiles else f"t-{face_id}"
            self.rows.append(
                {
                    "face_id": face_id,
                    "photo_id": f"p-{tile}",
                    "tile_id": tile,
                    "quality": quality,
                    "face_size": size,
                    "backend": self.backend,
                    "model_sha256": "0" * 64,
                    "embedding": np.asarray(vector, dtype=np.float32),
                    "person": person,
                    "tile_x0": 0.0,
                    "tile_y0": 0.0,
                    "tile_x1": 10.0,
                    "tile_y1": 10.0,
                }
            )
            ids.append(face_id)
        return ids

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def clusters_by_face(faces: pd.DataFrame, config: ClusterConfig | None = None) -> pd.DataFrame:
    result = cluster_faces(faces.drop(columns=["person"]), config)
    merged = faces[["face_id", "person", "tile_id"]].merge(result.assignments, on="face_id")
    assert len(merged) == len(faces), "every face gets exactly one assignment"
    assert_no_tile_conflict(merged)
    return merged


def assert_no_tile_conflict(assigned: pd.DataFrame) -> None:
    per_cluster_tile = assigned.groupby(["cluster_id", "tile_id"]).size()
    assert per_cluster_tile.max() == 1, per_cluster_tile[per_cluster_tile > 1]


def f1(assigned: pd.DataFrame) -> float:
    return bcubed(assigned["cluster_id"].tolist(), assigned["person"].tolist()).f1


@pytest.fixture
def config() -> ClusterConfig:
    return load_cluster_config(OFFLINE)


# --- clustering behaviour ---------------------------------------------------------------------


def test_separate_people_give_one_cluster_each(config: ClusterConfig) -> None:
    rng = np.random.default_rng(1)
    album = Album()
    for person in range(6):
        album.add(f"p{person}", near(direction(rng), 10, 0.75, rng))
    assigned = clusters_by_face(album.frame(), config)
    assert f1(assigned) == 1.0
    assert assigned["cluster_id"].nunique() == 6
    assert (assigned["cluster_id"] >= 0).all()


def test_twins_in_the_same_photos_are_never_merged(config: ClusterConfig) -> None:
    rng = np.random.default_rng(2)
    twin_a = direction(rng)
    twin_b = blend(twin_a, direction(rng), 0.85)  # closer than most people ever get
    album = Album()
    together = [f"group-{i}" for i in range(6)]
    album.add("a", near(twin_a, 6, 0.5, rng), together)
    album.add("b", near(twin_b, 6, 0.5, rng), together)
    album.add("a", near(twin_a, 5, 0.5, rng))
    album.add("b", near(twin_b, 5, 0.5, rng))
    faces = album.frame()

    assigned = clusters_by_face(faces, config)  # asserts: no cluster holds two faces of a tile
    twins = assigned.groupby("cluster_id")["person"].nunique()
    assert (twins == 1).all(), "every cluster holds one twin only"
    assert pairwise(assigned["cluster_id"].tolist(), assigned["person"].tolist()).recall > 0.8

    # The same vectors, each face alone in its photo: nothing says they are two people, and the
    # two-round clustering merges them. Cannot-link is what kept them apart above.
    alone = faces.assign(tile_id=[f"solo-{i}" for i in range(len(faces))])
    merged = clusters_by_face(alone, config)
    assert merged.groupby("cluster_id")["person"].nunique().max() == 2


def test_person_split_by_pose_is_merged_in_round_two(config: ClusterConfig) -> None:
    rng = np.random.default_rng(3)
    album = Album()
    frontal = direction(rng)
    profile = blend(frontal, direction(rng), 0.62)
    album.add("pose", near(frontal, 8, 0.3, rng))
    album.add("pose", near(profile, 8, 0.3, rng))
    for person in range(3):
        album.add(f"other{person}", near(direction(rng), 8, 0.3, rng))
    faces = album.frame()

    result = cluster_faces(faces.drop(columns=["person"]), config)
    assert result.summary["round_one_clusters_kept"] >= 5, "round 1 saw two pose clusters"
    assigned = faces[["face_id", "person"]].merge(result.assignments, on="face_id")
    pose_clusters = assigned[assigned["person"] == "pose"]["cluster_id"].unique()
    assert len(pose_clusters) == 1
    stats = result.clusters.set_index("cluster_id").loc[pose_clusters[0]]
    assert stats["n_merged"] >= 2, "the cluster was merged from round-1 clusters"
    assert f1(assigned) == 1.0

    # With merging switched off the person stays split: the test above can fail.
    no_merge = ClusterConfig(**{**config.to_dict(), "merge_min_mean_cosine": 1.0})
    split = cluster_faces(faces.drop(columns=["person"]), no_merge).assignments
    split = faces[["face_id", "person"]].merge(split, on="face_id")
    assert split[split["person"] == "pose"]["cluster_id"].nunique() >= 2


def test_blurry_tiny_faces_do_not_bridge_or_pollute_clusters(config: ClusterConfig) -> None:
    rng = np.random.default_rng(4)
    anna, ben = direction(rng), direction(rng)
    album = Album()
    album.add("anna", near(anna, 10, 0.75, rng))
    album.add("ben", near(ben, 10, 0.75, rng))
    # Blurry faces whose vectors sit between the two: the chains single linkage would follow.
    between = unit(unit(anna + ben)[0] + 0.35 * rng.normal(size=(12, DIM)) / np.sqrt(DIM))
    album.add("blurry", between, quality=0.2, size=14.0)
    # One tiny but clear face of Anna: close enough to be attached anyway.
    clear_anna = album.add("anna", near(anna, 1, 0.2, rng), quality=0.3, size=20.0)
    assigned = clusters_by_face(album.frame(), config)

    people = assigned[assigned["person"] != "blurry"]
    assert people.groupby("cluster_id")["person"].nunique().max() == 1
    blurry = assigned[assigned["person"] == "blurry"]
    assert (blurry["round"] == ALONE).all(), "ambiguous low-quality faces join no cluster"
    assert not assigned["cluster_id"].isin(blurry["cluster_id"]).sum() > len(blurry)
    anna_cluster = assigned[(assigned["person"] == "anna") & (assigned["round"] != ALONE)]
    attached = assigned.set_index("face_id").loc[clear_anna[0]]
    assert attached["round"] == ATTACHED
    assert attached["cluster_id"] == anna_cluster["cluster_id"].mode().iloc[0]
    assert not attached["good_quality"]


def test_leftovers_join_only_when_confidently_close(config: ClusterConfig) -> None:
    rng = np.random.default_rng(5)
    anna, ben = direction(rng), direction(rng)
    album = Album()
    album.add("anna", near(anna, 10, 0.4, rng))
    album.add("ben", near(ben, 10, 0.4, rng))
    halfway = album.add("?", unit(anna + ben), quality=0.3)
    far_anna = album.add("anna", blend(anna, direction(rng), 0.6)[None], quality=0.3)
    stranger = album.add("stranger", direction(rng)[None], quality=0.3)
    result = cluster_faces(album.frame().drop(columns=["person"]), config).assignments
    by_face = result.set_index("face_id")

    assert by_face.loc[halfway[0], "round"] == ALONE, "as close to Anna as to Ben: no guess"
    assert by_face.loc[stranger[0], "round"] == ALONE
    assert by_face.loc[far_anna[0], "round"] == ATTACHED
    assert by_face["cluster_id"].is_unique is False
    assert by_face.loc[stranger[0], "cluster_id"] != by_face.loc[halfway[0], "cluster_id"]


def test_a_single_person_album_is_one_cluster(config: ClusterConfig) -> None:
    # HDBSCAN's leaf selection finds no split in one blob; round 2 pairs the leftovers up.
    rng = np.random.default_rng(6)
    album = Album()
    album.add("solo", near(direction(rng), 7, 0.5, rng))
    assigned = clusters_by_face(album.frame(), config)
    assert assigned["cluster_id"].nunique() == 1


def test_cannot_link_holds_on_crowded_group_photos(config: ClusterConfig) -> None:
    rng = np.random.default_rng(7)
    centers = [direction(rng) for _ in range(8)]
    album = Album()
    for photo in range(40):
        people = rng.choice(8, size=int(rng.integers(2, 6)), replace=False)
        for person in people:
            album.add(f"p{person}", near(centers[person], 1, 0.7, rng), [f"g{photo}"])
    # Near-duplicates inside one tile too (a mirror, a poster of the same person).
    album.add("p0", near(centers[0], 3, 0.05, rng), ["mirror"] * 3)
    assigned = clusters_by_face(album.frame(), config)  # asserts the invariant
    assert f1(assigned) > 0.9


def test_stats_outliers_and_representatives(config: ClusterConfig) -> None:
    rng = np.random.default_rng(8)
    album = Album()
    album.add("anna", near(direction(rng), 12, 0.6, rng))
    result = cluster_faces(album.frame().drop(columns=["person"]), config)
    clusters = result.clusters
    assert list(clusters["cluster_id"]) == list(range(len(clusters)))
    row = clusters.iloc[0]
    assert row["size"] == 12 and row["n_photos"] == 12
    assert 0.5 < row["mean_intra_cosine"] < 0.9
    assert len(row["representative_face_ids"]) == config.representatives
    assignments = result.assignments
    assert set(assignments[assignments["is_representative"]]["face_id"]) == set(
        row["representative_face_ids"]
    )

    strict = ClusterConfig(**{**config.to_dict(), "outlier_below_cosine": 0.99})
    flagged = cluster_faces(album.frame().drop(columns=["person"]), strict)
    assert flagged.clusters.iloc[0]["n_outliers"] == 12
    assert flagged.assignments["is_outlier"].all()


def test_same_faces_in_any_order_give_the_same_clusters(config: ClusterConfig) -> None:
    rng = np.random.default_rng(9)
    album = Album()
    for person in range(5):
        album.add(f"p{person}", near(direction(rng), 6, 0.7, rng))
    faces = album.frame().drop(columns=["person"])
    first = cluster_faces(faces, config).assignments.set_index("face_id")["cluster_id"]
    shuffled = faces.sample(frac=1.0, random_state=3)
    second = cluster_faces(shuffled, config).assignments.set_index("face_id")["cluster_id"]
    assert first.sort_index().equals(second.sort_index())


def test_edge_inputs(config: ClusterConfig) -> None:
    empty = Album().frame().reindex(columns=["face_id", "tile_id", "embedding"])
    result = cluster_faces(empty, config)
    assert result.assignments.empty and result.clusters.empty
    one = Album()
    one.add("x", direction(np.random.default_rng(0))[None])
    single = cluster_faces(one.frame(), config)
    assert single.assignments["cluster_id"].tolist() == [0]
    assert single.summary["singletons"] == 1


def test_a_photo_in_two_albums_is_one_face(config: ClusterConfig) -> None:
    rng = np.random.default_rng(15)
    album = Album()
    album.add("a", near(direction(rng), 4, 0.5, rng))
    faces = album.frame().drop(columns=["person"])
    both = pd.concat([faces.assign(album="winter"), faces.assign(album="summer")])
    result = cluster_faces(both, config)
    assert len(result.assignments) == 4 and result.summary["duplicate_face_rows_dropped"] == 4
    table = face_clusters_table(both, result)
    assert table["face_id"].is_unique and set(table["album"]) == {"summer"}


def test_mixed_embedding_spaces_are_refused() -> None:
    rng = np.random.default_rng(10)
    album = Album()
    album.add("a", near(direction(rng), 3, 0.5, rng))
    other = Album(backend="insightface-buffalo_l")
    other.add("b", near(direction(rng), 3, 0.5, rng))
    renamed = other.frame().assign(face_id=lambda f: "other-" + f["face_id"])
    mixed = pd.concat([album.frame(), renamed], ignore_index=True)
    with pytest.raises(ValueError, match="several embedding spaces"):
        cluster_faces(mixed)


# --- constraints ------------------------------------------------------------------------------


def test_split_conflicting_group_seeds_from_the_fullest_tile() -> None:
    rng = np.random.default_rng(11)
    a, b = direction(rng), direction(rng)
    vectors = np.vstack([near(a, 4, 0.3, rng), near(b, 4, 0.3, rng)])
    tiles = np.array([0, 1, 2, 3, 0, 1, 5, 6])
    parts = split_conflicting_group(vectors, tiles)
    assert sorted(sorted(p.tolist()) for p in parts) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_attach_gives_a_contested_cluster_to_the_closer_face_of_a_tile() -> None:
    centroids = np.eye(3)[:2]
    faces = unit(np.array([[0.9, 0.1, 0.1], [0.8, 0.0, 0.6], [0.0, 0.9, 0.1]]))
    tiles = np.array([7, 7, 8])
    chosen = attach_with_cannot_link(
        faces, centroids, tiles, [set(), set()], np.full(3, 0.5), margin=0.1
    )
    assert chosen.tolist() == [0, -1, 1]
    blocked = attach_with_cannot_link(
        faces, centroids, tiles, [{7}, set()], np.full(3, 0.5), margin=0.1
    )
    assert blocked.tolist() == [-1, -1, 1], "cluster 0 already holds a face of tile 7"


# --- config -----------------------------------------------------------------------------------


def test_thresholds_are_per_backend_and_overridable(tmp_path: Path) -> None:
    offline = load_cluster_config(OFFLINE)
    buffalo = load_cluster_config("insightface-buffalo_l")
    antelope = load_cluster_config("insightface-antelopev2")
    assert offline.backend == OFFLINE and buffalo.backend == "insightface"
    assert antelope == buffalo, "other packs of a family share its section"
    assert offline.merge_min_mean_cosine != buffalo.merge_min_mean_cosine

    override = tmp_path / "thresholds.yaml"
    override.write_text(
        "defaults:\n  representatives: 6\nbackends:\n  offline-yunet-sface:\n"
        "    attach_min_cosine: 0.5\n  my-model:\n    merge_min_mean_cosine: 0.3\n"
    )
    custom = load_cluster_config(OFFLINE, override)
    assert custom.attach_min_cosine == 0.5 and custom.representatives == 6
    assert custom.merge_min_mean_cosine == offline.merge_min_mean_cosine
    assert load_cluster_config("my-model", override).merge_min_mean_cosine == 0.3
    assert load_cluster_config(OFFLINE, attach_margin=0.2).attach_margin == 0.2

    with pytest.raises(ClusterConfigError, match="no clustering thresholds"):
        load_cluster_config("unknown-backend")
    override.write_text("backends:\n  offline-yunet-sface:\n    atach_min_cosine: 0.5\n")
    with pytest.raises(ClusterConfigError, match="unknown threshold 'atach_min_cosine'"):
        load_cluster_config(OFFLINE, override)
    with pytest.raises(ClusterConfigError, match="must lie in"):
        load_cluster_config(OFFLINE, attach_min_cosine=1.5)


def test_cluster_faces_reads_the_backend_section_from_the_table() -> None:
    rng = np.random.default_rng(12)
    album = Album(backend="insightface-buffalo_l")
    album.add("a", near(direction(rng), 4, 0.5, rng))
    result = cluster_faces(album.frame())
    assert result.config.backend == "insightface"
    assert result.config == load_cluster_config("insightface-buffalo_l")


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_on_a_hand_computed_example() -> None:
    predicted = [0, 0, 1, 1, 1]
    truth = ["a", "a", "a", "b", "b"]
    # BCubed precision per item: 1, 1, 1/3, 2/3, 2/3; recall: 2/3, 2/3, 1/3, 1, 1.
    scores = score_clustering(predicted, truth)
    assert scores.bcubed.precision == pytest.approx(11 / 15)
    assert scores.bcubed.recall == pytest.approx(11 / 15)
    assert scores.bcubed.f1 == pytest.approx(11 / 15)
    # Pairs predicted: 1 + 3 = 4; true: 3 + 1 = 4; both: 1 (a,a) + 1 (b,b) = 2.
    assert scores.pairwise.precision == pytest.approx(0.5)
    assert scores.pairwise.recall == pytest.approx(0.5)
    assert (scores.true_labels, scores.predicted_clusters) == (2, 2)


def test_metrics_extremes() -> None:
    truth = ["a", "a", "b"]
    perfect = score_clustering([5, 5, 9], truth)
    assert perfect.bcubed.f1 == 1.0 and perfect.pairwise.f1 == 1.0
    alone = score_clustering([0, 1, 2], truth)
    assert alone.bcubed.precision == 1.0
    assert alone.bcubed.recall == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert alone.pairwise.recall == 0.0
    lumped = score_clustering([0, 0, 0], truth)
    assert lumped.bcubed.recall == 1.0
    assert lumped.bcubed.precision == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)
    assert singletons_for_noise([-1, 0, -1, 1]).tolist() == [2, 0, 3, 1]
    with pytest.raises(ValueError):
        score_clustering([0, 1], ["a"])


# --- table and command line -------------------------------------------------------------------


def test_face_clusters_table_round_trips_through_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    album = Album()
    album.add("a", near(direction(rng), 5, 0.5, rng))
    album.add("b", near(direction(rng), 1, 0.5, rng))
    faces = album.frame().drop(columns=["person"])
    table = face_clusters_table(faces, cluster_faces(faces))
    assert list(table.columns) == list(FACE_CLUSTERS_DTYPES)
    path = atomic_write_table(tmp_path / "t.parquet", arrow_table(table))
    back = pd.read_parquet(path)
    assert back["face_id"].tolist() == table["face_id"].tolist()
    assert np.allclose(np.stack(back["embedding"]), np.stack(table["embedding"]))
    assert back["cluster_size"].tolist() == [5] * 5 + [1]


def test_cluster_command_writes_face_to_cluster(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    album = Album()
    for person in range(3):
        album.add(f"p{person}", near(direction(rng), 5, 0.6, rng))
    album.add("alone", direction(rng)[None])
    faces = album.frame()
    faces_path = atomic_write_table(tmp_path / "faces.parquet", arrow_table(faces))
    parser = argparse.ArgumentParser()
    add_cluster_command(parser.add_subparsers())
    out = tmp_path / "clusters.parquet"
    args = parser.parse_args(
        ["cluster", str(faces_path), "--out", str(out), "--set", "representatives=2"]
    )
    assert args.handler(args) == 0
    clusters = pd.read_parquet(out)
    merged = faces[["face_id", "person"]].merge(clusters, on="face_id")
    assert len(merged) == len(faces)
    assert f1(merged) == 1.0
    assert (clusters["cluster_id"] >= 0).all()
    assert clusters["is_representative"].sum() == 3 * 2 + 1

    bad = parser.parse_args(["cluster", str(faces_path), "--out", str(out), "--set", "nope=1"])
    assert bad.handler(bad) == 2
