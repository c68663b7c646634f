"""The album sensor: new folders become partitions + runs, unchanged albums stay quiet."""

from __future__ import annotations

import json
import os

import dagster as dg

from identity_pipeline.resources import StorageResource
from identity_pipeline.sensors import album_sensor
from identity_pipeline.storage import DataLayout


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"storage": StorageResource()}
    )
    return album_sensor(context)


def _apply(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the daemon does with a sensor result's partition requests."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_new_album_then_quiet_then_changed_file(
    layout: DataLayout, instance: dg.DagsterInstance
) -> None:
    album = layout.album_dir("summer")
    album.mkdir()
    (album / "a.jpg").write_bytes(b"not really a jpeg, the sensor only stats")

    first = _tick(instance, None)
    assert [r.partition_keys for r in first.dynamic_partitions_requests] == [["summer"]]
    assert [r.partition_key for r in first.run_requests] == ["summer"]
    fingerprint = json.loads(first.cursor)["summer"]
    assert first.run_requests[0].run_key == f"summer:{fingerprint}"
    assert first.run_requests[0].asset_selection == [dg.AssetKey("raw_photos")]
    _apply(instance, first)

    quiet = _tick(instance, first.cursor)
    assert quiet.run_requests == [] and quiet.dynamic_partitions_requests == []

    (album / "b.jpg").write_bytes(b"another photo")
    changed = _tick(instance, quiet.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["summer"]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key
    assert changed.dynamic_partitions_requests == []

    stat = (album / "a.jpg").stat()
    os.utime(album / "a.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    edited = _tick(instance, changed.cursor)
    assert [r.partition_key for r in edited.run_requests] == ["summer"]


def test_bad_folder_names_are_skipped_not_fatal(
    layout: DataLayout, instance: dg.DagsterInstance
) -> None:
    for name in ["ok album", "bad,name", "new\nline", ".hidden"]:
        (layout.albums_dir / name).mkdir()
    result = _tick(instance, None)
    assert [r.partition_key for r in result.run_requests] == ["ok album"]
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["ok album"]]


def test_garbage_cursor_and_missing_albums_dir(
    layout: DataLayout, instance: dg.DagsterInstance
) -> None:
    layout.albums_dir.rmdir()
    result = _tick(instance, "{not json")
    assert result.run_requests == []
    assert json.loads(result.cursor) == {}


def test_removed_album_is_forgotten_without_requests(
    layout: DataLayout, instance: dg.DagsterInstance
) -> None:
    album = layout.album_dir("gone")
    album.mkdir()
    first = _tick(instance, None)
    _apply(instance, first)
    album.rmdir()
    after = _tick(instance, first.cursor)
    assert after.run_requests == [] and json.loads(after.cursor) == {}


def test_labels_sensor_requests_a_run_only_when_the_file_changes(
    layout: DataLayout, instance: dg.DagsterInstance
) -> None:
    from identity_pipeline.definitions import build_definitions
    from identity_pipeline.sensors import labels_sensor

    def tick(cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"storage": StorageResource()}
        )
        return labels_sensor(context)

    first = tick(None)
    assert not first.run_requests and first.cursor == "absent"
    layout.labels_path.write_text("face_id,name\n")
    changed = tick(first.cursor)
    assert len(changed.run_requests) == 1
    # The clusters read the names too (incremental assignment), then the names are applied.
    assert set(
        labels_sensor.asset_selection.resolve(build_definitions().resolve_asset_graph())
    ) == {
        dg.AssetKey("face_clusters"),
        dg.AssetKey("labeled_identities"),
    }
    assert not tick(changed.cursor).run_requests
