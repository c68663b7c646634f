"""The reliability corpus, kept as tests: what a person's albums and disks really do.

* every kind of broken or odd file through the whole per-album chain;
* a malformed labels file;
* an album renamed, then deleted (the album sensor's side of it too);
* a photo deleted from an album;
* a disk that fills up in the middle of a write.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from identity_pipeline.partitions import ALBUMS_PARTITION_NAME
from identity_pipeline.resources import StorageResource
from identity_pipeline.storage import DATA_DIR_ENV, DataLayout, atomic_write_bytes
from identity_pipeline_tests.bad_inputs import build_bad_input_album
from identity_pipeline_tests.conftest import REPO_ROOT, materialize_graph

ALBUM = "demo"
DEMO_ALBUM_DIR = REPO_ROOT / "data" / "albums" / ALBUM
ALBUM_CHAIN = ["raw_photos", "photo_tiles", "face_embeddings"]
UP_TO_TRAINING_SET = [
    "raw_photos",
    "photo_tiles",
    "face_embeddings",
    "face_clusters",
    "labeled_identities",
    "identity_masks",
    "training_set",
]
REAL_FACE = "2012-12 obama portrait.jpg"  # a demo photo with one clear face
GROUP_PHOTO = "group obama biden.jpg"


def _materialize_stages(layout: DataLayout, instance: dg.DagsterInstance, albums: list[str]):
    """Everything up to the training set, stage by stage (as `make demo` does)."""
    from identity_pipeline.definitions import build_definitions
    from identity_pipeline.demo import seed_demo_labels
    from identity_pipeline.runner import materialize_all

    def before_stage(stage) -> None:
        if dg.AssetKey("labeled_identities") in stage.asset_keys:
            seed_demo_labels(layout)

    runs = materialize_all(
        build_definitions(str(layout.root)),
        instance,
        albums,
        selection=[dg.AssetKey(key) for key in UP_TO_TRAINING_SET],
        raise_on_error=False,
        before_stage=before_stage,
        split_before=[dg.AssetKey("labeled_identities")],
        console_log_level="WARNING",
    )
    assert all(run.success for run in runs), [(r.stage, r.album) for r in runs if not r.success]


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    texts = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None:
                texts.append(data.user_failure_data.description or "")
            if data.error is not None:
                texts.append(data.error.to_string())
    return "\n".join(texts)


def _table(layout: DataLayout, asset: str, partition: str | None = None) -> pd.DataFrame:
    return pd.read_parquet(layout.table_path(asset, partition))


def _referenced_files_exist(layout: DataLayout, asset: str, columns, partition=None) -> None:
    table = _table(layout, asset, partition)
    for column in columns:
        missing = [p for p in table[column] if not (layout.root / p).is_file()]
        assert not missing, f"{asset}.{column}: {missing[:5]}"


def _age(folder: Path, seconds: float) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


@pytest.fixture(scope="module")
def demo_state(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    """The demo album materialized up to the training set, once for the module."""
    base = tmp_path_factory.mktemp("reliability")
    (base / "home").mkdir()
    layout = DataLayout(base / "data")
    shutil.copytree(DEMO_ALBUM_DIR, layout.album_dir(ALBUM))
    shutil.copy(REPO_ROOT / "data" / "demo_people.csv", layout.root / "demo_people.csv")
    shutil.copy(REPO_ROOT / "data" / "pipeline.yaml", layout.root / "pipeline.yaml")
    with (
        pytest.MonkeyPatch.context() as patch,
        dg.instance_for_test(temp_dir=str(base / "home")) as instance,
    ):
        patch.setenv(DATA_DIR_ENV, str(layout.root))
        _materialize_stages(layout, instance, [ALBUM])
    return layout


@pytest.fixture
def demo(demo_state: DataLayout, layout: DataLayout, instance: dg.DagsterInstance) -> DataLayout:
    """A copy of the module's demo state in this test's storage root, partition registered."""
    shutil.rmtree(layout.root)
    shutil.copytree(demo_state.root, layout.root, symlinks=True)
    instance.add_dynamic_partitions(ALBUMS_PARTITION_NAME, [ALBUM])
    return layout


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_input_corpus_survives_the_whole_album_chain(
    layout: DataLayout, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """raw_photos -> photo_tiles -> face_embeddings over every kind of broken and odd file: the
    run succeeds, each bad file is skipped with its reason, every good photo gets its tiles, and
    the real face among them is found."""
    album_dir = layout.album_dir("corpus")
    expected = build_bad_input_album(album_dir, tmp_path / "outside")
    shutil.copy(DEMO_ALBUM_DIR / REAL_FACE, album_dir / "real face.jpg")
    instance.add_dynamic_partitions(ALBUMS_PARTITION_NAME, ["corpus"])

    result = materialize_graph(layout, instance, ALBUM_CHAIN, "corpus")
    assert result.success, _failure_text(result)

    photos = _table(layout, "raw_photos", "corpus").set_index("path")
    for path, expectation in expected.items():
        assert photos.loc[path, "status"].startswith(expectation.status_prefix), path
    ok = photos[photos["status"] == "ok"]
    assert len(ok) == sum(e.status_prefix == "ok" for e in expected.values()) + 1

    tiles = _table(layout, "photo_tiles", "corpus")
    assert set(tiles["photo_id"]) == set(ok["photo_id"]), "a good photo lost its tiles"
    _referenced_files_exist(layout, "photo_tiles", ["tile_path"], "corpus")

    faces = _table(layout, "face_embeddings", "corpus")
    assert ok.loc["real face.jpg", "photo_id"] in set(faces["photo_id"])
    assert set(faces["tile_id"]) <= set(tiles["tile_id"])
    checks = list(result.get_asset_check_evaluations())
    assert checks and all(check.passed for check in checks), [c.check_name for c in checks]


# --- labels ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_malformed_labels_file_fails_with_its_line_and_overwrites_nothing(
    demo: DataLayout, instance: dg.DagsterInstance
) -> None:
    faces = _table(demo, "labeled_identities")["face_id"].tolist()
    text = f"face_id,name\n{faces[0]},Alice\n{faces[1]},Bob,extra\n{faces[2]},Carol\n"
    demo.labels_path.write_text(text)
    table_path = demo.table_path("labeled_identities")
    before = table_path.read_bytes()
    backups = sorted(p.name for p in demo.root.glob("labels.csv*"))

    result = materialize_graph(demo, instance, ["labeled_identities"])
    assert not result.success
    message = _failure_text(result)
    assert "line 3" in message and "expected 2 fields" in message, message
    assert "The file was not changed" in message
    assert demo.labels_path.read_text() == text
    assert sorted(p.name for p in demo.root.glob("labels.csv*")) == backups
    assert table_path.read_bytes() == before  # the last good identities stay the asset's value


# --- albums renamed and deleted -----------------------------------------------------------------


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    from identity_pipeline.sensors import album_sensor

    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"storage": StorageResource()}
    )
    return album_sensor(context)


def _apply(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the daemon does with a sensor result's partition requests."""
    for request in result.dynamic_partitions_requests or []:
        keys = list(request.partition_keys)
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, keys)
        else:
            for key in keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


@pytest.mark.slow
def test_renamed_then_deleted_album(demo: DataLayout, instance: dg.DagsterInstance) -> None:
    """Renamed: the old partition goes, the new one comes, and the names stay (ids are content
    hashes). Deleted: the partition goes, the outputs stay on disk. Nothing crashes."""
    first = _tick(instance, None)
    assert first.run_requests[0].partition_key == ALBUM
    identities = _table(demo, "labeled_identities").set_index("face_id")["identity"]

    renamed = "demo 2024"
    demo.album_dir(ALBUM).rename(demo.album_dir(renamed))
    # A run of the old partition before the sensor noticed: a clear failure, outputs untouched.
    old_table = demo.table_path("raw_photos", ALBUM).read_bytes()
    result = materialize_graph(demo, instance, ["raw_photos"], ALBUM)
    assert not result.success
    assert "does not exist (renamed or deleted?)" in _failure_text(result)
    assert demo.table_path("raw_photos", ALBUM).read_bytes() == old_table

    tick = _tick(instance, first.cursor)
    requests = {type(r).__name__: list(r.partition_keys) for r in tick.dynamic_partitions_requests}
    assert requests == {
        "AddDynamicPartitionsRequest": [renamed],
        "DeleteDynamicPartitionsRequest": [ALBUM],
    }
    runs = {(tuple(r.asset_selection), r.partition_key) for r in tick.run_requests}
    assert runs == {
        ((dg.AssetKey("raw_photos"),), renamed),
        ((dg.AssetKey("face_clusters"),), None),
    }
    _apply(instance, tick)
    assert instance.get_dynamic_partitions(ALBUMS_PARTITION_NAME) == [renamed]

    assert materialize_graph(demo, instance, ALBUM_CHAIN, renamed).success
    assert materialize_graph(demo, instance, ["face_clusters", "labeled_identities"]).success
    clusters = _table(demo, "face_clusters")
    assert set(clusters["album"]) == {renamed} and not clusters["face_id"].duplicated().any()
    named = _table(demo, "labeled_identities").set_index("face_id")["identity"]
    pd.testing.assert_series_equal(named.sort_index(), identities.sort_index())

    # Deleted: the partition goes; no clustering of nothing is requested; files stay.
    shutil.rmtree(demo.album_dir(renamed))
    gone = _tick(instance, tick.cursor)
    assert [type(r).__name__ for r in gone.dynamic_partitions_requests] == [
        "DeleteDynamicPartitionsRequest"
    ]
    assert gone.run_requests == []
    _apply(instance, gone)
    assert instance.get_dynamic_partitions(ALBUMS_PARTITION_NAME) == []
    assert demo.table_path("raw_photos", renamed).is_file()

    # The albums folder itself missing (an unmounted drive) deletes nothing.
    instance.add_dynamic_partitions(ALBUMS_PARTITION_NAME, [renamed])
    shutil.rmtree(demo.albums_dir)
    unmounted = _tick(instance, gone.cursor)
    assert unmounted.dynamic_partitions_requests == [] and unmounted.run_requests == []


# --- a photo deleted -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_deleted_photo_disappears_downstream(
    demo: DataLayout, instance: dg.DagsterInstance
) -> None:
    photos = _table(demo, "raw_photos", ALBUM).set_index("path")
    photo_id = photos.loc[GROUP_PHOTO, "photo_id"]
    tiles_before = _table(demo, "photo_tiles", ALBUM)
    masks_before = _table(demo, "identity_masks", ALBUM)
    gone_tiles = tiles_before[tiles_before["photo_id"] == photo_id]
    gone_samples = masks_before[masks_before["photo_id"] == photo_id]
    assert len(gone_tiles) and len(gone_samples), "the photo must matter downstream"

    (demo.album_dir(ALBUM) / GROUP_PHOTO).unlink()
    _materialize_stages(demo, instance, [ALBUM])

    for asset, partition in [
        ("raw_photos", ALBUM),
        ("photo_tiles", ALBUM),
        ("face_embeddings", ALBUM),
        ("face_clusters", None),
        ("labeled_identities", None),
        ("identity_masks", ALBUM),
        ("training_set", None),
    ]:
        table = _table(demo, asset, partition)
        assert photo_id not in set(table["photo_id"]), asset
        assert len(table), asset
    assert len(_table(demo, "raw_photos", ALBUM)) == len(photos) - 1
    _referenced_files_exist(demo, "photo_tiles", ["tile_path"], ALBUM)
    _referenced_files_exist(demo, "identity_masks", ["image_path", "mask_path"], ALBUM)
    _referenced_files_exist(demo, "training_set", ["image_path", "mask_path"])

    # Its files stay one run (a reader of the previous table may hold them), then go once old.
    stale = [demo.root / p for p in gone_tiles["tile_path"]]
    stale += [demo.root / p for c in ("image_path", "mask_path") for p in gone_samples[c]]
    assert all(path.is_file() for path in stale)
    _age(demo.assets_dir, 2 * 3600)
    _materialize_stages(demo, instance, [ALBUM])
    assert not [path for path in stale if path.exists()]
    _referenced_files_exist(demo, "photo_tiles", ["tile_path"], ALBUM)
    _referenced_files_exist(demo, "identity_masks", ["image_path", "mask_path"], ALBUM)
    _referenced_files_exist(demo, "training_set", ["image_path", "mask_path"])


@pytest.mark.slow
def test_a_lost_mask_file_is_rebuilt_not_referenced(
    demo: DataLayout, instance: dg.DagsterInstance
) -> None:
    """The masks cache reuses a tile's samples only when both their files are there."""
    masks = _table(demo, "identity_masks", ALBUM)
    lost = demo.root / masks["mask_path"].iloc[0]
    lost.unlink()
    assert materialize_graph(demo, instance, ["identity_masks"], ALBUM).success
    _referenced_files_exist(demo, "identity_masks", ["image_path", "mask_path"], ALBUM)
    assert lost.is_file()


# --- a full disk ---------------------------------------------------------------------------------


def _disk_full(after_bytes: int):
    """A stand-in for ``open`` whose files take ``after_bytes`` bytes, then raise ENOSPC."""
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" not in mode:
            return handle

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()
                return False

            def write(self, data):
                handle.write(data[:after_bytes])
                handle.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return Full()

    return fake_open


def test_disk_full_in_the_middle_of_a_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import identity_pipeline.storage as storage

    destination = tmp_path / "labels.csv"
    destination.write_bytes(b"face_id,name\nold,Alice\n")
    monkeypatch.setattr(storage, "open", _disk_full(after_bytes=5), raising=False)
    with pytest.raises(OSError, match="No space left on device while writing") as raised:
        atomic_write_bytes(destination, b"face_id,name\nnew,Bob\n" * 100)
    assert raised.value.errno == errno.ENOSPC
    assert str(destination) in str(raised.value)
    assert destination.read_bytes() == b"face_id,name\nold,Alice\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]  # no temporary left


@pytest.mark.slow
def test_disk_full_while_a_table_is_written_fails_the_run_cleanly(
    demo: DataLayout, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    import identity_pipeline.storage as storage

    table_path = demo.table_path("photo_tiles", ALBUM)
    before = table_path.read_bytes()
    real_write_table = pq.write_table

    def write_table_until_full(table, where, *args, **kwargs):
        real_write_table(table, where, *args, **kwargs)
        os.truncate(where, Path(where).stat().st_size // 3)  # a third of it made it to disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.pq, "write_table", write_table_until_full)
    result = materialize_graph(demo, instance, ["photo_tiles"], ALBUM)
    assert not result.success
    message = _failure_text(result)
    assert "No space left on device while writing" in message and str(table_path) in message
    assert table_path.read_bytes() == before
    assert not [p.name for p in table_path.parent.iterdir() if p.name.endswith(".tmp")]

    monkeypatch.setattr(storage.pq, "write_table", real_write_table)  # space freed
    assert materialize_graph(demo, instance, ["photo_tiles"], ALBUM).success
    pd.testing.assert_frame_equal(
        _table(demo, "photo_tiles", ALBUM), pd.read_parquet(io.BytesIO(before))
    )


def test_settings_and_executor_files_are_yaml() -> None:
    """Cheap guard: the files people edit by hand parse."""
    for path in [
        REPO_ROOT / "data" / "pipeline.yaml",
        *sorted((REPO_ROOT / "deploy").rglob("*.yaml")),
    ]:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
