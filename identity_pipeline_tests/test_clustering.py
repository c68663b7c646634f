"""Face clustering on synthetic embeddings on the unit sphere, where the truth is known.

Shapes are SFace-like (the offline backend's shipped calibration is used): one person's faces
have pairwise cosine ~0.65, strangers ~0 +- 0.1 in 128 dimensions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from identity_pipeline.clustering import (
    ALONE,
    ASSIGNED,
    ATTACHED,
    FACE_CLUSTERS_DTYPES,
    MERGED,
    NAMED,
    Calibration,
    CalibrationError,
    ClusterConfig,
    ClusterConfigError,
    album_calibration,
    bcubed,
    cluster_faces,
    face_clusters_table,
    fit_calibration,
    pairwise,
    published_calibration,
    score_clustering,
)
from identity_pipeline.clustering.cli import add_cluster_command
from identity_pipeline.clustering.cluster import arrow_table
from identity_pipeline.clustering.constraints import attach_with_cannot_link, unit_rows
from identity_pipeline.clustering.metrics import singletons_for_noise
from identity_pipeline.settings import SettingsError, build_config
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


def clusters_by_face(
    faces: pd.DataFrame, config: ClusterConfig | None = None, names: dict | None = None
) -> pd.DataFrame:
    result = cluster_faces(faces.drop(columns=["person"]), config, names=names)
    # "person" is the truth here; the named person a face matched best is "match".
    matches = result.assignments.rename(columns={"person": "match"})
    merged = faces[["face_id", "person", "tile_id"]].merge(matches, on="face_id")
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
    return ClusterConfig()


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

    # The same vectors, each face alone in its photo: nothing says they are two people, and
    # average linkage merges them. Cannot-link is what kept them apart above.
    alone = faces.assign(tile_id=[f"solo-{i}" for i in range(len(faces))])
    merged = clusters_by_face(alone, config)
    assert merged.groupby("cluster_id")["person"].nunique().max() == 2


def test_person_split_by_pose_is_one_cluster_by_average_linkage(config: ClusterConfig) -> None:
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
    assigned = faces[["face_id", "person"]].merge(
        result.assignments.drop(columns="person"), on="face_id"
    )
    pose_clusters = assigned[assigned["person"] == "pose"]["cluster_id"].unique()
    assert len(pose_clusters) == 1
    assert result.clusters.set_index("cluster_id").loc[pose_clusters[0], "n_merged"] == 16
    assert (assigned["round"] == MERGED).all() and f1(assigned) == 1.0

    # With a stricter merge bar than the two poses' mean cosine the person stays split: the
    # test above can fail.
    strict = Calibration(OFFLINE, "test", 0.75, 0.8, 0.1, 0.3)
    split = cluster_faces(faces.drop(columns=["person"]), config, strict).assignments
    split = faces[["face_id", "person"]].merge(split.drop(columns="person"), on="face_id")
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
    assert row["n_outliers"] == 0 and not result.assignments["is_outlier"].any()


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
    result = cluster_faces(empty, config, backend=OFFLINE)
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


# --- incremental assignment -------------------------------------------------------------------


def test_new_faces_join_named_people_only_when_confident(config: ClusterConfig) -> None:
    rng = np.random.default_rng(16)
    anna, ben = direction(rng), direction(rng)
    album = Album()
    named_anna = album.add("anna", near(anna, 4, 0.5, rng))
    named_ben = album.add("ben", near(ben, 4, 0.5, rng))
    new_anna = album.add("anna", near(anna, 3, 0.5, rng))
    between = album.add("?", unit(anna + ben))  # as close to both: no guess
    strangers = album.add("carl", near(direction(rng), 3, 0.5, rng))
    names = dict.fromkeys(named_anna, "Anna") | dict.fromkeys(named_ben, "Ben")
    assigned = clusters_by_face(album.frame(), config, names).set_index("face_id")

    assert (assigned.loc[named_anna + named_ben, "round"] == NAMED).all()
    assert assigned.loc[named_anna + named_ben, "match"].isna().all()
    joined = assigned.loc[new_anna]
    assert (joined["round"] == ASSIGNED).all() and (joined["match"] == "Anna").all()
    assert (joined["cluster_id"] == assigned.loc[named_anna[0], "cluster_id"]).all()
    assert (joined["person_similarity"] > 0.6).all() and (joined["person_margin"] > 0.5).all()
    # The table says why the others were not assigned: similarity or margin.
    middle = assigned.loc[between[0]]
    assert middle["round"] == ALONE and abs(middle["person_margin"]) < 0.05
    carl = assigned.loc[strangers]
    assert (carl["round"] == MERGED).all() and carl["cluster_id"].nunique() == 1
    assert (carl["person_similarity"] < 0.3).all()


def test_names_never_move_by_themselves(config: ClusterConfig) -> None:
    rng = np.random.default_rng(17)
    anna, ben = direction(rng), direction(rng)
    album = Album()
    anna_faces = album.add("anna", near(anna, 5, 0.5, rng))
    ben_faces = album.add("ben", near(ben, 5, 0.5, rng))
    # A person called one of Ben's faces "Anna" and one of Anna's faces "ignore": kept as said.
    names = dict.fromkeys(anna_faces[:3], "Anna") | dict.fromkeys(ben_faces[:3], "Ben")
    names[ben_faces[3]] = "Anna"
    names[anna_faces[3]] = "ignore"
    assigned = clusters_by_face(album.frame(), config, names).set_index("face_id")
    anna_cluster = assigned.loc[anna_faces[0], "cluster_id"]
    assert assigned.loc[ben_faces[3], "cluster_id"] == anna_cluster
    assert assigned.loc[ben_faces[3], "round"] == NAMED
    assert assigned.loc[anna_faces[3], "round"] != ASSIGNED  # "no one" is never given a name
    assert assigned.loc[anna_faces[4], "round"] == ASSIGNED
    assert assigned.loc[ben_faces[4], "cluster_id"] == assigned.loc[ben_faces[0], "cluster_id"]


def test_two_faces_of_one_tile_never_join_one_named_person(config: ClusterConfig) -> None:
    rng = np.random.default_rng(18)
    anna = direction(rng)
    album = Album()
    named = album.add("anna", near(anna, 3, 0.4, rng))
    mirror = album.add("anna", near(anna, 2, 0.4, rng), ["mirror", "mirror"])
    same_tile = album.add("anna", near(anna, 1, 0.4, rng), [f"t-{named[0]}"])
    assigned = clusters_by_face(album.frame(), config, dict.fromkeys(named, "Anna"))
    by_face = assigned.set_index("face_id")
    assert (by_face.loc[mirror, "round"] == ASSIGNED).sum() == 1  # the closer one
    assert by_face.loc[same_tile[0], "round"] != ASSIGNED  # Anna is already in that photo


# --- calibration and settings -----------------------------------------------------------------


def test_shipped_calibration_is_per_backend() -> None:
    offline = published_calibration(OFFLINE)
    buffalo = published_calibration("insightface-buffalo_l")
    assert offline.backend == OFFLINE and buffalo.backend == "insightface"
    assert published_calibration("insightface-antelopev2") == buffalo
    assert offline.merge_cosine == pytest.approx(0.363)  # OpenCV Zoo's published threshold
    assert "published" in offline.source
    with pytest.raises(CalibrationError, match="no calibration"):
        published_calibration("unknown-backend")


def test_fitted_calibration_follows_the_rules() -> None:
    rng = np.random.default_rng(19)
    vectors = np.vstack([near(direction(rng), 4, 0.75, rng) for _ in range(30)])
    people = [f"p{k // 4}" for k in range(len(vectors))]
    fitted = fit_calibration(vectors, people, OFFLINE)
    different = fitted.pair_different
    assert fitted.merge_cosine == pytest.approx(different.mean + 3.0902 * different.std, abs=1e-3)
    assert fitted.assign_cosine > fitted.merge_cosine > fitted.suggest_cosine
    assert fitted.assign_margin == pytest.approx(fitted.centroid_different.std)
    assert fitted.pair_same.mean > 0.5 > 0.1 > abs(different.mean)
    assert fitted.source == "fitted: 120 faces of 30 people"
    with pytest.raises(CalibrationError, match="10\\+ people"):
        fit_calibration(vectors[:20], people[:20], OFFLINE)

    # An album's own names calibrate once 10 people are named; before, the shipped values hold.
    names = [p if int(p[1:]) < 9 else None for p in people]
    assert album_calibration(vectors, names, OFFLINE) == published_calibration(OFFLINE)
    names = [p if int(p[1:]) < 10 else None for p in people]
    assert album_calibration(vectors, names, OFFLINE).source == "fitted: 40 faces of 10 people"


def test_cluster_settings_are_checked() -> None:
    def section(values: dict) -> ClusterConfig:
        return build_config(ClusterConfig, values, ("clustering",))

    assert section({"min_quality": 0.5}).min_quality == 0.5
    with pytest.raises(SettingsError, match=r"unknown key\(s\) 'min_qualty' in clustering"):
        section({"min_qualty": 0.5})
    with pytest.raises(SettingsError, match="whole number"):
        section({"representatives": 2.5})
    with pytest.raises(ClusterConfigError, match="must lie in"):
        ClusterConfig(min_quality=1.5)


def test_cluster_faces_uses_the_calibration_of_the_tables_backend() -> None:
    rng = np.random.default_rng(12)
    album = Album(backend="insightface-buffalo_l")
    album.add("a", near(direction(rng), 4, 0.5, rng))
    result = cluster_faces(album.frame())
    assert result.calibration == published_calibration("insightface-buffalo_l")
    assert result.summary["merge_cosine"] == 0.5


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
    merged = faces[["face_id", "person"]].merge(clusters.drop(columns="person"), on="face_id")
    assert len(merged) == len(faces)
    assert f1(merged) == 1.0
    assert (clusters["cluster_id"] >= 0).all()
    assert clusters["is_representative"].sum() == 3 * 2 + 1

    bad = parser.parse_args(["cluster", str(faces_path), "--out", str(out), "--set", "nope=1"])
    assert bad.handler(bad) == 2

    # With names: the named faces stay, a new face of a named person joins them.
    labels = tmp_path / "labels.csv"
    named = faces[faces["person"] == "p0"]["face_id"].tolist()
    labels.write_text("face_id,name\n" + "".join(f"{f},Ann\n" for f in named[:3]))
    args = parser.parse_args(
        ["cluster", str(faces_path), "--out", str(out), "--labels", str(labels)]
    )
    assert args.handler(args) == 0
    clusters = pd.read_parquet(out).set_index("face_id")
    assert (clusters.loc[named[:3], "round"] == NAMED).all()
    assert (clusters.loc[named[3:], "round"] == ASSIGNED).all()
    assert (clusters.loc[named[3:], "person"] == "Ann").all()


def test_album_calibration_cost_is_bounded_however_many_faces_have_names() -> None:
    """10,000 named faces: fitted on a sample (20 faces of each of 50 people), never on the
    100 million pairs of all of them."""
    rng = np.random.default_rng(5)
    directions = unit_rows(rng.normal(size=(50, 32)))
    vectors = unit_rows(np.repeat(directions, 200, axis=0) + 0.2 * rng.normal(size=(10_000, 32)))
    names = [f"p{i // 200}" for i in range(10_000)]
    calibration = album_calibration(vectors, names, OFFLINE)
    assert calibration.source == "fitted: 1000 faces of 50 people"
